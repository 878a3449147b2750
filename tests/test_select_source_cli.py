"""fastgan select-source: end-to-end ranking of generator snapshots by recall of a target dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastgan import cli
from fastgan.metrics.evaluate import generated_stats
from fastgan.metrics.extractors import get_extractor
from fastgan.metrics.reference import compute_reference
from fastgan.metrics.selection import rank_sources, select_source
from fastgan.nn import Generator, save_snapshot
from fastgan.sampling import write_images

SMALL = dict(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16, mapping_layers=1)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sel")
    torch.manual_seed(0)
    a = Generator(**SMALL)
    b = Generator(**SMALL)
    with torch.no_grad():
        b.synthesis.b16.torgb.bias.fill_(1.5)  # B's images are washed out: far from A's
    pa = save_snapshot(root / "a.pt", {"G_ema": a})
    pb = save_snapshot(root / "b.pt", {"G_ema": b})
    write_images(pa, range(1000, 1060), root / "target", log=lambda s: None)  # the target looks like A's samples
    return root, pa, pb


def test_source_matching_the_target_ranks_first(sources, tmp_path):
    root, pa, pb = sources
    out = tmp_path / "rank.json"
    scores = rank_sources([pb, pa], data=root / "target", num=60, k=3, extractor="pixels", bootstrap=200,
                          out=out, log=lambda s: None)
    assert [s.name for s in scores] == ["a.pt", "b.pt"]
    assert scores[0].recall > 0.8 and scores[1].recall < 0.2
    assert scores[0].recall_low <= scores[0].recall <= scores[0].recall_high
    rec = json.loads(out.read_text())
    assert rec["ranking"][0]["name"] == "a.pt" and rec["num_samples"] == 60 and rec["k"] == 3
    # the same numbers as select_source on features computed by hand
    ext = get_extractor("pixels")
    from fastgan.metrics.reference import iter_images
    from fastgan.nn import load_network

    target = torch.cat([ext(x).double() for x in iter_images(root / "target")])
    feats = {n: generated_stats(load_network(p), ext, 60).features() for n, p in (("a.pt", pa), ("b.pt", pb))}
    want = select_source(target, feats, k=3, bootstrap=200)
    assert [s.as_dict() for s in want] == [s.as_dict() for s in scores]


def test_ref_target_directories_and_errors(sources, tmp_path):
    root, pa, pb = sources
    ref = tmp_path / "t.npz"
    compute_reference(root / "target", ref, extractor="pixels", keep_features=True, log=lambda s: None)
    scores = rank_sources([root], ref=ref, num=30, k=3, bootstrap=50, log=lambda s: None)  # a folder of snapshots
    assert {s.name for s in scores} == {"a.pt", "b.pt"} and scores[0].name == "a.pt"
    with pytest.raises(ValueError, match="not both"):
        rank_sources([pa], data=root / "target", ref=ref)
    with pytest.raises(FileNotFoundError, match="no such snapshot"):
        rank_sources([tmp_path / "nope.pt"], ref=ref)
    assert cli.main(["select-source", "--sources", str(pa), str(pb), "--data", str(root / "target"), "--num", "30",
                     "--k", "3", "--extractor", "pixels", "--bootstrap", "20", "--device", "cpu", "--out",
                     str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["ranking"][0]["name"] == "a.pt"
    assert cli.main(["select-source", "--sources", str(pa), "--device", "cpu"]) == 2

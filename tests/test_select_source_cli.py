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


pytestmark = pytest.mark.usefixtures("one_thread")


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


@pytest.fixture(scope="module")
def sources_with_d(sources):
    """Snapshots with G, G_ema and D (A's G is the target's generator); and one at 8 px."""
    from fastgan.nn import Discriminator, load_network

    root, pa, pb = sources
    out = []
    for i, p in enumerate((pa, pb)):
        G = load_network(p)
        torch.manual_seed(10 + i)
        D = Discriminator(img_resolution=16, channel_base=128, channel_max=16, mapping_layers=1)
        out.append(save_snapshot(root / f"{p.stem}_gd.pt", {"G": G, "G_ema": G, "D": D}))
    small = dict(SMALL, img_resolution=8)
    out.append(save_snapshot(root / "small_gd.pt", {"G": Generator(**small), "D": Discriminator(
        img_resolution=8, channel_base=128, channel_max=16)}))
    return out


def test_grad_d_similarity_in_the_ranking_json(sources, sources_with_d, tmp_path, capsys):
    from fastgan.metrics import grad_d_similarity
    from fastgan.metrics.reference import iter_images
    from fastgan.nn import load_network

    root, pa, pb = sources
    ga, gb, _ = sources_with_d
    common = ["select-source", "--data", str(root / "target"), "--num", "30", "--k", "3", "--extractor", "pixels",
              "--bootstrap", "20", "--device", "cpu", "--grad-d-num", "8", "--batch", "8"]
    out = tmp_path / "r.json"
    assert cli.main([*common, "--sources", str(gb), str(ga), "--grad-d-sim", "--out", str(out)]) == 0
    assert "∇D sim (loss_gradient / update_direction)" in capsys.readouterr().out
    rec = json.loads(out.read_text())
    assert rec["by"] == "recall" and [e["name"] for e in rec["ranking"]] == ["a_gd.pt", "b_gd.pt"]
    assert rec["grad_d_similarity"]["num_samples"] == 8 and rec["grad_d_similarity"]["ranked_by"] is None
    target = torch.cat(list(iter_images(root / "target")))
    for e, path in zip(rec["ranking"], (ga, gb)):
        g = e["grad_d_similarity"]
        assert set(g) == {"loss_gradient", "update_direction", "num", "num_valid", "generator"}
        assert g["update_direction"] == -g["loss_gradient"] and (g["num"], g["num_valid"], g["generator"]) == (
            8, 8, "G")
        want = grad_d_similarity(load_network(path, "G"), load_network(path, "D"), target, num=8, batch_size=8)
        assert g["loss_gradient"] == want.loss_gradient
    # without the flag the entries have no such field
    assert cli.main([*common, "--sources", str(ga), "--out", str(out)]) == 0
    assert "grad_d_similarity" not in json.loads(out.read_text())["ranking"][0]
    # ranked by the loss_gradient convention, highest first
    assert cli.main([*common, "--sources", str(ga), str(gb), "--by", "grad_d_similarity", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    vals = [e["grad_d_similarity"]["loss_gradient"] for e in rec["ranking"]]
    assert vals == sorted(vals, reverse=True) and rec["grad_d_similarity"]["ranked_by"] == "loss_gradient"


def test_grad_d_similarity_errors_are_named(sources, sources_with_d, tmp_path, capsys):
    root, pa, pb = sources
    common = ["select-source", "--data", str(root / "target"), "--num", "30", "--k", "3", "--extractor", "pixels",
              "--bootstrap", "20", "--device", "cpu", "--grad-d-num", "8", "--out", str(tmp_path / "r.json")]
    assert cli.main([*common, "--sources", str(pa), "--grad-d-sim"]) == 2       # a snapshot with G_ema only
    err = capsys.readouterr().err
    assert "a.pt holds ['G_ema'] but no discriminator D" in err and err.startswith("fastgan select-source: error:")
    assert cli.main([*common, "--sources", str(sources_with_d[2]), "--by", "grad_d_similarity"]) == 2
    assert "target images are 3x16x16 (C x H x W) but the source generates 3x8x8" in capsys.readouterr().err
    assert cli.main([*common, "--sources", str(sources_with_d[0]), "--grad-d-sim", "--grad-d-num", "6"]) == 2
    assert "num (6) must be a multiple of the discriminator's minibatch-std group size (4)" in capsys.readouterr().err
    ref = tmp_path / "t.npz"
    compute_reference(root / "target", ref, extractor="pixels", keep_features=True, log=lambda s: None)
    with pytest.raises(ValueError, match="--grad-d-sim needs the target images"):
        rank_sources([sources_with_d[0]], ref=ref, grad_d_sim=True, log=lambda s: None)
    with pytest.raises(ValueError, match="--by must be one of"):
        rank_sources([sources_with_d[0]], data=root / "target", by="fid", log=lambda s: None)
    assert not (tmp_path / "r.json").exists()

"""fastgan metrics: metric names, results equal to the functional API on the same features, run-dir jsonl, errors,
and 2 torchrun processes equal 1."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastgan import cli
from fastgan.metrics import functional as F
from fastgan.metrics.evaluate import evaluate, generated_stats, parse_metric
from fastgan.metrics.extractors import get_extractor
from fastgan.metrics.reference import compute_reference
from fastgan.metrics.stats import FeatureStats
from fastgan.nn import Generator, save_snapshot

EXT = dict(dim=16, seed=3, input_size=16)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("metrics")
    src = root / "imgs"
    src.mkdir()
    r = np.random.RandomState(0)
    for i in range(40):
        Image.fromarray(r.randint(0, 255, (16, 16, 3), dtype=np.uint8)).save(src / f"{i:03d}.png")
    ref = root / "ref.npz"
    compute_reference(src, ref, extractor="random-conv", extractor_kwargs=EXT, keep_features=True, log=lambda s: None)
    run = root / "00000-tiny-x-gpus1-batch8"
    run.mkdir()
    (run / "training_options.json").write_text("{}")
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16, mapping_layers=1)
    snap = save_snapshot(run / "network-snapshot-000001.pt", {"G_ema": G})
    return dict(root=root, ref=ref, snap=snap, run=run, G=G.eval())


def test_metric_names():
    assert parse_metric("fid50k_full").num == 50000
    assert parse_metric("fid500_full").num == 500
    s = parse_metric("pr50k3_full")
    assert (s.kind, s.num, s.k) == ("pr", 50000, 3)
    assert parse_metric("prdc10k5_full").k == 5
    s = parse_metric("pr500_k4_full")
    assert (s.num, s.k) == (500, 4)
    assert parse_metric("prdc30_full").k == 5
    for bad in ("fid50k", "is50k", "fid1_full", "kid5k3_full", "fid5_k3_full"):
        with pytest.raises(ValueError):
            parse_metric(bad)


def test_results_equal_functional_api(setup):
    res = evaluate(setup["snap"], ["fid30_full", "kid30_full", "pr30_k3_full", "fid20_full"], setup["ref"],
                   seed=5, batch_size=7, kid_subset_size=10, kid_subsets=20, log=lambda s: None)
    ext = get_extractor("random-conv", **EXT)
    gen = generated_stats(setup["G"], ext, 30, seed=5, batch_size=30).features()
    real = FeatureStats.load(setup["ref"]).features()
    assert gen.shape == (30, 16)
    assert res["fid30_full"]["results"]["fid"] == pytest.approx(F.fid_from_features(gen, real), rel=1e-9)
    assert res["fid20_full"]["results"]["fid"] == pytest.approx(F.fid_from_features(gen[:20], real), rel=1e-9)
    kid = F.kid_from_features(real, gen, num_subsets=20, subset_size=10, seed=5)
    assert res["kid30_full"]["results"]["kid"] == pytest.approx(kid[0], rel=1e-9)
    pr = F.prdc(real, gen, k=3, inclusive=True)
    assert res["pr30_k3_full"]["results"] == {"precision": pr["precision"], "recall": pr["recall"]}
    lines = (setup["run"] / "metric-fid30_full.jsonl").read_text().splitlines()
    rec = json.loads(lines[-1])
    assert rec["snapshot"] == "network-snapshot-000001.pt" and rec["num_gen"] == 30 and rec["seed"] == 5
    assert rec["extractor"] == "random-conv-16-s3" and rec["ref_content_sha256"]


def test_errors_name_the_problem(setup, tmp_path):
    moments_only = tmp_path / "m.npz"
    compute_reference(setup["root"] / "imgs", moments_only, extractor="random-conv", extractor_kwargs=EXT,
                      keep_features=False, log=lambda s: None)
    with pytest.raises(ValueError, match="keep-features yes"):
        evaluate(setup["snap"], ["kid30_full"], moments_only, log=lambda s: None)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(setup["snap"], ["fid"], setup["ref"], log=lambda s: None)
    st = FeatureStats.load(setup["ref"])
    st.metadata.pop("extractor_factory")
    st.save(tmp_path / "old.npz")
    with pytest.raises(ValueError, match="--force"):
        evaluate(setup["snap"], ["fid30_full"], tmp_path / "old.npz", log=lambda s: None)
    assert cli.main(["metrics", "--network", str(setup["snap"]), "--ref", str(setup["ref"]), "--metrics",
                     "fid10_full", "--device", "cpu", "--no-jsonl"]) == 0
    assert cli.main(["metrics", "--network", str(setup["snap"]), "--ref", str(tmp_path / "none.npz"),
                     "--device", "cpu"]) == 2


@pytest.mark.slow
def test_two_processes_equal_one(setup, tmp_path):
    args = ["-m", "fastgan", "metrics", "--network", str(setup["snap"]), "--ref", str(setup["ref"]), "--metrics",
            "fid25_full,kid25_full,pr25_k3_full", "--device", "cpu", "--no-jsonl", "--json", "--batch", "4"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, check=True).stdout
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

    def results(out):
        return {k: v["results"] for k, v in json.loads(out[out.index("{"):]).items()}

    a, b = results(one), results(proc.stdout)
    for name in a:
        for k in a[name]:
            assert b[name][k] == pytest.approx(a[name][k], rel=1e-6, abs=1e-9), (name, k)


def test_conditional_generator_cycles_classes_in_batches():
    """Classes in turn by seed, generated in batches: the same features as one image at a time."""
    torch.manual_seed(1)
    G = Generator(c_dim=3, z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16,
                  mapping_layers=1).eval()
    ext = get_extractor("random-conv", **EXT)
    batched = generated_stats(G, ext, 7, seed=2, batch_size=4).features()
    single = generated_stats(G, ext, 7, seed=2, batch_size=1).features()
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    from fastgan.sampling import generate_images

    with pytest.raises(ValueError, match="2 classes for 3 seeds"):
        list(generate_images(G, [0, 1, 2], class_idx=[0, 1]))
    with pytest.raises(ValueError, match=r"--class must be in \[0, 3\)"):
        list(generate_images(G, [0], class_idx=[5]))

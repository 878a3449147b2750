"""`fastgan magnet pool` and `fastgan generate --sampler magnet`: outputs, resumption after a kill, errors; the
naive sampler unchanged; the jacvol benchmark's CSV rows."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan import cli
from fastgan.nn import Generator, save_snapshot
from fastgan.sampling import MagnetPool, MagnetSampler, generate_images
from fastgan.sampling.generate import generate_from_latents

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOL_ARGS = ["--proj-dim", "8", "--top-k", "8", "--batch", "4", "--quiet"]


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    root = tmp_path_factory.mktemp("magnet_cli")
    torch.manual_seed(0)
    G = Generator(z_dim=12, w_dim=12, img_resolution=8, channel_base=64, channel_max=8, mapping_layers=1)
    torch.manual_seed(1)
    Gc = Generator(z_dim=12, c_dim=3, w_dim=12, img_resolution=8, channel_base=64, channel_max=8, mapping_layers=1)
    return dict(root=root, snap=save_snapshot(root / "g.pt", {"G_ema": G}),
                csnap=save_snapshot(root / "gc.pt", {"G_ema": Gc}), G=G.eval(), Gc=Gc.eval())


def _png(path):
    return np.asarray(Image.open(path))


def test_pool_then_magnet_generate(snaps, tmp_path, capsys):
    pool = tmp_path / "pool.npz"
    assert cli.main(["magnet", "pool", "--network", str(snaps["snap"]), "--num", "12", "--out", str(pool),
                     "--chunk", "5", "--seed", "3"] + POOL_ARGS) == 0
    p = MagnetPool.load(pool)
    assert len(p) == 12 and p.log_sv.shape == (12, 8) and p.meta["seed"] == 3 and p.meta["proj_dim"] == 8
    assert not (tmp_path / "pool.npz.parts").exists()
    out = tmp_path / "out"
    assert cli.main(["generate", "--network", str(snaps["snap"]), "--sampler", "magnet", "--pool", str(pool),
                     "--rho", "1", "--top-k", "8", "--seeds", "5-9", "--outdir", str(out)]) == 0
    info = json.loads((out / "magnet-samples.json").read_text())
    files = sorted(f.name for f in out.glob("*.png"))
    assert files == [f"seed{s:04d}.png" for s in range(5, 10)]
    # the files are the sampler's draws (generator seeded with the first seed), rendered from the pool latents
    idx = MagnetSampler(p, rho=1.0, top_k=8).sample_indices(5, generator=torch.Generator().manual_seed(5))
    assert [r["pool_index"] for r in info["samples"]] == idx.tolist() and len(set(idx.tolist())) == 5
    assert all(r["kind"] == "magnet" for r in info["samples"]) and info["generator_seed"] == 5
    imgs = list(generate_from_latents(snaps["G"], p.latents[idx], noise_seeds=list(range(5, 10))))
    for k, s in enumerate(range(5, 10)):
        assert np.array_equal(_png(out / f"seed{s:04d}.png"), imgs[k])
    # the same command again gives the same files; mix=0.4 -> 2 MaGNET + 3 naive
    out2 = tmp_path / "out2"
    assert cli.main(["generate", "--network", str(snaps["snap"]), "--sampler", "magnet", "--pool", str(pool),
                     "--top-k", "8", "--seeds", "5-9", "--outdir", str(out2), "--mix", "0.4"]) == 0
    kinds = [r["kind"] for r in json.loads((out2 / "magnet-samples.json").read_text())["samples"]]
    assert kinds == ["magnet"] * 2 + ["naive"] * 3


def test_naive_generate_is_unchanged(snaps, tmp_path):
    out = tmp_path / "naive"
    assert cli.main(["generate", "--network", str(snaps["snap"]), "--seeds", "0-2", "--outdir", str(out)]) == 0
    assert sorted(f.name for f in out.iterdir()) == ["seed0000.png", "seed0001.png", "seed0002.png"]
    for seed, img in generate_images(snaps["G"], [0, 1, 2]):
        assert np.array_equal(_png(out / f"seed{seed:04d}.png"), img)


def test_conditional_pool_and_per_class_generation(snaps, tmp_path):
    pool = tmp_path / "c.npz"
    assert cli.main(["magnet", "pool", "--network", str(snaps["csnap"]), "--num", "9", "--out", str(pool),
                     "--wrt", "w", "--trunc", "0.8"] + POOL_ARGS) == 0
    p = MagnetPool.load(pool)
    assert p.classes.tolist() == [0, 1, 2] * 3 and p.meta["wrt"] == "w" and p.meta["truncation_psi"] == 0.8
    out = tmp_path / "o"
    assert cli.main(["generate", "--network", str(snaps["csnap"]), "--sampler", "magnet", "--pool", str(pool),
                     "--top-k", "8", "--seeds", "0-3", "--outdir", str(out), "--trunc", "0.8"]) == 0
    classes = [r["class"] for r in json.loads((out / "magnet-samples.json").read_text())["samples"]]
    assert classes == [0, 0, 1, 2]  # 4 = 3 classes x 1 + 1 extra for class 0
    out = tmp_path / "o2"
    assert cli.main(["generate", "--network", str(snaps["csnap"]), "--sampler", "magnet", "--pool", str(pool),
                     "--top-k", "8", "--seeds", "0-1", "--outdir", str(out), "--class", "2", "--trunc", "0.8"]) == 0
    assert [r["class"] for r in json.loads((out / "magnet-samples.json").read_text())["samples"]] == [2, 2]


def _cli_error(argv, capsys):
    assert cli.main(argv) == 2
    return capsys.readouterr().err


def test_cli_errors(snaps, tmp_path, capsys):
    net = str(snaps["snap"])
    err = _cli_error(["generate", "--network", net, "--sampler", "magnet", "--seeds", "0", "--outdir",
                      str(tmp_path / "a")], capsys)
    assert "needs --pool" in err
    err = _cli_error(["generate", "--network", net, "--seeds", "0", "--outdir", str(tmp_path / "a"), "--rho", "2"],
                     capsys)
    assert "--rho only apply to --sampler magnet" in err
    err = _cli_error(["generate", "--network", net, "--sampler", "magnet", "--pool", str(tmp_path / "none.npz"),
                      "--seeds", "0", "--outdir", str(tmp_path / "a")], capsys)
    assert "none.npz" in err and "does not exist" in err
    wrong = tmp_path / "wrong.npz"
    MagnetPool(torch.zeros(3, 5), torch.zeros(3, 2)).save(wrong)
    err = _cli_error(["generate", "--network", net, "--sampler", "magnet", "--pool", str(wrong), "--seeds", "0",
                      "--outdir", str(tmp_path / "a")], capsys)
    assert "5-d latents" in err and "z_dim is 12" in err
    ok = tmp_path / "ok.npz"
    MagnetPool(torch.zeros(3, 12), torch.zeros(3, 2)).save(ok)
    err = _cli_error(["generate", "--network", net, "--sampler", "magnet", "--pool", str(ok), "--seeds", "0",
                      "--outdir", str(tmp_path / "a")], capsys)
    assert "top_k=30 but the pool has only 2" in err
    err = _cli_error(["generate", "--network", net, "--sampler", "magnet", "--pool", str(ok), "--seeds", "0-3",
                      "--top-k", "2", "--outdir", str(tmp_path / "a")], capsys)
    assert "cannot draw 4 samples without replacement" in err
    err = _cli_error(["magnet", "pool", "--network", net, "--num", "4", "--out", str(tmp_path / "p.npz"),
                      "--proj-dim", "1000"], capsys)
    assert "proj_dim=1000 exceeds the output size D=192" in err
    err = _cli_error(["magnet", "pool", "--network", net, "--num", "4", "--out", str(tmp_path / "p.txt")], capsys)
    assert ".npz" in err
    err = _cli_error(["magnet", "pool", "--network", str(tmp_path / "nope.pt"), "--num", "4", "--out",
                      str(tmp_path / "p.npz")], capsys)
    assert "nope.pt" in err


def test_pool_command_resumes_after_a_kill(snaps, tmp_path):
    """SIGKILL the command once a chunk is on disk, rerun it, and get the uninterrupted run's file."""
    args = ["--network", str(snaps["snap"]), "--num", "16", "--chunk", "4", "--proj-dim", "8", "--top-k", "8",
            "--batch", "2", "--quiet"]
    full = tmp_path / "full.npz"
    assert cli.main(["magnet", "pool", "--out", str(full)] + args) == 0
    out = tmp_path / "killed.npz"
    parts = tmp_path / "killed.npz.parts"
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "fastgan", "magnet", "pool", "--out", str(out)] + args
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(parts.glob("chunk-*.npz")) and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    chunks = list(parts.glob("chunk-*.npz"))
    assert chunks and not out.exists(), "the run finished before it could be killed"
    assert len(chunks) < 4
    assert cli.main(["magnet", "pool", "--out", str(out)] + args) == 0
    with np.load(full) as a, np.load(out) as b:
        assert np.array_equal(a["latents"], b["latents"]) and np.array_equal(a["svds"], b["svds"])
        assert json.loads(str(a["meta"])) == json.loads(str(b["meta"]))
    assert not parts.exists()


def test_bench_jacvol_writes_rows(tmp_path, monkeypatch):
    from benchmarks import bench_jacvol, common, report

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(bench_jacvol, "LSV_SHAPE", (4, 8, 16))
    monkeypatch.setitem(bench_jacvol.CFGS, "tiny", dict(z_dim=8, w_dim=8, mapping_layers=1, channel_base=32,
                                                        channel_max=4))
    argv = ["--device", "cpu", "--res", "8", "--batch", "2", "--proj-dim", "6", "--providers",
            "ref,baseline-naive,baseline-floor", "--budget", "0", "--out", str(tmp_path)]
    assert bench_jacvol.main(argv) == 0
    with (tmp_path / "jacvol.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == common.HEADER
    got = {(r[7], r[8], r[10], r[16]) for r in rows[1:]}
    e2e = "G8_B2_P6_tiny"
    assert got == {(e2e, "ref", "e2e", "latent/s"), (e2e, "baseline-naive", "e2e", "latent/s"),
                   (e2e, "baseline-floor", "e2e", "latent/s"), ("LSV_B4_k8_d16", "ref", "fwd", "mat/s"),
                   ("RP_R8_B2_k6", "ref", "fwd", "GB/s"), ("RPT_R8_B2_k6", "ref", "fwd", "GB/s")}
    assert all(float(r[15]) > 0 for r in rows[1:])
    # the naive baseline computes what the engine computes
    G = bench_jacvol.make_generator("tiny", 8, "cpu")
    z = torch.randn(2, G.z_dim)
    from fastgan.ops import random_projection
    from fastgan.sampling import jacobian_log_singular_values

    P = random_projection(torch.eye(6), 6, 0, True, shape=192)
    torch.testing.assert_close(bench_jacvol.naive_log_sv(G, z, P, top_k=6),
                               jacobian_log_singular_values(G, z, proj_dim=6), atol=1e-4, rtol=0)
    out = tmp_path / "perf.md"
    assert report.main(["--results", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "## jacvol on" in text and "best vs baseline-naive" in text and "best vs baseline-floor" in text
    assert "Target: H100" in text

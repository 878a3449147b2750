"""Pieces of the training package: counter-based RNG, option resolution and diffs, run-dir helpers, weight
transfer, per-seed generation."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from fastgan.train import rng
from fastgan.train.options import CFG_SPECS, TrainOptions, diff_options, resolve
from fastgan.train.rundir import RunFiles, create_run_dir, kimg_tag, matching_runs, read_latest, run_suffix


def test_rng_mixer_matches_python_integers():
    vals = [0, 1, 2 ** 63 - 1, -1, -(2 ** 63), 123456789123]
    vals += [random.Random(0).getrandbits(64) - 2 ** 63 for _ in range(100)]
    got = rng._mix(torch.tensor(vals, dtype=torch.int64)).tolist()
    want = [rng._signed(rng._mix_int(v & rng._M64)) for v in vals]
    assert got == want


def test_rng_draws_depend_only_on_keys():
    keys = rng.sample_keys(rng.derive(7, 1), range(1000))
    u = rng.uniform(keys, (4,))
    assert u.shape == (1000, 4) and 0 <= u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.02
    z = rng.normal(keys, 256)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert torch.equal(rng.normal(keys[100:200], 256), z[100:200])
    assert not torch.equal(rng.normal(keys, 8, stream=1), rng.normal(keys, 8, stream=2))
    r = rng.randint(keys, 5, 3)
    assert r.min() == 0 and r.max() == 4
    assert rng.derive(1, 2) != rng.derive(2, 1)
    with pytest.raises(TypeError):
        rng.derive(1.5)
    with pytest.raises(ValueError, match="1-D int64"):
        rng.uniform(keys.float(), 2)


def test_resolve_fills_presets_and_checks():
    o = resolve(TrainOptions(data="x", outdir="o", cfg="auto", batch=16), data_resolution=64, world_size=2)
    assert o.batch_gpu == 8 and o.gamma == pytest.approx(0.0002 * 64 ** 2 / 16) and o.ema_kimg == 5.0
    assert o.glr == 0.0025 and o.cbase == 16384 and o.mbstd == 4 and o.ema_rampup == 0.05 and o.img_snap == 50
    o = resolve(TrainOptions(cfg="paper256", fp32=True), data_resolution=256, world_size=1)
    assert o.num_fp16_res == 0 and o.gamma == 1.0 and o.ema_rampup == 0.0 and o.map == 8
    assert set(CFG_SPECS) >= {"stylegan2", "paper256", "low_shot", "auto", "tiny"}
    bad = [(dict(cfg="nope"), "is not a preset"), (dict(batch=7), "not divisible"), (dict(kimg=-1.0), "--kimg"),
           (dict(batch_gpu=3), "--batch-gpu 3"), (dict(aug="flip"), "--aug"), (dict(resolution=128), "does not match"),
           (dict(style_mixing=2.0), "--style-mixing"), (dict(resume="auto", transfer="x.pt"), "only one"),
           (dict(cfg="tiny", batch=4, batch_gpu=2, mbstd=4), "minibatch-std"), (dict(snap=0), "--snap")]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            resolve(TrainOptions(**{"batch": 8, **kw}), data_resolution=64, world_size=2)


def test_diff_options_ignores_whitelist():
    a = TrainOptions(kimg=10, glr=0.1).to_dict()
    b = TrainOptions(kimg=20, glr=0.2, workers=7).to_dict()
    assert diff_options(a, b) == [("glr", 0.1, 0.2)]
    with pytest.raises(ValueError, match="unknown training options"):
        TrainOptions.from_dict({"bogus": 1})


def test_run_dir_names_ids_and_matching(tmp_path):
    s1 = run_suffix("tiny", "my data!", 8, "x y", world_size=1)
    assert s1 == "tiny-my_data_-gpus1-batch8-x_y"
    a = create_run_dir(tmp_path, s1)
    b = create_run_dir(tmp_path, run_suffix("tiny", "my data!", 8, "x y", world_size=4))
    assert (a.name[:5], b.name[:5]) == ("00000", "00001")
    assert matching_runs(tmp_path, s1) == [a, b]
    assert matching_runs(tmp_path, run_suffix("tiny", "my data!", 16, "x y", 1)) == []
    assert kimg_tag(12000) == "000012" and kimg_tag(32) == "000000.032"
    assert read_latest(a) is None
    (a / "latest.json").write_text(json.dumps({"state": "training-state-000001.pt", "snapshot": "n.pt"}))
    with pytest.raises(ValueError, match="missing"):
        read_latest(a)
    f = RunFiles(a, quiet=True)
    for n in (8, 16, 24):
        f.append_stats({"nimg": n})
    with open(a / "stats.jsonl", "a") as fh:
        fh.write('{"nimg": 3')  # a line cut by a crash
    assert f.truncate_stats(16) == 2
    assert [json.loads(x)["nimg"] for x in (a / "stats.jsonl").read_text().splitlines()] == [8, 16]


def test_transfer_weights_reports_every_mismatch():
    from fastgan.transfer import WeightMismatchError, transfer_weights

    dst = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    src = {"0.weight": torch.ones(4, 3), "0.bias": torch.ones(4), "1.weight": torch.ones(5, 4),
           "2.weight": torch.ones(1)}
    with pytest.raises(WeightMismatchError) as exc:
        transfer_weights(dst, src)
    msg = str(exc.value)
    assert "1.weight" in msg and "(5, 4)" in msg and "1.bias" in msg and "missing" in msg and "2.weight" in msg
    assert not torch.equal(dst[0].weight, torch.ones(4, 3))  # nothing copied on error
    rep = transfer_weights(dst, src, allow_partial=True)
    assert sorted(rep.loaded) == ["0.bias", "0.weight"] and not rep.complete
    assert torch.equal(dst[0].weight, torch.ones(4, 3))


def test_generate_is_per_seed(tmp_path):
    from PIL import Image

    from fastgan import cli
    from fastgan.nn import Generator, save_snapshot
    from fastgan.sampling import generate_images, parse_seeds

    assert parse_seeds("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]
    for bad in ("3-1", "a", "1,1", ""):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16, mapping_layers=1).eval()
    one = dict(generate_images(G, [5, 6, 7], batch_size=1, noise_mode="random"))
    three = dict(generate_images(G, [7, 5, 6], batch_size=3, noise_mode="random"))
    for s in (5, 6, 7):
        assert np.abs(one[s].astype(int) - three[s].astype(int)).max() <= 1
    assert not np.array_equal(one[5], one[6])
    snap = save_snapshot(tmp_path / "s.pt", {"G_ema": G})
    assert cli.main(["generate", "--network", str(snap), "--seeds", "0-2", "--outdir", str(tmp_path / "o"),
                     "--device", "cpu"]) == 0
    files = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert files == ["seed0000.png", "seed0001.png", "seed0002.png"]
    assert Image.open(tmp_path / "o" / "seed0001.png").size == (16, 16)
    assert cli.main(["generate", "--network", str(snap), "--seeds", "0", "--outdir", str(tmp_path / "o"),
                     "--class", "1", "--device", "cpu"]) == 2


def _dist_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from fastgan.train import distributed as fdist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        d = fdist.Dist(rank, world, rank, torch.device("cpu"))
        m = torch.nn.Linear(3, 2)
        torch.manual_seed(rank)  # different initial weights on each rank ...
        torch.nn.init.normal_(m.weight)
        fdist.broadcast_module(d, m)  # ... until rank 0's are broadcast
        fdist.check_consistency(d, m, "m")
        m.weight.grad = torch.full_like(m.weight, float(rank + 1))
        m.bias.grad = torch.ones_like(m.bias)
        flat = fdist.all_reduce_grads(d, m.parameters())
        ok = torch.equal(m.weight.grad, torch.full_like(m.weight, 3.0)) and flat.numel() == 8
        with torch.no_grad():
            if rank == 1:
                m.bias.add_(1e-3)  # weights diverge on one rank
        try:
            fdist.check_consistency(d, m, "m")
            caught = ""
        except RuntimeError as exc:
            caught = str(exc)
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"ok": ok, "caught": caught}, f)
    finally:
        dist.destroy_process_group()


def test_flat_gradient_all_reduce_and_consistency_check(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_dist_worker, args=(2, port, str(tmp_path / "r")), nprocs=2, join=True)
    for rank in (0, 1):
        res = json.loads((tmp_path / f"r.{rank}").read_text())
        assert res["ok"], rank
        assert "m.bias differs between processes" in res["caught"], res

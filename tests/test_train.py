"""Training loop reliability (WORKFLOWS.md (d)): exact resume, atomic saves under kill -9 and ENOSPC, NaN policy,
SIGTERM, option diffs, --resume auto, transfer mismatch, torchrun with 2 gloo processes, dry run."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from fastgan.train import loss as L
from fastgan.train.loop import NonFiniteError, train
from fastgan.train.options import TrainOptions

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data16(tmp_path_factory) -> pathlib.Path:
    """A 16 px dataset zip of 24 labelled RGB images (3 classes)."""
    from PIL import Image

    from fastgan.data import make_dataset

    src = tmp_path_factory.mktemp("src16")
    r = np.random.RandomState(0)
    labels = []
    for i in range(24):
        cls = i % 3
        img = np.zeros((16, 16, 3), np.uint8)
        img[..., cls] = 200
        img += r.randint(0, 50, size=img.shape).astype(np.uint8)
        Image.fromarray(img).save(src / f"im{i:02d}.png")
        labels.append([f"im{i:02d}.png", cls])
    (src / "dataset.json").write_text(json.dumps({"labels": labels}))
    dest = tmp_path_factory.mktemp("data16") / "toy16.zip"
    make_dataset(src, dest, log=lambda s: None, progress=False)
    return dest


def opts(data, outdir, **kw) -> TrainOptions:
    base = dict(data=str(data), outdir=str(outdir), cfg="tiny", batch=8, kimg=0.032, tick=0.016, snap=1, aug="none",
                workers=0, progress=False)
    base.update(kw)
    return TrainOptions(**base)


def load_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same(a, b, path="", skip=("options", "rng")):
    """Bit-exact comparison of two nested training states."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            if k not in skip:
                assert_same(a[k], b[k], f"{path}/{k}", skip)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]", skip)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path}: max diff {(a.double() - b.double()).abs().max()}"
    elif isinstance(a, float) and a != a:
        assert b != b, path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def run_dirs(outdir) -> list[pathlib.Path]:
    return sorted(p for p in pathlib.Path(outdir).iterdir() if p.is_dir())


# ---------------------------------------------------------------------------------------------------------------


def test_run_directory_layout_and_weights_only_snapshot(data16, tmp_path):
    res = train(opts(data16, tmp_path, kimg=0.032, cond=True, aug="diffaug"), quiet=True)
    assert res.status == "finished" and res.cur_nimg == 32 and res.exit_code == 0
    d = res.run_dir
    assert d.name == "00000-tiny-toy16-gpus1-batch8"
    for name in ("training_options.json", "env.json", "status.json", "log.txt", "stats.jsonl", "reals.png",
                 "fakes_init.png", "fakes000000.032.png", "network-snapshot-000000.032.pt",
                 "training-state-000000.032.pt", "latest.json"):
        assert (d / name).is_file(), name
    assert json.loads((d / "status.json").read_text())["status"] == "finished"
    latest = json.loads((d / "latest.json").read_text())
    assert latest["state"] == "training-state-000000.032.pt" and latest["cur_nimg"] == 32
    lines = [json.loads(x) for x in (d / "stats.jsonl").read_text().splitlines()]
    assert [x["nimg"] for x in lines] == [16, 32]
    assert lines[0]["stats"]["Loss/G/loss"]["num"] == 16
    opts_json = json.loads((d / "training_options.json").read_text())
    assert opts_json["label_dim"] if "label_dim" in opts_json else opts_json["cond"]
    assert opts_json["data_fingerprint"].startswith("zip:")
    assert not list(d.glob(".*tmp*")), "temporary files left behind"
    env = json.loads((d / "env.json").read_text())
    assert env["torch"] == torch.__version__ and "modulated_conv2d@cpu" in env["kernels"]
    # the snapshot loads with weights_only=True in a process that never imports fastgan
    code = ("import sys, torch; b = torch.load(sys.argv[1], weights_only=True); "
            "assert 'fastgan' not in sys.modules; print(sorted(b['networks']), b['networks']['G']['config']['c_dim'])")
    out = subprocess.run([sys.executable, "-c", code, str(d / "network-snapshot-000000.032.pt")], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["['D',", "'G',", "'G_ema']", "3"]
    from fastgan.nn import load_network

    G = load_network(d / "network-snapshot-000000.032.pt")
    img = G(torch.randn(2, G.z_dim), torch.eye(3)[:2], noise_mode="const")
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()


@pytest.mark.parametrize("aug", ["ada", "diffaug"])
def test_resume_is_bit_exact(data16, tmp_path, aug):
    kw = dict(aug=aug, pl_weight=2.0, pl_interval=2, r1_interval=2, ada_kimg=0.1, ada_interval=1, ada_target=0.0,
              mirror=True)
    full = train(opts(data16, tmp_path / "a", kimg=0.048, **kw), quiet=True)
    part = train(opts(data16, tmp_path / "b", kimg=0.016, **kw), quiet=True)
    resumed = train(opts(data16, tmp_path / "b", kimg=0.048, resume="auto", **kw), quiet=True)
    assert resumed.run_dir == part.run_dir
    a = load_state(full.run_dir / "training-state-000000.048.pt")
    b = load_state(resumed.run_dir / "training-state-000000.048.pt")
    assert_same(a, b)
    if aug == "ada":
        assert a["augment"]["controller"]["p"] > 0  # the controller moved, and resumed identically
    stats = [json.loads(x)["nimg"] for x in (resumed.run_dir / "stats.jsonl").read_text().splitlines()]
    assert stats == [16, 32, 48]


def test_resume_refuses_changed_options_and_allows_longer_kimg(data16, tmp_path):
    train(opts(data16, tmp_path, kimg=0.016), quiet=True)
    with pytest.raises(ValueError, match=r"options differ(.|\n)*glr(.|\n)*0\.0025(.|\n)*0\.001"):
        train(opts(data16, tmp_path, kimg=0.032, resume="auto", glr=0.001), quiet=True)
    res = train(opts(data16, tmp_path, kimg=0.032, resume="auto", snap=5), quiet=True)
    assert res.cur_nimg == 32 and len(run_dirs(tmp_path)) == 1


def test_resume_auto_fresh_and_ambiguous(data16, tmp_path, capsys):
    res = train(opts(data16, tmp_path, kimg=0.008, resume="auto"), quiet=False)
    assert "starting a new run" in capsys.readouterr().out and res.status == "finished"
    (tmp_path / "00007-tiny-toy16-gpus2-batch8").mkdir()  # same run name with another process count
    with pytest.raises(ValueError, match=r"found 2 matching runs(.|\n)*00000-(.|\n)*00007-"):
        train(opts(data16, tmp_path, kimg=0.016, resume="auto"), quiet=True)
    with pytest.raises(ValueError, match="--transfer"):
        train(opts(data16, tmp_path, resume=str(res.run_dir / "network-snapshot-000000.008.pt")), quiet=True)


def test_kill_during_state_write_keeps_previous_state(data16, tmp_path):
    """kill -9 between writing the second training state and renaming it: the first pair stays complete."""
    script = textwrap.dedent(f"""
        import os, signal, fastgan._io as io
        from fastgan.train.loop import train
        from fastgan.train.options import TrainOptions
        real = os.replace
        def replace(src, dst):
            if "training-state-000000.032" in str(dst):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst)
        io.os.replace = replace
        train(TrainOptions(data={str(data16)!r}, outdir={str(tmp_path)!r}, cfg="tiny", batch=8, kimg=0.048,
                           tick=0.016, snap=1, aug="none", workers=0, progress=False), quiet=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (d,) = run_dirs(tmp_path)
    latest = json.loads((d / "latest.json").read_text())
    assert latest["state"] == "training-state-000000.016.pt"
    assert not (d / "training-state-000000.032.pt").exists()
    load_state(d / latest["state"])  # loadable
    res = train(opts(data16, tmp_path, kimg=0.048, resume="auto"), quiet=True)
    assert res.run_dir == d and res.cur_nimg == 48
    stats = [json.loads(x)["nimg"] for x in (d / "stats.jsonl").read_text().splitlines()]
    assert stats == [16, 32, 48]  # the line written before the kill was replayed, not duplicated


def test_disk_full_during_save_marks_failed_and_keeps_previous(data16, tmp_path, monkeypatch):
    import errno

    import fastgan.train.loop as loop

    real_save = torch.save
    calls = []

    def save(obj, f, *a, **k):
        calls.append(str(f))
        if len(calls) == 4:  # snapshot 1, state 1, snapshot 2, state 2 <- disk full here
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(loop.torch, "save", save)
    with pytest.raises(OSError, match="No space"):
        train(opts(data16, tmp_path, kimg=0.048), quiet=True)
    (d,) = run_dirs(tmp_path)
    assert json.loads((d / "status.json").read_text())["status"] == "failed"
    assert json.loads((d / "latest.json").read_text())["state"] == "training-state-000000.016.pt"
    load_state(d / "training-state-000000.016.pt")
    assert not list(d.glob(".*tmp*"))


def _nan_after(monkeypatch, first_bad_call: int):
    real = L.d_real
    n = {"calls": 0}

    def d_real(logits, denom):
        n["calls"] += 1
        out = real(logits, denom)
        return out * float("nan") if n["calls"] >= first_bad_call else out

    monkeypatch.setattr(L, "d_real", d_real)


def test_nonfinite_skip_counts_and_aborts_after_limit(data16, tmp_path, monkeypatch):
    _nan_after(monkeypatch, 3)  # D main of step 2 onwards produces NaN gradients
    with pytest.raises(NonFiniteError, match="3 consecutive steps"):
        train(opts(data16, tmp_path, kimg=0.2, nonfinite_limit=3, tick=0.008), quiet=True)
    (d,) = run_dirs(tmp_path)
    status = json.loads((d / "status.json").read_text())
    assert status["status"] == "failed" and "consecutive" in status["reason"]
    stats = [json.loads(x) for x in (d / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["stats"]["Sanity/nonfinite_total"]["mean"] >= 2
    assert stats[-1]["nimg"] < 200  # progress did not keep counting up
    st = load_state(d / json.loads((d / "latest.json").read_text())["state"])
    for rec in st["networks"].values():  # the last saved state is finite
        assert all(torch.isfinite(v).all() for v in rec["state_dict"].values() if v.is_floating_point())


def test_nonfinite_abort_policy_stops_at_once(data16, tmp_path, monkeypatch):
    _nan_after(monkeypatch, 1)
    with pytest.raises(NonFiniteError, match="--nonfinite abort"):
        train(opts(data16, tmp_path, nonfinite="abort"), quiet=True)


def test_nonfinite_sanitize_keeps_training(data16, tmp_path, monkeypatch):
    _nan_after(monkeypatch, 2)
    res = train(opts(data16, tmp_path, nonfinite="sanitize", nonfinite_limit=100), quiet=True)
    assert res.status == "finished"
    st = load_state(res.run_dir / "training-state-000000.032.pt")
    assert st["counters"]["nonfinite_total"] == 3  # steps 1, 2, 3 of 4 had NaN D gradients


def test_sigterm_writes_state_and_resume_continues(data16, tmp_path):
    cmd = [sys.executable, "-m", "fastgan", "train", "--data", str(data16), "--outdir", str(tmp_path), "--cfg",
           "tiny", "--batch", "8", "--kimg", "1000", "--tick", "0.008", "--snap", "1000", "--aug", "none",
           "--workers", "0", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            stats = list(tmp_path.glob("*/stats.jsonl"))
            if stats and stats[0].read_text().count("\n") >= 2:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    (d,) = run_dirs(tmp_path)
    assert json.loads((d / "status.json").read_text())["status"] == "interrupted"
    latest = json.loads((d / "latest.json").read_text())
    st = load_state(d / latest["state"])
    assert st["counters"]["cur_nimg"] == latest["cur_nimg"] >= 16
    res = train(opts(data16, tmp_path, kimg=latest["kimg"] + 0.008, tick=0.008, snap=1000, resume="auto"),
                quiet=True)
    assert res.run_dir == d and res.cur_nimg == latest["cur_nimg"] + 8


def test_transfer_mismatch_table_and_allow_partial(data16, tmp_path):
    src = train(opts(data16, tmp_path / "src", kimg=0.008), quiet=True)
    snap = src.run_dir / "network-snapshot-000000.008.pt"
    with pytest.raises(ValueError, match=r"(?s)does not match.*mapping\.embed\.weight.*missing.*--allow-partial"):
        train(opts(data16, tmp_path / "dst", cond=True, transfer=str(snap)), quiet=True)
    assert not list((tmp_path / "dst").glob("*/latest.json"))
    res = train(opts(data16, tmp_path / "dst2", kimg=0.008, cond=True, transfer=str(snap), allow_partial=True),
                quiet=True)
    log = (res.run_dir / "log.txt").read_text()
    assert "partial" in log and "mapping.embed.weight" in log
    same = train(opts(data16, tmp_path / "dst3", kimg=0.008, transfer=str(snap)), quiet=True)
    assert "tensors loaded" in (same.run_dir / "log.txt").read_text()


def test_dry_run_and_bad_data_fail_before_anything_is_written(data16, tmp_path, capsys):
    res = train(opts(data16, tmp_path / "o", dry_run=True), quiet=False)
    printed = json.loads(capsys.readouterr().out)
    assert res.status == "dry-run" and printed["options"]["gamma"] == 1.0 and printed["options"]["batch_gpu"] == 8
    assert not (tmp_path / "o").exists()
    from PIL import Image

    bad = tmp_path / "mixed"
    bad.mkdir()
    Image.new("RGB", (16, 16)).save(bad / "a.png")
    Image.new("RGB", (32, 16)).save(bad / "b.png")
    with pytest.raises(ValueError, match="fastgan data make"):
        train(opts(bad, tmp_path / "o2"), quiet=True)
    assert not (tmp_path / "o2").exists()
    with pytest.raises(ValueError, match="--batch-gpu 3"):
        train(opts(data16, tmp_path / "o3", batch_gpu=3), quiet=True)
    with pytest.raises(ValueError, match="--resolution 32 does not match"):
        train(opts(data16, tmp_path / "o4", resolution=32), quiet=True)


def test_synthetic_primitives_stream_trains(tmp_path):
    res = train(opts("synth:primitives-ps", tmp_path, resolution=16, kimg=0.016), quiet=True)
    assert res.status == "finished"
    snap = json.loads((res.run_dir / "training_options.json").read_text())
    assert snap["data"] == "synth:primitives-ps" and snap["resolution"] == 16


def test_grad_accumulation_matches_full_batch(data16, tmp_path):
    """--batch-gpu only splits the work: 2 rounds of 4 give the update of 1 round of 8 (mbstd group 4 in both).

    The gradients agree to float rounding, but Adam's first steps move each weight by about lr * sign(grad): where a
    gradient component is ~0 the two summation orders can give it opposite signs, and that weight then differs by
    up to 2 * lr per step. So nearly every weight must match to 1e-4 and the rest by no more than those flips (with
    1 torch thread about 0.25 % of the elements flip, with 2 none)."""
    a = train(opts(data16, tmp_path / "a", kimg=0.016, mbstd=4), quiet=True)
    b = train(opts(data16, tmp_path / "b", kimg=0.016, mbstd=4, batch_gpu=4), quiet=True)
    sa = load_state(a.run_dir / "training-state-000000.016.pt")["networks"]
    sb = load_state(b.run_dir / "training-state-000000.016.pt")["networks"]
    steps, lr = 2, 0.0025  # 16 images at batch 8; the tiny config's lr
    total = off = 0
    for name in sa:
        for k, v in sa[name]["state_dict"].items():
            w = sb[name]["state_dict"][k]
            if not v.is_floating_point():
                assert torch.equal(v, w), f"{name}.{k}"
                continue
            total += v.numel()
            off += int((~torch.isclose(v, w, rtol=1e-4, atol=1e-5)).sum())
            assert (v - w).abs().max().item() <= 2 * lr * steps + 1e-5, f"{name}.{k}"
    assert off <= 0.005 * total, f"{off} of {total} weights differ beyond 1e-4"


@pytest.mark.slow
def test_two_gloo_processes_equal_one(data16, tmp_path):
    """torchrun with 2 CPU processes (gloo) at the same --batch and --batch-gpu matches 1 process."""
    common = ["--data", str(data16), "--cfg", "tiny", "--batch", "8", "--batch-gpu", "4", "--kimg", "0.016",
              "--tick", "0.016", "--snap", "1", "--aug", "diffaug", "--workers", "0", "--no-progress", "--quiet",
              "--pl-weight", "2", "--pl-interval", "1", "--r1-interval", "1", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "fastgan", "train", "--outdir", str(tmp_path / "one"), *common],
                   check=True, env=env, timeout=300)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "fastgan", "train", "--outdir", str(tmp_path / "two"), *common],
                          env=env, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (d1,) = run_dirs(tmp_path / "one")
    (d2,) = run_dirs(tmp_path / "two")
    assert d2.name.endswith("gpus2-batch8")
    s1 = load_state(d1 / "training-state-000000.016.pt")
    s2 = load_state(d2 / "training-state-000000.016.pt")
    for name in s1["networks"]:
        for k, v in s1["networks"][name]["state_dict"].items():
            torch.testing.assert_close(v, s2["networks"][name]["state_dict"][k], rtol=1e-5, atol=1e-6,
                                       msg=f"{name}.{k}")
    torch.testing.assert_close(s1["pl_mean"], s2["pl_mean"])
    st1 = [json.loads(x)["stats"]["Loss/G/loss"] for x in (d1 / "stats.jsonl").read_text().splitlines()]
    st2 = [json.loads(x)["stats"]["Loss/G/loss"] for x in (d2 / "stats.jsonl").read_text().splitlines()]
    assert [x["num"] for x in st1] == [x["num"] for x in st2]
    np.testing.assert_allclose([x["mean"] for x in st1], [x["mean"] for x in st2], rtol=1e-5)


@pytest.mark.gpu
def test_cuda_run_with_float16_layers_and_ada(data16, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    res = train(opts(data16, tmp_path, kimg=0.032, aug="ada", num_fp16_res=2, pl_weight=2.0, pl_interval=2,
                     r1_interval=2), device="cuda", quiet=True)
    assert res.status == "finished"
    st = load_state(res.run_dir / "training-state-000000.032.pt")
    assert st["counters"]["nonfinite_total"] == 0
    env = json.loads((res.run_dir / "env.json").read_text())
    assert env["gpu"] and any(k.startswith("modulated_conv2d@cuda") for k in env["kernels"])


@pytest.mark.slow
def test_torchrun_restart_resumes_from_latest(data16, tmp_path):
    """A rank dies after the first state; torchrun --max-restarts 1 restarts the group, which continues from
    latest.json; stats.jsonl has every tick exactly once."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import os
        import fastgan.train.loop as loop
        from fastgan.train.options import TrainOptions
        if os.environ["TORCHELASTIC_RESTART_COUNT"] == "0" and os.environ["RANK"] == "1":
            real = loop.Trainer.run_step
            def run_step(self, reals):
                if self.cur_nimg == 24:  # after the state at nimg 16
                    os._exit(3)
                return real(self, reals)
            loop.Trainer.run_step = run_step
        res = loop.train(TrainOptions(data={str(data16)!r}, outdir={str(tmp_path / 'out')!r}, cfg="tiny", batch=8,
                                      batch_gpu=4, kimg=0.04, tick=0.008, snap=2, aug="none", workers=0,
                                      progress=False, resume="auto"), device="cpu", quiet=True)
        assert res.status == "finished", res
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "--max-restarts", "1", str(script)], env=env, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (d,) = run_dirs(tmp_path / "out")
    log = (d / "log.txt").read_text()
    assert "resuming" in log and "at kimg 0.016" in log
    stats = [json.loads(x)["nimg"] for x in (d / "stats.jsonl").read_text().splitlines()]
    assert stats == [8, 16, 24, 32, 40]
    assert json.loads((d / "status.json").read_text())["status"] == "finished"

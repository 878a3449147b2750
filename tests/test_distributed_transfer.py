"""`fastgan transfer` with a vision-aided discriminator under torchrun: 2 CPU processes (gloo), gradient
accumulation inside each process, per-backbone ADA on the heads. Every rank dumps its networks, heads and ADA
state at each snapshot; the ranks must agree exactly, and a resume of the 2-process run must reproduce it."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from transfer_cases import assert_bit_equal, source_snapshot, target_zip

# the rank dumps: the trainer's networks, the vision module's state (heads, spectral-norm vectors, ADA pipes) and
# each backbone's ADA controller, written by every process right after the snapshot
JOB = textwrap.dedent("""
    import os, sys
    import torch
    import fastgan.train.loop as loop
    from fastgan import cli

    out = os.environ["FASTGAN_TEST_DUMPS"]
    real_init, real_save = loop.Trainer.__init__, loop.Trainer.save

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        # centre the head's real logits at 0: mixed signs, so that the heads' ADA statistic is informative
        with torch.no_grad():
            reals = self.stream.grid_reals(16).to(self.device).float() / 127.5 - 1
            bias = self.vision.heads["random"].branches[-1].out.bias
            bias.sub_(self.vision.logits("random", reals, phase=1)[-1].median())

    def save(self, reason):
        real_save(self, reason)
        v = self.vision
        dump = {"networks": {n: {k: t.detach().clone() for k, t in m.state_dict().items()}
                             for n, m in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema))},
                "vision": {k: t.detach().clone() for k, t in v.state_dict().items() if torch.is_tensor(t)},
                "ada": {s: {k: c.state_dict()[k] for k in ("p", "rt", "ticks")} for s, c in v._ada.items()},
                "ada_p": v.ada_p(), "cur_nimg": self.cur_nimg}
        torch.save(dump, os.path.join(out, f"rank{os.environ['RANK']}-{self.cur_nimg:04d}.pt"))

    loop.Trainer.__init__, loop.Trainer.save = init, save
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def data16(tmp_path_factory) -> pathlib.Path:
    return target_zip(tmp_path_factory, "dtarget16.zip", seed=3, count=16, base=170, noise=80)


@pytest.fixture(scope="module")
def source(data16, tmp_path_factory) -> pathlib.Path:
    return source_snapshot(data16, tmp_path_factory, seed=11)


def _torchrun(tmp_path, dumps: pathlib.Path, argv: list[str]) -> subprocess.CompletedProcess:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    dumps.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", FASTGAN_TEST_DUMPS=str(dumps))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(job), *argv], env=env, timeout=300, capture_output=True, text=True)


@pytest.mark.slow
def test_two_process_vision_aided_transfer_agrees_across_ranks_and_resumes(data16, source, tmp_path):
    out = tmp_path / "runs"
    # 2 processes x 2 rounds of 2 samples per step; the heads' ADA updates after 4 steps (its interval), by 0.064
    argv = ["transfer", "--source", str(source), "--data", str(data16), "--outdir", str(out), "--method", "freezed",
            "--cfg", "tiny", "--batch", "8", "--batch-gpu", "2", "--mbstd", "2", "--kimg", "0.032", "--tick", "0.016",
            "--snap", "1", "--img-snap", "100", "--aug", "none", "--vision-aided", "random", "--vision-augment",
            "ada", "--vision-ada-target", "-0.75", "--vision-ada-kimg", "0.5", "--workers", "0", "--no-progress",
            "--device", "cpu"]
    proc = _torchrun(tmp_path, tmp_path / "dumps", argv)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    assert run.name == "00000-tiny-dtarget16-gpus2-batch8-freezed"
    log = (run / "log.txt").read_text()
    assert "finished at kimg 0.032" in log and "transfer from" in log and "vision random" in log
    dumps = tmp_path / "dumps"
    assert sorted(p.name for p in dumps.iterdir()) == ["rank0-0016.pt", "rank0-0032.pt", "rank1-0016.pt",
                                                       "rank1-0032.pt"]
    for nimg in ("0016", "0032"):
        r0 = torch.load(dumps / f"rank0-{nimg}.pt", weights_only=False)
        r1 = torch.load(dumps / f"rank1-{nimg}.pt", weights_only=False)
        assert_bit_equal(r0, r1, f"rank dumps at nimg {nimg}")
    final = torch.load(dumps / "rank0-0032.pt", weights_only=False)
    assert any(k.startswith("heads.random.") for k in final["vision"])
    ctrl = final["ada"]["random"]
    # 4 steps at interval 4: one update, from the signs of both processes' 4 x 8 real images (all-reduced)
    assert ctrl["ticks"] == 0 and -1 < ctrl["rt"] < 1 and ctrl["rt"] * 32 == round(ctrl["rt"] * 32)
    assert final["ada_p"]["random"] == pytest.approx(0.064 if ctrl["rt"] > -0.75 else 0.0)
    state = torch.load(run / "training-state-000000.032.pt", weights_only=True)
    early = torch.load(run / "training-state-000000.016.pt", weights_only=True)["vision"]["state"]["_extra_state"]
    # mid-interval, the state holds the sign sums of both processes (2 steps x 8 images), not rank 0's share
    assert early["ada"]["random"]["ticks"] == 2 and early["ada"]["random"]["pending"][1] == 16
    assert state["vision"]["state"]["ada_pipes.random.p"].item() == pytest.approx(final["ada_p"]["random"])
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["nimg"] for s in stats] == [16, 32] and "Loss/vision/D" in stats[-1]["stats"]
    assert stats[-1]["stats"]["Loss/G/loss"]["num"] == 16  # both processes' samples in the tick's statistics

    # resume the 2-process run from its first state: it ends with the uninterrupted run's state, bit for bit
    uninterrupted = tmp_path / "uninterrupted-000000.032.pt"
    shutil.copy(run / "training-state-000000.032.pt", uninterrupted)
    resumed_dumps = tmp_path / "dumps-resumed"
    proc = _torchrun(tmp_path, resumed_dumps, [*argv, "--resume", str(run / "training-state-000000.016.pt")])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resuming" in (run / "log.txt").read_text()
    assert_bit_equal(torch.load(uninterrupted, weights_only=True),
                     torch.load(run / "training-state-000000.032.pt", weights_only=True), skip=("options", "rng"))
    r0 = torch.load(resumed_dumps / "rank0-0032.pt", weights_only=False)
    assert_bit_equal(r0, torch.load(resumed_dumps / "rank1-0032.pt", weights_only=False), "resumed rank dumps")
    assert_bit_equal(r0, final, "resumed vs uninterrupted rank 0")

"""The training-step benchmark (family ``train``) on the CPU: ``--quick`` writes schema rows; bad arguments fail
clearly."""
from __future__ import annotations

import csv
import math
import os

import pytest
import torch

from benchmarks import bench_train, common
from fastgan.train.options import TrainOptions, resolve


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("FASTGAN_IMPL", raising=False)


def _records(path):
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == common.HEADER
    return [dict(zip(common.HEADER, r)) for r in rows[1:]]


def test_quick_run_writes_rows_for_both_providers(tmp_path, no_interpreter, one_thread, capsys):
    from fastgan import ops

    out = tmp_path / "sub" / "train.csv"
    assert bench_train.main(["--quick", "--device", "cpu", "--providers", "ref,auto", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "FASTGAN_IMPL" not in os.environ  # each provider's setting is undone
    recs = _records(out)
    auto = ops.available_impls("modulated_conv2d", "cpu")[0]  # what `auto` picks on this machine
    want = ["ref"] if auto == "ref" else ["ref", auto]  # auto == ref is reported once, under ref
    assert sorted(r["provider"] for r in recs) == sorted(want)
    for r in recs:
        assert r["family"] == "train" and r["case"] == "R16_B8_tiny" and r["mode"] == "e2e"
        assert r["dtype"] == "fp32" and r["unit"] == "img/s" and r["peak_mem_mb"] == ""
        ips, ms = float(r["throughput"]), float(r["median_ms"])
        assert math.isfinite(ips) and ips > 0 and math.isfinite(ms) and ms > 0
        assert float(r["p20_ms"]) <= ms <= float(r["p80_ms"])
        assert ips == pytest.approx(8 / (ms * 1e-3), rel=1e-3)  # batch 8 per step
    # the published StyleGAN2-ADA figures are printed for context, never written as rows
    assert "StyleGAN2-ADA" in text and "not in the table" in text
    assert not any(r["provider"].startswith("baseline") for r in recs)
    # the report renders the family as an img/s table
    from benchmarks import report

    md = tmp_path / "perf.md"
    assert report.main(["--results", str(out.parent), "--out", str(md)]) == 0
    assert "## train on" in md.read_text() and "Throughput in img/s" in md.read_text()


@pytest.mark.parametrize("argv, message", [
    (["--res", "48"], "power of two"),
    (["--res", "sixty"], "comma list of integers"),
    (["--batch", "0"], "--batch must be a positive integer"),
    (["--batch", "6", "--cfg", "paper256"], "minibatch-std"),
    (["--providers", "ref,fastest"], "unknown ['fastest']"),
    (["--cfg", "paper1024"], "invalid choice"),
    (["--steps", "0"], "--steps must be a positive integer"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--dtypes", "fp16"], "does not apply to the train family"),
])
def test_bad_arguments_fail_with_a_clear_message(argv, message, capsys, no_interpreter, tmp_path):
    with pytest.raises(SystemExit) as e:
        bench_train.main(["--device", "cpu", "--csv", str(tmp_path / "x.csv")] + argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_plan_covers_whole_lazy_regularisation_cycles(capsys, no_interpreter):
    o = resolve(TrainOptions(cfg="paper256", batch=32, resolution=64), data_resolution=64, world_size=1)
    assert bench_train.cycle_steps(o) == 16  # lcm(r1_interval 16, pl_interval 4)
    o = resolve(TrainOptions(cfg="tiny", batch=8, resolution=16, r1_interval=6, pl_weight=1.0, pl_interval=4),
                data_resolution=16, world_size=1)
    assert bench_train.cycle_steps(o) == 12
    assert bench_train.main(["--device", "cpu", "--dry-run", "--cfg", "paper256", "--batch", "32", "--steps", "20",
                             "--res", "64,256"]) == 0
    text = capsys.readouterr().out
    assert "rounded up to 32" in text and "R64_B32_paper256" in text and "R256_B32_paper256" in text
    assert "warm-up 2 + 32 steps" in text and "4 measurements planned" in text


def test_run_all_args_are_the_full_gpu_case_list():
    from benchmarks import run_all

    assert "train" in run_all.families()
    assert run_all.run_all_args(run_all.families()["train"]) == ["--res", "64,256"]
    assert bench_train.DEFAULTS["cuda"][:3] == ("64,256", 32, "paper256")


def test_step_times_are_averaged_over_whole_cycles():
    run = bench_train._Run.__new__(bench_train._Run)
    run.times_ms, run.peak_mb = [1.0, 3.0, 1.0, 3.0, 1.0, 5.0], float("nan")
    t = run.timing(2)  # cycles of 2 steps: 2, 2, 3 ms per step
    assert (t.median_ms, t.p20_ms, t.p80_ms) == (2.0, 2.0, pytest.approx(2.6))
    run.times_ms = [4.0, 2.0]  # fewer steps than one cycle (--quick): their mean
    assert run.timing(16).median_ms == 3.0

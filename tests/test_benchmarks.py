"""The benchmark harness end to end on a tiny case (timings are not checked, only the CSV contract)."""
from __future__ import annotations

import csv
import math
import os

import pytest
import torch

from benchmarks import bench_modconv, common


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_bench_modconv_writes_and_appends_rows(tmp_path, no_interpreter):
    argv = ["--device", "cpu", "--cases", "R4", "--providers", "ref,cpp", "--modes", "fwd,fwdbwd", "--budget", "0",
            "--out", str(tmp_path)]
    assert bench_modconv.main(argv) == 0
    for fam in ("modconv", "adafm"):
        rows = _rows(tmp_path / f"{fam}.csv")
        assert rows[0] == common.HEADER
        assert len(rows) == 1 + 2 * 2  # 2 providers x 2 modes
        for r in rows[1:]:
            rec = dict(zip(common.HEADER, r))
            assert rec["family"] == fam and rec["case"] == "N4_C512_R4_k3" and rec["dtype"] == "fp32"
            assert math.isfinite(float(rec["median_ms"])) and float(rec["median_ms"]) > 0
            assert rec["torch"] == torch.__version__ and rec["unit"] == "TFLOP/s"
    assert bench_modconv.main(argv) == 0
    assert len(_rows(tmp_path / "modconv.csv")) == 1 + 2 * 2 * 2  # appended, not truncated


def test_csv_writer_refuses_a_different_header(tmp_path):
    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n")
    w = common.CsvWriter(tmp_path, common.environment("cpu"))
    with pytest.raises(SystemExit, match="differs from the benchmark schema"):
        w.write("x", "case", "ref", "fp32", "fwd", common.Timing(1.0, 0.9, 1.1, float("nan")), 1.0, "TFLOP/s")
    assert (tmp_path / "x.csv").read_text() == "a,b,c\n1,2,3\n"


def test_benchmarks_refuse_the_triton_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit, match="interpreter"):
        bench_modconv.main(["--device", "cpu", "--dry-run"])


def test_dry_run_plans_without_timing(tmp_path, no_interpreter, capsys):
    assert bench_modconv.main(["--device", "cpu", "--dry-run", "--out", str(tmp_path)]) == 0
    assert "measurements planned" in capsys.readouterr().out
    assert not os.listdir(tmp_path)


def test_measure_quantiles_are_ordered():
    t = common.measure(lambda: sum(range(1000)), "cpu", budget_s=0.01, min_reps=5)
    assert 0 < t.p20_ms <= t.median_ms <= t.p80_ms and math.isnan(t.peak_mem_mb)


def test_report_renders_ratios(tmp_path, no_interpreter):
    from benchmarks import report

    argv = ["--device", "cpu", "--cases", "R4", "--providers", "ref,cpp", "--modes", "fwdbwd", "--budget", "0",
            "--out", str(tmp_path)]
    assert bench_modconv.main(argv) == 0
    out = tmp_path / "perf.md"
    assert report.main(["--results", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "## modconv on" in text and "## adafm on" in text and "| N4_C512_R4_k3 | fp32 | fwdbwd |" in text
    assert "best vs ref" in text and "x |" in text


def test_bench_synth_writes_rows(tmp_path, no_interpreter):
    from benchmarks import bench_synth

    argv = ["--device", "cpu", "--cases", "R32", "--variants", "pinknoise,raster", "--providers",
            "ref,baseline-official", "--budget", "0", "--out", str(tmp_path)]
    assert bench_synth.main(argv) == 0
    rows = [dict(zip(common.HEADER, r)) for r in _rows(tmp_path / "synth.csv")[1:]]
    # the official generator has no stage cases: 2 ref rows + 1 baseline row
    assert sorted((r["case"], r["provider"], r["mode"]) for r in rows) == [
        ("R32_B16_pinknoise", "ref", "e2e"), ("R32_B16_raster", "ref", "fwd"),
        ("R32_B4_pinknoise", "baseline-official", "e2e")]
    for r in rows:
        assert r["family"] == "synth" and r["unit"] == "img/s" and float(r["throughput"]) > 0


def test_report_compares_image_rates_across_batch_sizes(tmp_path):
    # synth rows are img/s measured at different batch sizes per provider: one row per case without the batch
    # token, the rates shown, and the ratio computed from the rates (not from the per-call times)
    from benchmarks import report

    cols = "date,commit,device,torch,triton,cuda,family,case,provider,dtype,mode,median_ms,p20_ms,p80_ms," \
           "peak_mem_mb,throughput,unit"
    rows = ["2026-01-01T00:00:00,abc,dev,2.13,3.6,,synth,R64_B16_ps,cpp,uint8,e2e,10,9,11,,1600,img/s",
            "2026-01-01T00:00:00,abc,dev,2.13,3.6,,synth,R64_B4_ps,baseline-official,uint8,e2e,40,39,41,,100,img/s"]
    (tmp_path / "synth.csv").write_text("\n".join([cols] + rows) + "\n")
    out = tmp_path / "perf.md"
    assert report.main(["--results", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "Throughput in img/s" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| R64_ps |"))
    assert "| 1600 |" in line and "| 100 |" in line and "16.00x" in line
    assert "R64_B16" not in text and "R64_B4" not in text


def _fake_family(d, name, body):
    (d / f"bench_{name}.py").write_text(body)


def test_run_all_runs_every_family_and_reports_failures(tmp_path, capfd, no_interpreter):
    from benchmarks import run_all

    _fake_family(tmp_path, "bad", "import sys\nsys.exit(3)\n")
    _fake_family(tmp_path, "good", "import sys, pathlib\nRUN_ALL_ARGS = ['--variants', 'x,y']\n"
                                   "pathlib.Path(sys.argv[-1]).mkdir(exist_ok=True)\n"
                                   "pathlib.Path(sys.argv[-1], 'args.txt').write_text(' '.join(sys.argv[1:]))\n")
    out = tmp_path / "results"
    rc = run_all.main(["--device", "cpu", "--budget", "0.5", "--out", str(out)], bench_dir=tmp_path)
    text = capfd.readouterr().out
    assert rc == 1  # one family failed, the other still ran
    assert "FAILED (3)" in text and "good" in text
    # the family's own RUN_ALL_ARGS come first, then the shared arguments
    assert (out / "args.txt").read_text() == f"--variants x,y --device cpu --budget 0.5 --out {out}"
    assert run_all.main(["--only", "good", "--out", str(out)], bench_dir=tmp_path) == 0
    with pytest.raises(SystemExit) as e:
        run_all.main(["--only", "nope"], bench_dir=tmp_path)
    assert e.value.code == 2 and "unknown families ['nope']" in capfd.readouterr().err


def test_run_all_dry_run_passes_the_full_case_list(capfd, no_interpreter):
    from benchmarks import run_all

    assert set(run_all.families()) >= {"modconv", "synth"}
    assert run_all.main(["--only", "synth", "--device", "cpu", "--dry-run"]) == 0
    text = capfd.readouterr().out
    assert "raster" in text and "pinknoise" in text and "measurements planned" in text


def test_run_all_refuses_the_interpreter(monkeypatch):
    from benchmarks import run_all

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit, match="TRITON_INTERPRET"):
        run_all.main(["--dry-run"])


def test_bench_metrics_writes_both_families(tmp_path, monkeypatch, no_interpreter):
    from benchmarks import bench_metrics, report

    monkeypatch.setattr(bench_metrics, "FD_CASES", [("FD_d16_n40", 40, 60, 16), ("FDstats_d16_n80", 80, 90, 16)])
    monkeypatch.setattr(bench_metrics, "KNN_CASES", {"cpu": [("PRDC_n50_d8_k3", 50, 8, 3), ("RADII_n60_d8_k3", 60, 8, 3)]})
    monkeypatch.setattr(bench_metrics, "EXTRACT_CASES", {"cpu": [("EXTRACT_inception-fid_B1", "inception-fid", 1)]})
    monkeypatch.delenv("FASTGAN_WEIGHTS_DIR", raising=False)  # untrained Inception: same work, no file
    assert bench_metrics.main(["--device", "cpu", "--budget", "0", "--out", str(tmp_path)]) == 0
    extract = [r for r in _rows(tmp_path / "metrics.csv")[1:] if r[common.HEADER.index("case")].startswith("EXTRACT")]
    assert len(extract) == 1 and extract[0][common.HEADER.index("unit")] == "img/s"
    assert float(extract[0][common.HEADER.index("throughput")]) > 0
    for fam, provs in (("metrics", bench_metrics.FD_PROVIDERS), ("knn", bench_metrics.KNN_PROVIDERS)):
        rows = _rows(tmp_path / f"{fam}.csv")
        assert rows[0] == common.HEADER
        got = {r[rows[0].index("provider")] for r in rows[1:]}
        assert got == set(provs) - {"triton", "cuda"}, (fam, got)  # no Triton (interpreter) or CUDA timings on CPU
    # the ref and cdist-topk providers compute the same numbers as the prdc package on these features
    real = bench_metrics.features(50, 8, 2, "cpu")
    fake = bench_metrics.features(50, 8, 3, "cpu", shift=0.05)
    from prdc import compute_prdc

    want = {k: float(v) for k, v in compute_prdc(real.double().numpy(), fake.double().numpy(), 3).items()}
    assert bench_metrics._knn_closure("ref", real, fake, 3)() == pytest.approx(want, abs=1e-12)
    assert bench_metrics._cdist_topk_prdc(real, fake, 3) == pytest.approx(want, abs=1e-6)
    # a family written in plain torch gets `ref` as its best provider in the report
    out = tmp_path / "perf.md"
    assert report.main(["--results", str(tmp_path), "--out", str(out)]) == 0
    line = next(ln for ln in out.read_text().splitlines() if ln.startswith("| FD_d16_n40 |"))
    assert "| ref |" in line and line.rstrip().endswith("x |")
    # both FD routes of the benchmark compute the same distance
    a, b = bench_metrics.features(80, 16, 0, "cpu"), bench_metrics.features(90, 16, 1, "cpu", shift=0.05)
    values = [bench_metrics._fd_closure(p, a, b)() for p in bench_metrics.FD_PROVIDERS]
    values += [bench_metrics._fd_stats_closure(p, a, b)() for p in bench_metrics.FD_PROVIDERS]
    assert max(values) - min(values) <= 1e-8 * max(values)


def test_report_summary_goes_between_the_readme_markers(tmp_path):
    from benchmarks import report

    rows = [dict(date="2026-01-01", commit="c", device="dev", torch="t", triton="", cuda="", family="modconv",
                 case=f"C{i}", provider=p, dtype="fp32", mode="fwd", median_ms=str(ms), p20_ms="", p80_ms="",
                 peak_mem_mb="", throughput="", unit="TFLOP/s")
            for i, (p, ms) in enumerate([("ref", 4.0), ("cpp", 2.0)]) for _ in [0]]
    rows = [dict(r, case="C0") for r in rows]
    table = report.summary(rows)
    assert "| dev | modconv | 2.00x | - |" in table
    readme = tmp_path / "R.md"
    readme.write_text("top\n<!-- perf:begin -->\nold\n<!-- perf:end -->\nbottom\n")
    assert report.update_readme(readme, table)
    text = readme.read_text()
    assert "old" not in text and table in text and text.startswith("top\n") and text.endswith("bottom\n")
    plain = tmp_path / "P.md"
    plain.write_text("no markers\n")
    assert not report.update_readme(plain, table) and plain.read_text() == "no markers\n"

"""Benchmark harness shared by every ``benchmarks/bench_<family>.py``.

* timing: on CUDA ``triton.testing.do_bench`` (median / p20 / p80; CUDA events when triton is missing); on CPU the
  median / p20 / p80 of wall-clock repeats after a warm-up, within a time budget, with the providers being compared
  run round-robin so that machine-load drift hits them alike. Never under TRITON_INTERPRET.
* peak memory: ``torch.cuda.max_memory_allocated`` above the memory in use before the call (CUDA only; on CPU a
  per-call peak is not measurable from Python, so the column is left empty).
* results: rows appended to ``benchmarks/results/<family>.csv`` in the one schema of DESIGN.md, with the date,
  git commit, device and versions.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import os
import pathlib
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HEADER = ["date", "commit", "device", "torch", "triton", "cuda", "family", "case", "provider", "dtype", "mode",
          "median_ms", "p20_ms", "p80_ms", "peak_mem_mb", "throughput", "unit"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def refuse_interpreter() -> None:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("benchmarks: TRITON_INTERPRET=1 is set; interpreter timings mean nothing. Unset it.")


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    peak_mem_mb: float


def _quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def measure(fn: Callable[[], object], device: str, budget_s: float = 1.0, min_reps: int = 3,
            setup: Optional[Callable[[], None]] = None) -> Timing:
    """Time ``fn`` (after ``setup`` each repeat, untimed). ``setup`` exists for backward-only timing."""
    return measure_group({"fn": (fn, setup)}, device, budget_s, min_reps)["fn"]


def measure_group(fns: dict, device: str, budget_s: float = 1.0, min_reps: int = 3) -> dict:
    """Time several ``name -> (fn, setup)`` closures that are compared with each other.

    On CPU the closures run round-robin (one repeat of each in turn) so that drifting machine load affects all of
    them alike; on CUDA each is timed on its own (GPU timings are stable and do_bench flushes caches).
    A closure that raises is reported as the exception instead of a Timing.
    """
    if device == "cuda":
        out = {}
        for name, (fn, setup) in fns.items():
            try:
                out[name] = _measure_cuda(fn, budget_s, setup)
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                out[name] = exc
        return out
    live, out, times = {}, {}, {name: [] for name in fns}
    for name, (fn, setup) in fns.items():
        try:
            if setup:
                setup()
            fn()  # warm-up (also compiles)
            live[name] = (fn, setup)
        except Exception as exc:  # noqa: BLE001
            out[name] = exc
    t_end = time.perf_counter() + budget_s * max(len(live), 1)
    reps = 0
    while live and (reps < min_reps or time.perf_counter() < t_end) and reps < 1000:
        for name, (fn, setup) in live.items():
            if setup:
                setup()
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
        reps += 1
    for name in live:
        ts = times[name]
        out[name] = Timing(statistics.median(ts), _quantile(ts, 0.2), _quantile(ts, 0.8), float("nan"))
    return out


def _measure_cuda(fn, budget_s, setup) -> Timing:
    torch.cuda.synchronize()
    if setup:
        setup()
    fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    if setup:
        setup()
    fn()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    if setup is None:
        try:
            from triton.testing import do_bench

            med, p20, p80 = do_bench(fn, quantiles=[0.5, 0.2, 0.8], rep=int(budget_s * 1000))
            return Timing(med, p20, p80, peak)
        except ImportError:
            pass
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t_end = time.perf_counter() + budget_s
    while len(times) < 5 or time.perf_counter() < t_end:
        if setup:
            setup()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
        if len(times) >= 1000:
            break
    return Timing(statistics.median(times), _quantile(times, 0.2), _quantile(times, 0.8), peak)


def mode_closures(forward: Callable[[], torch.Tensor], inputs: Sequence[torch.Tensor], mode: str):
    """(fn, setup) timing ``mode`` in fwd | bwd | fwdbwd for ``forward()`` whose grads flow to ``inputs``."""
    state: dict = {}

    def clear():
        for t in inputs:
            t.grad = None

    if mode == "fwd":  # the training forward: inputs require grad, so the graph is recorded
        return forward, None
    if mode == "fwdbwd":
        def fwdbwd():
            out = forward()
            out.backward(state.setdefault("g", torch.ones_like(out)))
            clear()
        return fwdbwd, None
    if mode == "bwd":
        def setup():
            state["out"] = forward()
            state.setdefault("g", torch.ones_like(state["out"]))
            clear()

        def bwd():
            state["out"].backward(state["g"])
        return bwd, setup
    raise ValueError(f"mode must be fwd, bwd or fwdbwd, got {mode!r}")


def environment(device: str) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if dirty and commit != "unknown":
            commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    if device == "cuda":
        dev = torch.cuda.get_device_name()
    else:
        model = platform.processor() or "cpu"
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        dev = f"{model} x{torch.get_num_threads()} threads"
    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = ""
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "device": dev, "torch": torch.__version__, "triton": tv, "cuda": torch.version.cuda or ""}


class CsvWriter:
    """Appends rows to ``<out>/<family>.csv``; writes the header for a new file, refuses a different header."""

    def __init__(self, out_dir: pathlib.Path, env: dict):
        self.out_dir, self.env = pathlib.Path(out_dir), env
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def path(self, family: str) -> pathlib.Path:
        return self.out_dir / f"{family}.csv"

    def write(self, family: str, case: str, provider: str, dtype: str, mode: str, t: Timing,
              throughput: float, unit: str) -> None:
        path = self.path(family)
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            with path.open(newline="") as f:
                header = next(csv.reader(f), None)
            if header != HEADER:
                raise SystemExit(f"{path}: header {header} differs from the benchmark schema {HEADER}; "
                                 "move the file away instead of mixing schemas")
        row = dict(self.env, family=family, case=case, provider=provider, dtype=dtype, mode=mode,
                   median_ms=f"{t.median_ms:.5g}", p20_ms=f"{t.p20_ms:.5g}", p80_ms=f"{t.p80_ms:.5g}",
                   peak_mem_mb="" if math.isnan(t.peak_mem_mb) else f"{t.peak_mem_mb:.1f}",
                   throughput=f"{throughput:.4g}", unit=unit)
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=HEADER)
            if new:
                w.writeheader()
            w.writerow(row)


def parser(description: str, providers: Sequence[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtypes", default=None, help="comma list of fp32,fp16,bf16 (default depends on the device)")
    p.add_argument("--modes", default="fwd,bwd,fwdbwd")
    p.add_argument("--providers", default=",".join(providers))
    p.add_argument("--cases", default="", help="only cases whose name contains one of these comma-separated strings")
    p.add_argument("--budget", type=float, default=None, help="seconds per measurement")
    p.add_argument("--out", type=pathlib.Path, default=RESULTS)
    p.add_argument("--dry-run", action="store_true", help="print the plan and time nothing")
    return p

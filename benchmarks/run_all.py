"""Run every benchmark family (``benchmarks/bench_*.py``) and regenerate docs/performance.md.

    python benchmarks/run_all.py [--device cpu|cuda] [--only modconv,synth] [--budget S] [--out DIR]
                                 [--dry-run] [--no-report] [--timeout S]

Each family runs in its own Python process (a CUDA error or a crash in one family cannot take the others down) with
its full case list: the arguments in the module's ``RUN_ALL_ARGS`` plus the shared ones given here. A failing
family is reported and the rest still run; the exit status is 1 when any family failed. Rows are appended to
``<out>/<family>.csv`` by the family scripts themselves, so a failure never loses rows already written.
"""
from __future__ import annotations

import argparse
import ast
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"


def families(bench_dir: pathlib.Path = BENCH_DIR) -> dict[str, pathlib.Path]:
    """{family script name without ``bench_``: path}, sorted by name."""
    return {p.stem[len("bench_"):]: p for p in sorted(bench_dir.glob("bench_*.py"))}


def run_all_args(path: pathlib.Path) -> list[str]:
    """The module-level ``RUN_ALL_ARGS = [...]`` of a family script (read without importing it)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "RUN_ALL_ARGS"
                                                for t in node.targets):
            value = ast.literal_eval(node.value)
            if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
                raise SystemExit(f"{path.name}: RUN_ALL_ARGS must be a list of strings")
            return list(value)
    return []


def main(argv=None, bench_dir: pathlib.Path = BENCH_DIR) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="passed to every family (default: each family's own default, CUDA when visible)")
    ap.add_argument("--only", default="", help="comma list of families to run (default: all)")
    ap.add_argument("--budget", type=float, default=None, help="seconds per measurement, passed to every family")
    ap.add_argument("--out", type=pathlib.Path, default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--dry-run", action="store_true", help="print each family's plan and time nothing")
    ap.add_argument("--no-report", action="store_true", help="do not regenerate docs/performance.md")
    ap.add_argument("--timeout", type=float, default=None, help="seconds allowed per family")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("run_all: TRITON_INTERPRET=1 is set; interpreter timings mean nothing. Unset it.")

    fams = families(bench_dir)
    if not fams:
        raise SystemExit(f"run_all: no bench_*.py scripts in {bench_dir}")
    chosen = [f.strip() for f in args.only.split(",") if f.strip()] or list(fams)
    unknown = [f for f in chosen if f not in fams]
    if unknown:
        ap.error(f"unknown families {unknown}; available: {', '.join(fams)}")

    shared = []
    if args.device:
        shared += ["--device", args.device]
    if args.budget is not None:
        shared += ["--budget", str(args.budget)]
    if args.out is not None:
        shared += ["--out", str(args.out)]
    if args.dry_run:
        shared += ["--dry-run"]

    summary = []
    for fam in chosen:
        cmd = [sys.executable, str(fams[fam])] + run_all_args(fams[fam]) + shared
        print(f"== {fam}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        summary.append((fam, rc, time.perf_counter() - t0))

    print("\nfamily       status      seconds")
    for fam, rc, secs in summary:
        print(f"{fam:12s} {('ok' if rc == 0 else f'FAILED ({rc})'):11s} {secs:7.1f}")
    failed = [fam for fam, rc, _ in summary if rc != 0]

    if not args.dry_run and not args.no_report:
        if args.out is None:
            from benchmarks import report

            report.main([])
        else:  # docs/performance.md describes benchmarks/results only
            print(f"results in {args.out}; docs/performance.md left as it is (it is built from benchmarks/results)")
    if failed:
        print(f"run_all: {len(failed)} of {len(summary)} families failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())

"""Benchmark of Primitives-PS synthesis (family ``synth``): images per second, whole pipeline and its stages.

Cases ``R{res}_B{batch}_{what}`` at 32, 64, 128 and 256 px, where ``what`` is a variant (the whole pipeline,
mode ``e2e``: spectral background, shape table, texture, rasterisation, uint8 out) or a stage (mode ``fwd``):
``noise`` (``power_spectrum_noise``, one RGB field per image) and ``raster`` (``rasterize_shapes`` of a
101-row table with the salient texture, tables and textures made beforehand). Providers: ``ref``, ``cpp``,
``cuda``, ``triton``, ``baseline-official`` (the faithful numpy + OpenCV re-implementation of the official
generator, one process) and ``baseline-official-pool`` (the same over a process pool with one worker per core,
how its DataLoader would run it). Throughput is images/s.

Targets (benchmark, not test): H100 >= 50,000 img/s at 256 px for full Primitives-PS, i.e. >= 100x the official
loader on that machine's 16 cores; CPU ``cpp`` >= 3x the official re-implementation per core.

    python benchmarks/bench_synth.py [--device cpu|cuda] [--cases R256] [--variants primitives-ps] [--dry-run]
"""
from __future__ import annotations

import os
import pathlib
import sys
from concurrent.futures import ProcessPoolExecutor

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import CsvWriter, environment, measure_group, parser, refuse_interpreter  # noqa: E402

from fastgan import ops  # noqa: E402
from fastgan.synth import PrimitivesPS, resolve_variant  # noqa: E402
from fastgan.synth import official as O  # noqa: E402

PROVIDERS = ["ref", "cpp", "cuda", "triton", "baseline-official", "baseline-official-pool"]
RESOLUTIONS = [32, 64, 128, 256]
# benchmarks/run_all.py: every variant and both stages
RUN_ALL_ARGS = ["--variants", "primitives-ps,primitives-s,primitives,pinknoise,noise,raster"]
STAGES = ("noise", "raster")


def _batch(device: str, res: int, provider: str) -> int:
    if provider == "baseline-official":
        return 4
    if provider == "baseline-official-pool":
        return 8 * (os.cpu_count() or 1)
    if device == "cuda":
        return 256
    return 16 if provider != "ref" or res < 256 else 4


def _impl_reason(provider: str, device: str):
    if provider.startswith("baseline"):
        if device != "cpu":
            return "the official generator runs on the CPU (run with --device cpu)"
        try:
            import cv2  # noqa: F401
        except ImportError:
            return "needs opencv-python-headless"
        return None
    for op in ("synth_spectral_field", "synth_minmax_quantize", "rasterize_shapes"):
        why = ops.why_unavailable(op, provider, device)
        if why:
            return why
    return None


def _closure(what: str, provider: str, res: int, n: int, device: str, pool):
    if provider == "baseline-official":
        if what in STAGES:
            return None
        gen = O.OfficialGenerator(res, what, seed=0)
        return lambda: gen.images(0, n)
    if provider == "baseline-official-pool":
        if what in STAGES:
            return None
        workers = os.cpu_count() or 1
        chunk = max(1, n // workers)
        jobs = [(res, what, 0, 100, s, chunk) for s in range(0, n, chunk)]
        return lambda: list(pool.map(O._pool_worker, jobs))
    if what == "noise":
        return lambda: ops.power_spectrum_noise(n, res, seed=0, device=device, impl=provider)
    if what == "raster":
        gen = PrimitivesPS(res, seed=0, device=device, impl=provider)
        table = gen.shape_table(0, n)
        canvas = ops.power_spectrum_noise(n, res, seed=0, device=device, impl=provider)
        texture = ops.power_spectrum_noise(n, res, seed=0, stream=1, device=device, impl=provider)
        return lambda: ops.rasterize_shapes(canvas, table, texture=texture, impl=provider)
    gen = PrimitivesPS.variant(what, res, seed=0, device=device, impl=provider)
    return lambda: gen.images(0, n)


def main(argv=None) -> int:
    refuse_interpreter()
    p = parser(__doc__.splitlines()[0], PROVIDERS)
    p.add_argument("--variants", default="primitives-ps", help="comma list of variants and/or stages (noise,raster)")
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible")
    whats = [w if w in STAGES else resolve_variant(w) for w in args.variants.split(",")]
    providers = args.providers.split(",")
    budget = args.budget if args.budget is not None else (0.5 if device == "cuda" else 2.0)
    res_list = [r for r in RESOLUTIONS if not args.cases or any(s == f"R{r}" for s in args.cases.split(","))]
    plan = [(r, w, pr) for r in res_list for w in whats for pr in providers]
    if args.dry_run:
        for r, w, pr in plan:
            print(f"R{r:<4d} {w:14s} {pr:24s} batch {_batch(device, r, pr)}")
        print(f"{len(plan)} measurements planned")
        return 0
    writer = CsvWriter(args.out, environment(device))
    skipped: dict[str, str] = {}
    results: dict[tuple, float] = {}
    pool = ProcessPoolExecutor(max_workers=os.cpu_count() or 1) if "baseline-official-pool" in providers else None
    print(f"{'case':28s} {'provider':24s} {'median ms':>10s} {'img/s':>10s}")
    try:
        for r in res_list:
            for what in whats:
                closures, sizes = {}, {}
                for prov in providers:
                    why = _impl_reason(prov, device)
                    if why:
                        skipped[prov] = why
                        continue
                    n = _batch(device, r, prov)
                    fn = _closure(what, prov, r, n, device, pool)
                    if fn is None:
                        continue
                    closures[prov], sizes[prov] = (fn, None), n
                for prov, t in measure_group(closures, device, budget, min_reps=2).items():
                    case = f"R{r}_B{sizes[prov]}_{what}"
                    if isinstance(t, Exception):
                        skipped[f"{case}/{prov}"] = f"{type(t).__name__}: {t}".splitlines()[0]
                        continue
                    ips = sizes[prov] / (t.median_ms * 1e-3)
                    mode = "fwd" if what in STAGES else "e2e"
                    writer.write("synth", case, prov, "uint8", mode, t, ips, "img/s")
                    results[(r, what, prov)] = ips
                    print(f"{case:28s} {prov:24s} {t.median_ms:10.3f} {ips:10.1f}", flush=True)
    finally:
        if pool is not None:
            pool.shutdown()
    for k, v in sorted(skipped.items()):
        print(f"skipped {k}: {v}")
    print("\nspeed-up of fastgan over the official generator (img/s ratio):")
    cores = torch.get_num_threads()
    for (r, what, prov), ips in sorted(results.items()):
        if prov.startswith("baseline"):
            continue
        parts = []
        for base in ("baseline-official", "baseline-official-pool"):
            if (r, what, base) in results:
                parts.append(f"vs {base} {ips / results[(r, what, base)]:.1f}x")
        if prov == "cpp" and (r, what, "baseline-official") in results:
            parts.append(f"per core vs 1-process official {ips / cores / results[(r, what, 'baseline-official')]:.2f}x"
                         f" ({cores} threads)")
        if parts:
            print(f"  R{r:<4d} {what:14s} {prov:7s} " + ", ".join(parts))
    print(f"results appended to {writer.path('synth')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

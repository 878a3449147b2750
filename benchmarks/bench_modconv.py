"""Benchmark of the modulated-conv (family ``modconv``) and AdaFM-conv (family ``adafm``) kernels.

Cases are StyleGAN2-256 generator layers, 3x3: 512 channels at 4-64 px, 256 at 128 px, 128 at 256 px, batch 32 on
GPU; on CPU the same layers with batch 4 up to 64 px (the case name states the real shape). Providers: ``ref``
(grouped conv with per-sample weights), ``compile`` (torch.compile of ``ref``), ``cpp``, ``cuda``, ``triton``,
``baseline-decomposed`` (StyleGAN2's non-fused path in plain torch); for AdaFM ``baseline-cudnn`` is a plain conv
of the same shape that trains its weight, i.e. the same convolution work as AdaFM's input gradient plus dW'
(AdaFM's target: within 1.1x of it). AdaFM is timed as it trains in transfer: frozen weight, trainable
gamma/beta, input gradient needed.

    python benchmarks/bench_modconv.py [--device cpu|cuda] [--dtypes fp32,bf16] [--modes fwdbwd] [--dry-run]
"""
from __future__ import annotations

import pathlib
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import (DTYPES, CsvWriter, environment, measure_group, mode_closures, parser,  # noqa: E402
                               refuse_interpreter)

from fastgan import ops  # noqa: E402
from fastgan.ops.modconv import _adafm_conv2d_ref, _modulated_conv2d_decomposed, _modulated_conv2d_ref  # noqa: E402

PROVIDERS = ["ref", "compile", "cpp", "cuda", "triton", "baseline-decomposed", "baseline-cudnn"]
LAYERS = [(512, 4), (512, 8), (512, 16), (512, 32), (512, 64), (256, 128), (128, 256)]


def cases(device: str) -> list[tuple[str, int, int, int]]:
    if device == "cuda":
        return [(f"N32_C{c}_R{r}_k3", 32, c, r) for c, r in LAYERS]
    return [(f"N4_C{c}_R{r}_k3", 4, c, r) for c, r in LAYERS if r <= 64]


def _flops(n, c, r, mode):
    conv = 2.0 * n * c * c * 9 * r * r
    return conv * {"fwd": 1, "bwd": 2, "fwdbwd": 3}[mode]


def _provider_fn(family, provider, device):
    """The callable for one provider, or (None, reason) when it cannot run here."""
    if family == "modconv":
        op, ref = "modulated_conv2d", _modulated_conv2d_ref
        if provider == "baseline-decomposed":
            return _modulated_conv2d_decomposed, None
        if provider == "baseline-cudnn":
            return None, "AdaFM-only baseline"
    else:
        op, ref = "adafm_conv2d", _adafm_conv2d_ref
        if provider == "baseline-cudnn":  # called with a weight that requires grad (see main)
            return (lambda x, w, g, b: F.conv2d(x, w, padding=1)), None
        if provider == "baseline-decomposed":
            return None, "modconv-only baseline"
    if provider == "ref":
        return ref, None
    if provider == "compile":
        try:  # static shapes: one specialised graph per case, as a training job would compile
            return torch.compile(ref, dynamic=False), None
        except Exception as exc:  # pragma: no cover - depends on the platform
            return None, f"torch.compile failed: {exc}"
    if device == "cpu" and provider == "triton":
        return None, "Triton runs on CPU only under its interpreter (timings meaningless)"
    why = ops.why_unavailable(op, provider, device)
    if why is not None:
        return None, why
    fn = ops.modulated_conv2d if family == "modconv" else ops.adafm_conv2d
    return (lambda *a: fn(*a, impl=provider)), None


def main(argv=None) -> int:
    refuse_interpreter()
    args = parser(__doc__.splitlines()[0], PROVIDERS).parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible")
    dtypes = (args.dtypes or ("fp32,fp16,bf16" if device == "cuda" else "fp32")).split(",")
    modes = args.modes.split(",")
    providers = args.providers.split(",")
    budget = args.budget if args.budget is not None else (0.5 if device == "cuda" else 1.0)
    selected = [c for c in cases(device) if not args.cases or any(s in c[0] for s in args.cases.split(","))]
    if device == "cpu" and "fp16" in dtypes:
        print("note: fp16 convolution on CPU is very slow in torch itself; timing it anyway")
    plan = [(fam, c, p, dt, m) for fam in ("modconv", "adafm") for c in selected for p in providers
            for dt in dtypes for m in modes]
    if args.dry_run:
        for fam, c, p, dt, m in plan:
            print(f"{fam:8s} {c[0]:18s} {p:20s} {dt:5s} {m}")
        print(f"{len(plan)} measurements planned")
        return 0
    torch.backends.cudnn.benchmark = True
    # one compiled graph per (case, dtype, mode): keep dynamo from falling back to eager after 8 recompiles
    import torch._dynamo.config as dynamo_config

    for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                 "accumulated_recompile_limit"):
        if hasattr(dynamo_config, knob):
            setattr(dynamo_config, knob, max(getattr(dynamo_config, knob), 512))
    writer = CsvWriter(args.out, environment(device))
    skipped: dict[str, str] = {}
    summary: dict[tuple, dict[str, float]] = {}
    print(f"{'family':8s} {'case':18s} {'provider':20s} {'dtype':5s} {'mode':7s} {'median ms':>10s} {'TFLOP/s':>8s}")
    for fam in ("modconv", "adafm"):
        for name, n, c, r in selected:
            for dt_name in dtypes:
                dt = DTYPES[dt_name]
                g = torch.Generator(device="cpu").manual_seed(0)
                x = torch.randn(n, c, r, r, generator=g).to(device, dt).requires_grad_(True)
                w = torch.randn(c, c, 3, 3, generator=g).to(device, dt)
                if fam == "modconv":
                    w.requires_grad_(True)
                    s = torch.randn(n, c, generator=g).to(device, dt).requires_grad_(True)
                    inputs, params = (x, w, s), (x, w, s)
                else:
                    gamma = torch.ones(c, c, device=device, dtype=dt, requires_grad=True)
                    beta = torch.zeros(c, c, device=device, dtype=dt, requires_grad=True)
                    inputs, params = (x, w, gamma, beta), (x, gamma, beta)
                closures: dict[str, dict] = {m: {} for m in modes}
                for prov in providers:
                    fn, why = _provider_fn(fam, prov, device)
                    if fn is None:
                        skipped[f"{fam}/{prov}"] = why
                        continue
                    call_inputs, grads_to = inputs, params
                    if prov == "baseline-cudnn":  # a plain conv training its weight: gradients for x and weight
                        wt = w.detach().clone().requires_grad_(True)
                        call_inputs, grads_to = (x, wt) + tuple(inputs[2:]), (x, wt)
                    for mode in modes:
                        closures[mode][prov] = mode_closures(lambda fn=fn, a=call_inputs: fn(*a), grads_to, mode)
                for mode in modes:
                    for prov, t in measure_group(closures[mode], device, budget).items():
                        if isinstance(t, Exception):
                            skipped[f"{fam}/{prov}/{dt_name}/{mode}"] = f"{type(t).__name__}: {t}".splitlines()[0]
                            continue
                        tflops = _flops(n, c, r, mode) / (t.median_ms * 1e-3) / 1e12
                        writer.write(fam, name, prov, dt_name, mode, t, tflops, "TFLOP/s")
                        summary.setdefault((fam, name, dt_name, mode), {})[prov] = t.median_ms
                        print(f"{fam:8s} {name:18s} {prov:20s} {dt_name:5s} {mode:7s} {t.median_ms:10.3f} "
                              f"{tflops:8.3f}", flush=True)
    for k, v in sorted(skipped.items()):
        print(f"skipped {k}: {v}")
    print("\nspeed-up of the best fastgan kernel (cpp/cuda/triton):")
    for (fam, name, dt_name, mode), ms in sorted(summary.items()):
        fused = {p: v for p, v in ms.items() if p in ("cpp", "cuda", "triton")}
        if not fused:
            continue
        best = min(fused, key=fused.get)
        parts = [f"vs {b} {ms[b] / fused[best]:.2f}x" for b in ms if b not in fused]
        print(f"  {fam:8s} {name:18s} {dt_name:5s} {mode:7s} best={best:6s} " + ", ".join(parts))
    print(f"results appended to {writer.path('modconv')} and {writer.path('adafm')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

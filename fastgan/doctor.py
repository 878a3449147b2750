"""`fastgan doctor`: versions, build information, which impl of each op can run where, and a quick parity
check of every runnable impl against the op's reference (exit status 1 on any mismatch or crash)."""
from __future__ import annotations

import platform
import sys
import traceback
from typing import Callable, Optional

import torch

import fastgan
from fastgan import ops
from fastgan.testing import check_against_ref


def _modconv_case(device: str) -> tuple[Callable, tuple, tuple[bool, ...]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 9, 7, generator=g)
    w = torch.randn(6, 5, 3, 3, generator=g)
    s = torch.randn(3, 5, generator=g)
    return (lambda a, b, c, impl: ops.modulated_conv2d(a, b, c, impl=impl)), tuple(t.to(device) for t in (x, w, s)), \
        (True, True, True)


def _adafm_case(device: str) -> tuple[Callable, tuple, tuple[bool, ...]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 9, 7, generator=g)
    w = torch.randn(6, 5, 3, 3, generator=g)
    gamma = 1 + 0.2 * torch.randn(6, 5, generator=g)
    beta = 0.1 * torch.randn(6, 5, generator=g)
    bias = torch.randn(6, generator=g)
    return (lambda a, b, c, d, e, impl: ops.adafm_conv2d(a, b, c, d, e, stride=2, impl=impl)), \
        tuple(t.to(device) for t in (x, w, gamma, beta, bias)), (True, False, True, True, True)


def _vision_preprocess_case(device: str) -> tuple[Callable, tuple, tuple[bool, ...]]:
    from fastgan.train import rng
    from fastgan.train.augment import diffaugment_params

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 7, generator=g) * 2 - 1
    params = diffaugment_params(rng.sample_keys(0, range(2)), "color,translation,cutout", 9, 7).to(device)
    return (lambda a, impl: ops.vision_preprocess(a, params, 12, impl=impl)), (x.to(device),), (True,)


def _exact_inputs():
    from fastgan.ops import jacvol as J
    from fastgan.ops import synth as S

    g = torch.Generator().manual_seed(0)
    keys = S.rng_keys(1, torch.arange(2), 0)
    exps = S.spectral_exponents(2, seed=1)
    kinds = torch.tensor([1.0, 2, 3, 4, 9, 10, 11, 12])[torch.randint(0, 8, (2, 9), generator=g)]
    table = torch.cat([kinds.unsqueeze(-1), torch.randint(0, 256, (2, 9, 3), generator=g).float(),
                       torch.randint(-2, 20, (2, 9, 4), generator=g).float(),
                       torch.randint(1, 90, (2, 9, 1), generator=g).float(), torch.zeros(2, 9, 1)], dim=-1)
    canvas = torch.randint(0, 256, (2, 3, 17, 15), dtype=torch.uint8, generator=g)
    texture = torch.randint(0, 256, (2, 3, 17, 15), dtype=torch.uint8, generator=g)
    points = torch.randn(70, 24, generator=g)
    return {"synth_spectral_field": ((keys, exps, 16), 5e-5),
            "synth_minmax_quantize": ((torch.randn(2, 3, 9, 8, generator=g),), 0.0),
            "rasterize_shapes": ((canvas, table, texture), 0.0),
            "knn_radii": ((points, 3), 1e-4),  # float32 kernels vs the float64 reference
            # x G^T for a 6 x 300 Gaussian block (float32 entries from each impl's own math library)
            "random_projection": ((torch.randn(3, 300, generator=g), J.row_keys(0, 6), 300, False), 1e-4),
            "log_singular_values": ((torch.randn(4, 6, 9, generator=g), 5), 1e-6)}


# one small case per differentiable op: (fn(*inputs, impl=...), inputs, which inputs get gradients)
PARITY_CASES: dict[str, Callable[[str], tuple]] = {
    "modulated_conv2d": _modconv_case,
    "adafm_conv2d": _adafm_case,
    "vision_preprocess": _vision_preprocess_case,
}
# ops without gradients, compared with their reference on the CPU: bit-equal (tolerance 0) or max relative error
EXACT_OPS = ("synth_spectral_field", "synth_minmax_quantize", "rasterize_shapes", "knn_radii", "random_projection",
             "log_singular_values")


def _exact_parity(op_name: str, impl: str, device: str) -> Optional[str]:
    from fastgan.ops import _dispatch

    args, tol = _exact_inputs()[op_name]
    try:
        want = _dispatch._OPS[op_name].impls["ref"].fn(*args)
        got = _dispatch._OPS[op_name].impls[impl].fn(*[a.to(device) if isinstance(a, torch.Tensor) else a
                                                       for a in args]).cpu()
    except Exception as exc:  # report, never crash the doctor
        return f"raised {type(exc).__name__}: {exc}".splitlines()[0]
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"out: shape/dtype {tuple(got.shape)} {got.dtype} != reference {tuple(want.shape)} {want.dtype}"
    if tol == 0:
        bad = int((got != want).sum())
        return None if bad == 0 else f"out: {bad} of {want.numel()} elements differ from the reference"
    err = ((got - want).abs() / (want.abs() + 1e-6 * want.abs().max())).max().item()
    return None if err <= tol else f"out: relative error {err:.3g} > {tol:g}"


def parity(op_name: str, impl: str, device: str) -> Optional[str]:
    """None when ``impl`` matches the float64 reference (output and gradients) on a small case, else why not."""
    if op_name in EXACT_OPS:
        return _exact_parity(op_name, impl, device)
    fn, inputs, needs = PARITY_CASES[op_name](device)
    try:
        results = []
        for dt, im in ((torch.float64, "ref"), (torch.float32, impl)):
            ins = [t.to(dt).requires_grad_(r) for t, r in zip(inputs, needs)]
            out = fn(*ins, impl=im)
            gout = torch.linspace(-1, 1, out.numel(), dtype=dt, device=out.device).reshape(out.shape)
            grads = torch.autograd.grad(out, [t for t in ins if t.requires_grad], gout)
            results.append((out, grads))
    except Exception as exc:  # report, never crash the doctor
        return f"raised {type(exc).__name__}: {exc}".splitlines()[0]
    (o64, g64), (o, g) = results
    for name, a, b in [("out", o, o64)] + [(f"grad[{i}]", a, b) for i, (a, b) in enumerate(zip(g, g64))]:
        msg = check_against_ref(name, a, b)
        if msg:
            return msg
    return None


def _versions() -> list[tuple[str, str]]:
    rows = [("python", sys.version.split()[0]), ("platform", platform.platform()), ("fastgan", fastgan.__version__),
            ("torch", torch.__version__), ("torch CUDA", str(torch.version.cuda))]
    try:
        import triton

        rows.append(("triton", triton.__version__))
    except Exception as exc:
        rows.append(("triton", f"not importable ({type(exc).__name__})"))
    import numpy

    rows.append(("numpy", numpy.__version__))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rows.append((f"cuda:{i}", f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB"))
    else:
        rows.append(("cuda devices", "none visible"))
    return rows


def run(devices: Optional[list[str]] = None, out=sys.stdout) -> int:
    def p(*a):
        print(*a, file=out)

    p("fastgan doctor")
    p("== versions")
    for k, v in _versions():
        p(f"  {k:14s} {v}")
    p("== compiled extension (fastgan._C)")
    info = fastgan.build_info()
    if info.get("loaded"):
        for k in ("compiler", "torch", "cuda", "cuda_archs", "openmp", "debug"):
            p(f"  {k:14s} {info.get(k)}")
        for fam, backends in sorted(info["families"].items()):
            p(f"  family {fam:7s} {', '.join(backends)}")
        if info.get("torch") != torch.__version__:
            p(f"  WARNING: built against torch {info.get('torch')} but running {torch.__version__}; rebuild with "
              "`pip install -e . --no-build-isolation --no-deps`")
    else:
        p(f"  not loaded: {info.get('error')}")
        p("  (every op still works through its reference or Triton kernels; rebuild with "
          "`pip install -e . --no-build-isolation --no-deps -v` to see the compiler's error)")
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    failures = 0
    for dev in devices:
        p(f"== ops on {dev}")
        for op in ops.list_ops():
            avail = ops.available_impls(op, dev)
            p(f"  {op}: available {', '.join(avail) or 'none'}")
            for impl in ("ref", "cpp", "cuda", "triton"):
                why = ops.why_unavailable(op, impl, dev)
                if why is not None:
                    p(f"    {impl:7s} -- {why}")
                    continue
                if op not in PARITY_CASES and op not in EXACT_OPS:
                    p(f"    {impl:7s} ok (no parity case)")
                    continue
                try:
                    err = parity(op, impl, dev)
                except Exception:  # pragma: no cover - parity() already catches
                    err = traceback.format_exc().splitlines()[-1]
                if err is None:
                    p(f"    {impl:7s} parity ok")
                else:
                    failures += 1
                    p(f"    {impl:7s} PARITY FAILED: {err}")
    report = ops.dispatch_report()
    if report:
        p("== auto choices made in this process")
        for k, v in sorted(report.items()):
            p(f"  {k}: {v['chosen']}" + (f" (skipped {v['skipped']})" if v["skipped"] else ""))
    p(f"== {'all parity checks passed' if failures == 0 else f'{failures} parity check(s) FAILED'}")
    return 0 if failures == 0 else 1

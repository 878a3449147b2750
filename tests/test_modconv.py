"""modulated_conv2d / adafm_conv2d: every impl's output and gradients against the float64 reference."""
from __future__ import annotations

import itertools

import pytest
import torch

from fastgan import ops
from fastgan.ops.modconv import _modulated_conv2d_decomposed, _modulated_conv2d_ref
from fastgan.testing import assert_against_ref
from modconv_cases import adafm_inputs, adafm_reference, as_leaf, grads_of, modconv_inputs, modconv_reference

H, W = 7, 5  # odd spatial sizes everywhere
CHANNELS = [(3, 5), (4, 6)]  # odd and even (Cin, Cout)

FULL_GRID = list(itertools.product([torch.float32, torch.float16], [1, 3, 8], CHANNELS, [1, 3], [True, False],
                                   [False, True]))
# The Triton interpreter costs ~ms per program: a covering subset of the grid (every value of every axis,
# every pair of dtype x flag).
TRITON_GRID = [
    (torch.float32, 1, (3, 5), 3, True, False), (torch.float32, 3, (4, 6), 1, False, True),
    (torch.float32, 8, (3, 5), 1, True, True), (torch.float32, 3, (3, 5), 3, False, False),
    (torch.float16, 1, (4, 6), 3, False, True), (torch.float16, 3, (3, 5), 3, True, False),
    (torch.float16, 8, (4, 6), 1, True, False), (torch.float16, 3, (4, 6), 3, False, True),
]


def _need(impl, device="cpu"):
    reason = ops.why_unavailable("modulated_conv2d", impl, device)
    if reason is not None and device == "cuda" and impl == "cuda" and "without CUDA" in reason:
        pytest.skip(f"CUDA kernels not built on this GPU machine: {reason}")
    if reason is not None:
        pytest.fail(f"impl {impl!r} should be available in the test environment: {reason}")


def _ids(p):
    dt, n, (ci, co), k, demod, nc = p
    return f"{str(dt)[6:]}-N{n}-C{ci}to{co}-k{k}-{'demod' if demod else 'nodemod'}{'-noncontig' if nc else ''}"


def _check_modconv(impl, params, device="cpu"):
    dtype, n, (cin, cout), k, demod, noncontig = params
    x, weight, styles = modconv_inputs(n, cin, cout, k, H, W, dtype, device, noncontig)
    pad = (k // 2, k // 2)
    grad_out = torch.randn(n, cout, H, W, dtype=torch.float64).to(device=device, dtype=dtype)
    out64, g64, outlp, glp = modconv_reference(x, weight, styles, demod, pad, grad_out)
    ins = [as_leaf(t, dtype) for t in (x, weight, styles)]
    if noncontig:  # keep the non-contiguous layout through as_leaf
        ins[0] = x.detach().requires_grad_(True)
        ins[2] = styles.detach().requires_grad_(True)
    out, grads = grads_of(lambda a, b, c: ops.modulated_conv2d(a, b, c, demodulate=demod, impl=impl), ins, grad_out)
    assert out.dtype == dtype
    assert_against_ref("out", out, out64, outlp)
    for name, g, r64, rlp in zip(("grad_x", "grad_weight", "grad_styles"), grads, g64, glp):
        assert_against_ref(name, g, r64, rlp)


@pytest.mark.parametrize("params", FULL_GRID, ids=_ids)
def test_modconv_cpp(params):
    _need("cpp")
    _check_modconv("cpp", params)


@pytest.mark.parametrize("params", TRITON_GRID, ids=_ids)
def test_modconv_triton_interpreter(params):
    _need("triton")
    _check_modconv("triton", params)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton", "ref"])
@pytest.mark.parametrize("params", FULL_GRID + [(torch.bfloat16,) + p[1:] for p in TRITON_GRID], ids=_ids)
def test_modconv_gpu(impl, params):
    _need(impl, "cuda")
    _check_modconv(impl, params, "cuda")


@pytest.mark.parametrize("params", TRITON_GRID[:4], ids=_ids)
def test_modconv_ref_equals_decomposed(params):
    """The grouped-conv definition and the fused (activation-scaling) form agree in float64."""
    _, n, (cin, cout), k, demod, nc = params
    x, w, s = modconv_inputs(n, cin, cout, k, H, W, torch.float64, "cpu", nc)
    torch.testing.assert_close(_modulated_conv2d_ref(x, w, s, demod), _modulated_conv2d_decomposed(x, w, s, demod),
                               rtol=1e-12, atol=1e-12)


def test_modconv_fp16_large_styles_stay_finite():
    """Styles of 1e4 would overflow fp16 activations without the exact power-of-two rescaling."""
    x, w, s = modconv_inputs(2, 4, 6, 3, H, W, torch.float16, "cpu")
    s = s * 1e4
    out = ops.modulated_conv2d(x, w, s, impl="cpp")
    ref = _modulated_conv2d_ref(x.double(), w.double(), s.double())
    assert torch.isfinite(out).all()
    assert_against_ref("out", out, ref)


# ---- AdaFM ------------------------------------------------------------------------------------------------
ADAFM_GRID = list(itertools.product([torch.float32, torch.float16], [1, 3, 8], CHANNELS, [1, 3], [1, 2],
                                    [True, False], ["frozen", "trainable", "all-frozen"], [False, True]))
ADAFM_TRITON_GRID = [
    (torch.float32, 1, (3, 5), 3, 1, True, "frozen", False), (torch.float32, 3, (4, 6), 3, 2, False, "trainable", True),
    (torch.float32, 8, (3, 5), 1, 2, True, "all-frozen", False), (torch.float16, 3, (4, 6), 3, 1, True, "frozen", True),
    (torch.float16, 1, (3, 5), 1, 2, False, "trainable", False), (torch.float16, 3, (3, 5), 3, 2, True, "frozen", False),
]


def _adafm_ids(p):
    dt, n, (ci, co), k, st, bias, mode, nc = p
    return f"{str(dt)[6:]}-N{n}-C{ci}to{co}-k{k}-s{st}-{'bias' if bias else 'nobias'}-{mode}{'-noncontig' if nc else ''}"


def _check_adafm(impl, params, device="cpu"):
    dtype, n, (cin, cout), k, stride, bias, mode, noncontig = params
    inputs = adafm_inputs(n, cin, cout, k, H, W, dtype, device, bias, noncontig)
    # (x, weight, gamma, beta, bias) requires_grad per mode; "all-frozen" = before gamma/beta are unfrozen
    needs = {"frozen": (True, False, True, True, True), "trainable": (True, True, True, True, True),
             "all-frozen": (True, False, False, False, False)}[mode]
    pad = (k // 2, k // 2)
    ho, wo = (H + 2 * pad[0] - k) // stride + 1, (W + 2 * pad[1] - k) // stride + 1
    grad_out = torch.randn(n, cout, ho, wo, dtype=torch.float64).to(device=device, dtype=dtype)
    out64, g64, outlp, glp = adafm_reference(inputs, needs, stride, pad, grad_out)
    ins = [None if t is None else t.detach().requires_grad_(r) for t, r in zip(inputs, needs)]
    out, grads = grads_of(lambda a, b, c, d, e: ops.adafm_conv2d(a, b, c, d, e, stride=stride, impl=impl), ins,
                          grad_out)
    assert_against_ref("out", out, out64, outlp)
    names = ("grad_x", "grad_weight", "grad_gamma", "grad_beta", "grad_bias")
    for name, g, r64, rlp, t, need in zip(names, grads, g64, glp, ins, needs):
        if t is None or not need:  # frozen (or absent) input: no gradient at all
            assert g is None, name
            continue
        assert_against_ref(name, g, r64, rlp)


@pytest.mark.parametrize("params", ADAFM_GRID, ids=_adafm_ids)
def test_adafm_cpp(params):
    _need("cpp")
    _check_adafm("cpp", params)


@pytest.mark.parametrize("params", ADAFM_TRITON_GRID, ids=_adafm_ids)
def test_adafm_triton_interpreter(params):
    _need("triton")
    _check_adafm("triton", params)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton", "ref"])
@pytest.mark.parametrize("params", ADAFM_GRID[::3] + [(torch.bfloat16,) + p[1:] for p in ADAFM_TRITON_GRID],
                         ids=_adafm_ids)
def test_adafm_gpu(impl, params):
    _need(impl, "cuda")
    _check_adafm(impl, params, "cuda")


def _backward_masks(op_name, fn):
    """The output_mask of every backward-op call made while running ``fn``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    masks = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.name().startswith(f"fastgan::{op_name}") and func.name().endswith("_backward"):
                masks.append(list(args[-1]))
            return func(*args, **(kwargs or {}))

    with Spy():
        fn()
    return masks


@pytest.mark.parametrize("impl", ["cpp", "triton"])
def test_adafm_frozen_weight_requests_no_weight_gradient(impl):
    _need(impl)
    x, weight, gamma, beta, bias = adafm_inputs(2, 4, 6, 3, H, W, torch.float32, "cpu", True)
    x.requires_grad_(True)
    gamma.requires_grad_(True)
    out = ops.adafm_conv2d(x, weight, gamma, beta, bias, impl=impl)
    masks = _backward_masks("adafm_conv2d", lambda: out.sum().backward())
    assert masks == [[True, False, True, False, False]]
    assert weight.grad is None and gamma.grad is not None and beta.grad is None
    # everything but x frozen (gamma/beta not yet unfrozen): only the input gradient is computed
    gamma.requires_grad_(False)
    out = ops.adafm_conv2d(x, weight, gamma, beta, bias, impl=impl)
    masks = _backward_masks("adafm_conv2d", lambda: out.sum().backward())
    assert masks == [[True, False, False, False, False]]


@pytest.mark.parametrize("impl", ["cpp", "triton"])
def test_backward_ops_return_empty_for_masked_grads(impl):
    _need(impl)
    x, weight, gamma, beta, _ = adafm_inputs(2, 4, 6, 3, H, W, torch.float32, "cpu", False)
    g = torch.randn(2, 6, H, W)
    op = torch.ops.fastgan.adafm_conv2d_backward if impl == "cpp" else torch.ops.fastgan.adafm_conv2d_triton_backward
    gx, gw, gg, gb, gbias = op(g, x, weight, gamma, beta, [1, 1], [1, 1], [True, False, False, False, False])
    assert gx.shape == x.shape and gw.numel() == gg.numel() == gb.numel() == gbias.numel() == 0
    mop = (torch.ops.fastgan.modulated_conv2d_backward if impl == "cpp"
           else torch.ops.fastgan.modulated_conv2d_triton_backward)
    s = torch.randn(2, 4)
    out = ops.modulated_conv2d(x, weight, s, impl=impl)
    gx, gw, gs = mop(g, x, weight, s, out, True, [1, 1], 1e-8, [False, False, True])
    assert gx.numel() == gw.numel() == 0 and gs.shape == s.shape


def test_bad_inputs_name_the_problem():
    x = torch.randn(2, 4, 8, 8)
    w = torch.randn(6, 4, 3, 3)
    with pytest.raises(ValueError, match="styles must have shape"):
        ops.modulated_conv2d(x, w, torch.randn(2, 5))
    with pytest.raises(ValueError, match="input channels"):
        ops.modulated_conv2d(x, torch.randn(6, 3, 3, 3), torch.randn(2, 4))
    with pytest.raises(TypeError, match="dtype"):
        ops.modulated_conv2d(x, w.double(), torch.randn(2, 4))
    with pytest.raises(ValueError, match="4 dimensions"):
        ops.modulated_conv2d(x[0], w, torch.randn(2, 4))
    with pytest.raises(ValueError, match="gamma must have shape"):
        ops.adafm_conv2d(x, w, torch.ones(4, 6), torch.zeros(6, 4))
    with pytest.raises(ValueError, match="stride must be positive"):
        ops.adafm_conv2d(x, w, torch.ones(6, 4), torch.zeros(6, 4), stride=0)
    with pytest.raises(ValueError, match="does not fit"):
        ops.modulated_conv2d(torch.randn(2, 4, 1, 1), w, torch.randn(2, 4), padding=0)
    # the C++ entry checks too, for callers that use torch.ops directly
    with pytest.raises(RuntimeError, match="styles must have shape"):
        torch.ops.fastgan.modulated_conv2d(x, w, torch.randn(3, 4), True, [1, 1], 1e-8)


# ---- batching rules (torch.func.vmap and batched VJPs fold the vmapped dimension into N) ------------------------
@pytest.mark.parametrize("impl", ["cpp", "triton"])
def test_modconv_vmap_forward_matches_a_loop(impl):
    _need(impl)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 2, 4, 6, 5, generator=g)
    w = torch.randn(5, 4, 3, 3, generator=g)
    s = torch.randn(3, 2, 4, generator=g)
    f = lambda a, b: ops.modulated_conv2d(a, w, b, impl=impl)  # noqa: E731
    got = torch.func.vmap(f)(x, s)
    want = torch.stack([f(x[i], s[i]) for i in range(3)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # unbatched styles broadcast, batched weight runs per slice
    got2 = torch.func.vmap(f, in_dims=(0, None))(x, s[0])
    torch.testing.assert_close(got2, torch.stack([f(x[i], s[0]) for i in range(3)]), rtol=1e-5, atol=1e-5)
    wb = torch.randn(3, 5, 4, 3, 3, generator=g)
    got3 = torch.func.vmap(lambda a, b, c: ops.modulated_conv2d(a, b, c, impl=impl))(x, wb, s)
    want3 = torch.stack([ops.modulated_conv2d(x[i], wb[i], s[i], impl=impl) for i in range(3)])
    torch.testing.assert_close(got3, want3, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weight_grad", [False, True])
@pytest.mark.parametrize("impl", ["cpp", "triton"])
def test_modconv_batched_vjp_matches_reference(impl, weight_grad):
    """torch.autograd.grad(is_grads_batched=True) runs the backward op once per cotangent (autograd's own batching,
    which does not see the ops' batching rules): per-cotangent results must equal the reference's."""
    _need(impl)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    s = torch.randn(2, 3, generator=g, dtype=torch.float64)
    cot = torch.randn(5, 2, 4, 6, 6, generator=g, dtype=torch.float64)
    res = {}
    for im in ("ref", impl):
        dt = torch.float64 if im == "ref" or impl == "cpp" else torch.float32
        ins = [x.to(dt).requires_grad_(), w.to(dt).requires_grad_(weight_grad), s.to(dt).requires_grad_()]
        out = ops.modulated_conv2d(*ins, impl=im)
        wrt = [t for t in ins if t.requires_grad]
        res[im] = torch.autograd.grad(out, wrt, cot.to(dt), is_grads_batched=True)
    tol = 1e-10 if impl == "cpp" else 2e-4
    for a, b in zip(res[impl], res["ref"]):
        assert a.shape == b.shape
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol)


@pytest.mark.parametrize("weight_grad", [False, True])
@pytest.mark.parametrize("impl", ["cpp", "triton"])
def test_modconv_under_torch_func_transforms(impl, weight_grad):
    """torch.func.vjp + vmap, jacrev, jvp and jacfwd through the fused kernels equal the reference (under
    transforms modulated_conv2d routes the kernels through a Function with setup_context, a forward-mode rule and
    the ops' batching rules)."""
    _need(impl)
    g = torch.Generator().manual_seed(9)
    dt = torch.float64 if impl == "cpp" else torch.float32
    tol = 1e-10 if impl == "cpp" else 2e-4
    x = torch.randn(2, 2, 4, 4, generator=g, dtype=dt)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=dt)
    s = torch.randn(2, 2, generator=g, dtype=dt)
    cot = torch.randn(3, 2, 3, 4, 4, generator=g, dtype=dt)
    tan = [torch.randn(t.shape, generator=g, dtype=dt) for t in (x, w, s)]
    for demod in (True, False):
        def f(im, a, b, c):
            return ops.modulated_conv2d(a, c if weight_grad else w, b, demodulate=demod, impl=im)

        res = {}
        for im in ("ref", impl):
            fn = (lambda a, b, c, im=im: f(im, a, b, c))
            _, vjp_fn = torch.func.vjp(fn, x, s, w)
            grads = torch.func.vmap(vjp_fn)(cot)
            _, jv = torch.func.jvp(fn, (x, s, w), tuple(tan[i] for i in (0, 2, 1)))
            res[im] = (*grads[:2], *(grads[2:] if weight_grad else ()), jv)
            if impl == "cpp":  # full Jacobians: many (co)tangents, too slow for the Triton interpreter
                for arg in (0, 1):  # styles only, and x only (each tangent alone takes its own branch)
                    res[im] += (torch.func.jacrev(fn, argnums=arg)(x, s, w),
                                torch.func.jacfwd(fn, argnums=arg)(x, s, w))
        for a, b in zip(res[impl], res["ref"]):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_modconv_vmapped_vjp_folds_cotangents_into_one_kernel_call():
    """vmap over a VJP of the compiled op calls the backward kernel once, with the cotangents folded into N."""
    _need("cpp")
    from torch.profiler import profile, record_function  # noqa: F401

    x, w, s = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(2, 3)
    _, vjp_fn = torch.func.vjp(lambda a, b: ops.modulated_conv2d(a, w, b, impl="cpp"), x, s)
    with profile(record_shapes=True) as prof:
        torch.func.vmap(vjp_fn)(torch.randn(7, 2, 4, 5, 5))
    calls = [e for e in prof.events() if e.name == "fastgan::modulated_conv2d_backward"]
    assert [tuple(e.input_shapes[0]) for e in calls] == [(2, 4, 5, 5), (14, 4, 5, 5)]  # the rule, then one kernel

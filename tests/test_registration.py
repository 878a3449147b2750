"""Op registration: torch.library.opcheck on every fastgan op, torch.compile(fullgraph=True) equality,
gradcheck of the compiled kernels' backward in float64, and double backward (R1 / path-length) for every impl."""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from fastgan.ops.modconv import _adafm_conv2d_ref, _modulated_conv2d_ref

OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def _need(op, impl):
    reason = ops.why_unavailable(op, impl, "cpu")
    if reason is not None:
        pytest.fail(f"{op} impl {impl!r} should be available in the test environment: {reason}")


def _modconv_samples(requires_grad):
    out = []
    for demod, k in ((True, 3), (False, 1)):
        x = torch.randn(2, 3, 5, 7, requires_grad=requires_grad)
        w = torch.randn(4, 3, k, k, requires_grad=requires_grad)
        s = torch.randn(2, 3, requires_grad=requires_grad)
        out.append((x, w, s, demod, [k // 2, k // 2], 1e-8))
    return out


def _adafm_samples(requires_grad):
    out = []
    for stride, bias in ((1, True), (2, False)):
        x = torch.randn(2, 3, 5, 7, requires_grad=requires_grad)
        w = torch.randn(4, 3, 3, 3)  # frozen weight, the normal case
        g = torch.randn(4, 3, requires_grad=requires_grad)
        b = torch.randn(4, 3, requires_grad=requires_grad)
        bb = torch.randn(4, requires_grad=requires_grad) if bias else None
        out.append((x, w, g, b, bb, [stride, stride], [1, 1]))
    return out


OPS = {
    "cpp": ("modulated_conv2d", "adafm_conv2d"),
    "triton": ("modulated_conv2d_triton", "adafm_conv2d_triton"),
}


@pytest.mark.parametrize("impl", ["cpp", "triton"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_forward_ops(impl, requires_grad):
    _need("modulated_conv2d", impl)
    mname, aname = OPS[impl]
    for args in _modconv_samples(requires_grad):
        torch.library.opcheck(getattr(torch.ops.fastgan, mname).default, args, test_utils=OPCHECK_TESTS)
    for args in _adafm_samples(requires_grad):
        torch.library.opcheck(getattr(torch.ops.fastgan, aname).default, args, test_utils=OPCHECK_TESTS)


@pytest.mark.parametrize("impl", ["cpp", "triton"])
def test_opcheck_backward_ops(impl):
    _need("modulated_conv2d", impl)
    mname, aname = OPS[impl]
    for x, w, s, demod, pad, eps in _modconv_samples(False):
        out = getattr(torch.ops.fastgan, mname)(x, w, s, demod, pad, eps)
        g = torch.randn_like(out)
        for mask in ([True, True, True], [False, True, False]):
            torch.library.opcheck(getattr(torch.ops.fastgan, mname + "_backward").default,
                                  (g, x, w, s, out, demod, pad, eps, mask), test_utils=OPCHECK_TESTS)
    for x, w, ga, be, bias, stride, pad in _adafm_samples(False):
        out = getattr(torch.ops.fastgan, aname)(x, w, ga, be, bias, stride, pad)
        g = torch.randn_like(out)
        for mask in ([True, False, True, True, bias is not None], [True, False, False, False, False]):
            torch.library.opcheck(getattr(torch.ops.fastgan, aname + "_backward").default,
                                  (g, x, w, ga, be, stride, pad, mask), test_utils=OPCHECK_TESTS)


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    _need("modulated_conv2d", "cpp")

    def step(x, w, s, g, b):
        y = ops.modulated_conv2d(x, w, s)
        return ops.adafm_conv2d(torch.nn.functional.leaky_relu(y, 0.2), w, g, b, stride=2).square().mean()

    x = torch.randn(2, 4, 9, 7, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, requires_grad=True)
    s = torch.randn(2, 4, requires_grad=True)
    g = torch.randn(4, 4, requires_grad=True)
    b = torch.randn(4, 4, requires_grad=True)
    eager = step(x, w, s, g, b)
    ge = torch.autograd.grad(eager, (x, w, s, g, b))
    compiled = torch.compile(step, fullgraph=True)(x, w, s, g, b)
    gc = torch.autograd.grad(compiled, (x, w, s, g, b))
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for a, c in zip(ge, gc):
        torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-5)


def test_gradcheck_cpp_float64():
    _need("modulated_conv2d", "cpp")
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    for demod in (True, False):
        assert torch.autograd.gradcheck(lambda a, b, c: ops.modulated_conv2d(a, b, c, demodulate=demod, impl="cpp"),
                                        (x, w, s))
    g = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w_, c, d, e: ops.adafm_conv2d(a, w_, c, d, e, stride=2, impl="cpp"),
                                    (x, w, g, b, bias))


@pytest.mark.parametrize("impl", ["ref", "cpp"])
def test_gradgradcheck_float64(impl):
    _need("modulated_conv2d", impl)
    x = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b, c: ops.modulated_conv2d(a, b, c, impl=impl), (x, w, s))
    g = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, c, d: ops.adafm_conv2d(a, w.detach(), c, d, impl=impl), (x, g, b))


def _r1_and_path_length(fn_mod, fn_ada, x, w, s, g, b):
    """An R1-style penalty on x and a path-length-style penalty on the styles: both need double backward."""
    y = fn_mod(x, w, s)
    gx, = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    gs, = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).reshape(y.shape).to(y)).sum(), s,
                              create_graph=True)
    z = fn_ada(x, w, g, b)
    gz, = torch.autograd.grad(z.square().sum(), x, create_graph=True)
    penalty = gx.square().sum() + gs.square().sum() + gz.square().sum()
    return torch.autograd.grad(penalty, (x, w, s, g, b))


@pytest.mark.parametrize("impl", ["cpp", "triton"])
def test_double_backward_matches_reference(impl):
    _need("modulated_conv2d", impl)
    dt = torch.float64 if impl == "cpp" else torch.float32
    base = [torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(2, 3), 1 + 0.2 * torch.randn(4, 3),
            0.1 * torch.randn(4, 3)]
    results = []
    for fm, fa, d in (
        (lambda x, w, s: ops.modulated_conv2d(x, w, s, impl=impl),
         lambda x, w, g, b: ops.adafm_conv2d(x, w, g, b, impl=impl), dt),
        (lambda x, w, s: _modulated_conv2d_ref(x, w, s), lambda x, w, g, b: _adafm_conv2d_ref(x, w, g, b),
         torch.float64),
    ):
        ins = [t.to(d).requires_grad_(True) for t in base]
        results.append(_r1_and_path_length(fm, fa, *ins))
    for got, want in zip(*results):
        torch.testing.assert_close(got.double(), want, rtol=2e-4 if dt == torch.float32 else 1e-9,
                                   atol=2e-4 if dt == torch.float32 else 1e-9)


# ---- GPU lane: the same registration checks on CUDA tensors ----------------------------------------------
def _to(args, device):
    return tuple(a.detach().to(device).requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                 for a in args)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_forward_ops_cuda(impl, requires_grad):
    reason = ops.why_unavailable("modulated_conv2d", impl, "cuda")
    if reason is not None and impl == "cuda" and "without CUDA" in reason:
        pytest.skip(f"CUDA kernels not built on this GPU machine: {reason}")
    assert reason is None, reason
    mname, aname = OPS["cpp" if impl == "cuda" else impl]
    for args in _modconv_samples(requires_grad):
        torch.library.opcheck(getattr(torch.ops.fastgan, mname).default, _to(args, "cuda"), test_utils=OPCHECK_TESTS)
    for args in _adafm_samples(requires_grad):
        torch.library.opcheck(getattr(torch.ops.fastgan, aname).default, _to(args, "cuda"), test_utils=OPCHECK_TESTS)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_torch_compile_fullgraph_matches_eager_cuda(impl):
    reason = ops.why_unavailable("modulated_conv2d", impl, "cuda")
    if reason is not None and impl == "cuda" and "without CUDA" in reason:
        pytest.skip(f"CUDA kernels not built on this GPU machine: {reason}")
    assert reason is None, reason

    def step(x, w, s, g, b):
        y = ops.modulated_conv2d(x, w, s, impl=impl)
        return ops.adafm_conv2d(torch.nn.functional.leaky_relu(y, 0.2), w, g, b, stride=2, impl=impl).square().mean()

    ins = [torch.randn(2, 16, 9, 7), torch.randn(16, 16, 3, 3), torch.randn(2, 16), torch.randn(16, 16),
           torch.randn(16, 16)]
    ins = [t.cuda().requires_grad_(True) for t in ins]
    eager = step(*ins)
    ge = torch.autograd.grad(eager, ins)
    compiled = torch.compile(step, fullgraph=True)(*ins)
    gc = torch.autograd.grad(compiled, ins)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for a, c in zip(ge, gc):
        torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_double_backward_matches_reference_cuda(impl):
    reason = ops.why_unavailable("modulated_conv2d", impl, "cuda")
    if reason is not None and impl == "cuda" and "without CUDA" in reason:
        pytest.skip(f"CUDA kernels not built on this GPU machine: {reason}")
    assert reason is None, reason
    base = [torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(2, 3), 1 + 0.2 * torch.randn(4, 3),
            0.1 * torch.randn(4, 3)]
    got = _r1_and_path_length(lambda x, w, s: ops.modulated_conv2d(x, w, s, impl=impl),
                              lambda x, w, g, b: ops.adafm_conv2d(x, w, g, b, impl=impl),
                              *[t.cuda().requires_grad_(True) for t in base])
    want = _r1_and_path_length(lambda x, w, s: _modulated_conv2d_ref(x, w, s),
                               lambda x, w, g, b: _adafm_conv2d_ref(x, w, g, b),
                               *[t.double().requires_grad_(True) for t in base])
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double().cpu(), w, rtol=2e-4, atol=2e-4)

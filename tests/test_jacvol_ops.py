"""fastgan.ops.random_projection and fastgan.ops.log_singular_values: every impl against the references.

CPU lane: ref, cpp (when the extension is built) and Triton under TRITON_INTERPRET with tiny sizes.
GPU lane (marked ``gpu``): cuda and triton on CUDA tensors against the CPU references.
"""
from __future__ import annotations

import math

import pytest
import torch

from fastgan import ops
from fastgan.ops import jacvol as JV

HAS_CPP = ops.why_unavailable("random_projection", "cpp", "cpu") is None
CPU_IMPLS = ["ref", "triton"] + (["cpp"] if HAS_CPP else [])


def _need(op, impl, device="cpu"):
    reason = ops.why_unavailable(op, impl, device)
    if reason is None:
        return
    if impl in ("cpp", "cuda") and ("not loaded" in reason or "without CUDA" in reason or "no jacvol" in reason):
        pytest.skip(f"compiled kernels not built here: {reason}")
    pytest.fail(f"{op} impl {impl!r} should be available on {device}: {reason}")


def _matrix_p(k, dim, seed, impl="ref", dtype=torch.float64, device="cpu"):
    """P (k, D) built explicitly through the transpose of the identity."""
    eye = torch.eye(k, dtype=dtype, device=device)
    return ops.random_projection(eye, k, seed, True, shape=dim, impl=impl)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---- the Gaussian matrix G -------------------------------------------------------------------------------------
def test_gaussian_block_is_standard_normal_and_column_consistent():
    keys = JV.row_keys(7, 64)
    g = JV.gaussian_block(keys, 0, 4096)
    assert g.dtype == torch.float32 and g.shape == (64, 4096)
    assert abs(g.mean().item()) < 0.01 and abs(g.std().item() - 1) < 0.01
    # a block starting anywhere is the same slice of G (columns are a function of their global index only)
    torch.testing.assert_close(JV.gaussian_block(keys, 200, 300), g[:, 200:500], rtol=0, atol=0)
    # rows are independent streams: row r of a 64-row block equals the one-row block of row r
    torch.testing.assert_close(JV.gaussian_block(keys[10:11], 0, 4096), g[10:11], rtol=0, atol=0)
    # cosine / sine halves of a group: G[r, c]^2 + G[r, c + 64]^2 = -2 ln u1 > 0, and the halves are uncorrelated
    c, s = g[:, :64].flatten(), g[:, 64:128].flatten()
    assert abs(torch.corrcoef(torch.stack([c, s]))[0, 1].item()) < 0.1


# ---- random_projection: construction ------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("k,dim", [(1, 5), (7, 300), (16, 129), (12, 12)])
def test_rows_are_orthonormal(impl, k, dim):
    _need("random_projection", impl)
    dtype = torch.float32 if impl == "triton" else torch.float64
    p = _matrix_p(k, dim, 3, impl, dtype)
    assert p.shape == (k, dim) and p.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(p @ p.t(), torch.eye(k, dtype=dtype), rtol=0, atol=tol)


def test_p_depends_only_on_seed_k_and_dim():
    p = _matrix_p(6, 200, 11)
    torch.testing.assert_close(_matrix_p(6, 200, 11), p, rtol=0, atol=0)
    JV.clear_cache()
    torch.testing.assert_close(_matrix_p(6, 200, 11), p, rtol=0, atol=0)  # rebuilt from scratch: same P
    assert (_matrix_p(6, 200, 12) - p).abs().max() > 0.1
    # the first rows of a larger k are the same Gram-Schmidt directions (row r depends on rows <= r only)
    torch.testing.assert_close(_matrix_p(9, 200, 11)[:6], p, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_forward_and_transpose_match_explicit_p(impl):
    _need("random_projection", impl)
    k, shape = 5, (3, 7, 9)
    dim = math.prod(shape)
    p = _matrix_p(k, dim, 2)  # float64 reference P
    x = torch.randn(4, *shape, generator=_gen(0))
    y = torch.randn(4, k, generator=_gen(1))
    got = ops.random_projection(x, k, 2, impl=impl)
    assert got.shape == (4, k) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), x.reshape(4, -1).double() @ p.t(), rtol=1e-5, atol=1e-5)
    got_t = ops.random_projection(y, k, 2, True, shape=shape, impl=impl)
    assert got_t.shape == (4, *shape) and got_t.dtype == torch.float32
    torch.testing.assert_close(got_t.double().reshape(4, -1), y.double() @ p, rtol=1e-5, atol=1e-6)
    # shape= on the forward is accepted when it matches (as a tuple or as D)
    torch.testing.assert_close(ops.random_projection(x, k, 2, shape=shape, impl=impl), got)
    torch.testing.assert_close(ops.random_projection(x, k, 2, shape=dim, impl=impl), got)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_rows_do_not_depend_on_batch_size_or_impl(impl):
    _need("random_projection", impl)
    x = torch.randn(5, 3, 8, 8, generator=_gen(2))
    whole = ops.random_projection(x, 8, 4, impl=impl)
    for i in range(5):
        torch.testing.assert_close(ops.random_projection(x[i:i + 1], 8, 4, impl=impl), whole[i:i + 1],
                                   rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(whole, ops.random_projection(x, 8, 4, impl="ref"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_directions_are_adjoint(impl):
    _need("random_projection", impl)
    k, dim = 9, 333
    x = torch.randn(3, dim, generator=_gen(3))
    y = torch.randn(3, k, generator=_gen(4))
    lhs = (ops.random_projection(x, k, 5, impl=impl) * y).sum()
    rhs = (x * ops.random_projection(y, k, 5, True, shape=dim, impl=impl)).sum()
    assert abs(lhs.item() - rhs.item()) <= 1e-5 * max(1.0, abs(lhs.item()))


@pytest.mark.parametrize("impl", [i for i in CPU_IMPLS if i != "triton"])
def test_gradcheck_float64(impl):
    _need("random_projection", impl)
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True, generator=_gen(5))
    y = torch.randn(2, 4, dtype=torch.float64, requires_grad=True, generator=_gen(6))
    assert torch.autograd.gradcheck(lambda a: ops.random_projection(a, 4, 1, impl=impl), (x,))
    assert torch.autograd.gradcheck(lambda a: ops.random_projection(a, 4, 1, True, shape=(3, 5), impl=impl), (y,))


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_gradients_match_reference(impl):
    _need("random_projection", impl)
    x = torch.randn(3, 2, 10, 13, generator=_gen(7))
    y = torch.randn(3, 6, generator=_gen(8))
    gy = torch.randn(3, 6, generator=_gen(9))
    gx = torch.randn(3, 2, 10, 13, generator=_gen(10))
    grads = {}
    for name in ("ref", impl):
        xa, ya = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        out = ops.random_projection(xa, 6, 0, impl=name)
        out_t = ops.random_projection(ya, 6, 0, True, shape=(2, 10, 13), impl=name)
        grads[name] = torch.autograd.grad((out * gy).sum() + (out_t * gx).sum(), (xa, ya))
    for a, b in zip(grads["ref"], grads[impl]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # the gradient of x -> x P^T is g -> g P
    torch.testing.assert_close(grads["ref"][0], ops.random_projection(gy, 6, 0, True, shape=(2, 10, 13)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_non_contiguous_and_half_inputs(impl):
    _need("random_projection", impl)
    base = torch.randn(4, 3, 20, 20, generator=_gen(11))
    x = base[:, :, ::2, 1::2]  # non-contiguous (4, 3, 10, 10)
    want = ops.random_projection(x.contiguous(), 7, 9, impl="ref")
    torch.testing.assert_close(ops.random_projection(x, 7, 9, impl=impl), want, rtol=1e-5, atol=1e-5)
    xt = torch.randn(300, 4, generator=_gen(12)).t()  # (4, 300) with strides (1, 4)
    torch.testing.assert_close(ops.random_projection(xt, 7, 9, impl=impl),
                               ops.random_projection(xt.contiguous(), 7, 9, impl="ref"), rtol=1e-5, atol=1e-5)
    # float16: same result as the float32 reference on the rounded input, returned as float16
    xh = x.half()
    got = ops.random_projection(xh, 7, 9, impl=impl)
    assert got.dtype == torch.float16
    ref32 = ops.random_projection(xh.float(), 7, 9, impl="ref")
    err_ref = (ref32.half().float() - ref32).abs().max()  # the rounding of the output itself
    assert (got.float() - ref32).abs().max() <= 2 * err_ref + 1e-3
    yh = torch.randn(4, 7, generator=_gen(13)).half()
    got_t = ops.random_projection(yh, 7, 9, True, shape=(3, 10, 10), impl=impl)
    assert got_t.dtype == torch.float16 and got_t.shape == (4, 3, 10, 10)
    want_t = ops.random_projection(yh.float(), 7, 9, True, shape=(3, 10, 10), impl="ref")
    assert (got_t.float() - want_t).abs().max() <= 2 * (want_t.half().float() - want_t).abs().max() + 1e-3


def test_random_projection_errors():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="k <= D"):
        ops.random_projection(x, 13, 0)
    with pytest.raises(ValueError, match="needs shape="):
        ops.random_projection(torch.randn(2, 3), 3, 0, True)
    with pytest.raises(ValueError, match=r"\(B, k\) = \(B, 4\)"):
        ops.random_projection(torch.randn(2, 3), 4, 0, True, shape=12)
    with pytest.raises(ValueError, match="k <= D"):
        ops.random_projection(torch.randn(2, 5), 5, 0, True, shape=(2, 2))
    with pytest.raises(ValueError, match="does not match"):
        ops.random_projection(x, 2, 0, shape=(4, 3))
    with pytest.raises(ValueError, match="shape must be"):
        ops.random_projection(torch.randn(2, 3), 3, 0, True, shape=(3, 0))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        ops.random_projection(torch.randn(5), 2, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        ops.random_projection(x, 2.0, 0)
    with pytest.raises(ValueError, match="k must be at least 1"):
        ops.random_projection(x, 0, 0)
    with pytest.raises(ValueError, match="seed"):
        ops.random_projection(x, 2, -1)
    with pytest.raises(TypeError, match="floating-point"):
        ops.random_projection(torch.ones(2, 3, dtype=torch.int64), 2, 0)
    with pytest.raises(ValueError, match="impl must be one of"):
        ops.random_projection(x, 2, 0, impl="fast")


# ---- log_singular_values --------------------------------------------------------------------------------------
LOGSV_CASES = [(3, 7, 12, None), (2, 12, 7, 4), (1, 9, 9, 9), (4, 1, 5, None), (2, 33, 20, 10)]


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("b,k,d,top_k", LOGSV_CASES)
def test_log_singular_values_match_svdvals(impl, b, k, d, top_k):
    _need("log_singular_values", impl)
    jac = torch.randn(b, k, d, generator=_gen(k * d))
    got = ops.log_singular_values(jac, top_k, impl=impl)
    m = top_k or min(k, d)
    want = torch.log(torch.linalg.svdvals(jac.double()))[:, :m]
    assert got.dtype == torch.float64 and got.shape == (b, m)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert bool((got[:, :-1] >= got[:, 1:]).all())  # descending


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_log_singular_values_dtypes_and_layouts(impl):
    _need("log_singular_values", impl)
    jac = torch.randn(3, 20, 8, generator=_gen(21)) * 3
    want = JV._log_singular_values_ref(jac, 5)
    torch.testing.assert_close(ops.log_singular_values(jac.transpose(1, 2), 5, impl=impl), want, rtol=0, atol=1e-10)
    strided = torch.randn(3, 40, 16, generator=_gen(22))[:, ::2, ::2]
    torch.testing.assert_close(ops.log_singular_values(strided, impl=impl),
                               JV._log_singular_values_ref(strided.contiguous(), 8), rtol=0, atol=1e-10)
    jd = jac.double()
    torch.testing.assert_close(ops.log_singular_values(jd, 5, impl=impl), JV._log_singular_values_ref(jd, 5),
                               rtol=0, atol=1e-10)
    jh = jac.half()  # float16 data: the same values as their float32 upcast
    torch.testing.assert_close(ops.log_singular_values(jh, 5, impl=impl), JV._log_singular_values_ref(jh, 5),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_log_singular_values_rank_deficient(impl):
    _need("log_singular_values", impl)
    g = _gen(30)
    jac = torch.randn(2, 10, 3, generator=g, dtype=torch.float64) @ torch.randn(2, 3, 16, generator=g,
                                                                              dtype=torch.float64)  # rank 3
    got = ops.log_singular_values(jac, impl=impl)
    want = JV._log_singular_values_ref(jac, 10)
    torch.testing.assert_close(got[:, :3], want[:, :3], rtol=0, atol=1e-9)
    # the null directions: -inf or at most ~sqrt(eps64) sigma_max (the Gram route's resolution)
    assert bool((got[:, 3:] < got[:, :1] - 14).all())
    zero = ops.log_singular_values(torch.zeros(2, 4, 6), impl=impl)
    assert bool(torch.isneginf(zero).all())


def test_log_singular_values_errors():
    jac = torch.randn(3, 4, 6)
    with pytest.raises(ValueError, match=r"top_k=5 exceeds min\(k, d\) = min\(4, 6\) = 4"):
        ops.log_singular_values(jac, 5)
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        ops.log_singular_values(jac, 0)
    bad = jac.clone()
    bad[1, 0, 0] = float("nan")
    bad[2, 3, 5] = float("inf")
    with pytest.raises(ValueError, match=r"batch rows \[1, 2\]"):
        ops.log_singular_values(bad)
    with pytest.raises(ValueError, match=r"\(B, k, d\)"):
        ops.log_singular_values(torch.randn(4, 6))
    with pytest.raises(TypeError, match="jac must be float32"):
        ops.log_singular_values(torch.ones(2, 3, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="empty"):
        ops.log_singular_values(torch.randn(0, 3, 3))


def test_log_singular_values_is_not_differentiable():
    jac = torch.randn(2, 3, 5, requires_grad=True)
    out = ops.log_singular_values(jac, impl="ref")
    assert not out.requires_grad


# ---- registration ---------------------------------------------------------------------------------------------
def test_auto_prefers_the_compiled_kernels_on_cpu():
    want = "cpp" if HAS_CPP else "ref"
    assert ops.available_impls("random_projection", "cpu")[0] == want
    assert ops.available_impls("log_singular_values", "cpu")[0] == want


OPCHECK = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def _gauss_samples(requires_grad):
    keys = JV.row_keys(3, 5)
    x = torch.randn(2, 150, requires_grad=requires_grad)
    z = torch.randn(2, 5, requires_grad=requires_grad)
    return keys, x, z


@pytest.mark.parametrize("impl", ["cpp", "triton"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(impl, requires_grad):
    _need("random_projection", impl)
    keys, x, z = _gauss_samples(requires_grad)
    suffix = "_triton" if impl == "triton" else ""
    torch.library.opcheck(getattr(torch.ops.fastgan, "random_projection_gauss" + suffix).default, (x, keys, 0),
                          test_utils=OPCHECK)
    torch.library.opcheck(getattr(torch.ops.fastgan, "random_projection_gauss_t" + suffix).default,
                          (z, keys, 128, 150), test_utils=OPCHECK)
    if not requires_grad:
        torch.library.opcheck(getattr(torch.ops.fastgan, "log_singular_values" + suffix).default,
                              (torch.randn(2, 4, 6), 3), test_utils=OPCHECK)


@pytest.mark.parametrize("impl", [i for i in CPU_IMPLS if i != "triton"])
def test_torch_compile_fullgraph(impl):
    _need("random_projection", impl)

    def step(x, y):
        a = ops.random_projection(x, 6, 1, impl=impl)
        b = ops.random_projection(y, 6, 1, True, shape=x.shape[1:], impl=impl)
        return a, b

    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    y = torch.randn(2, 6, requires_grad=True)
    eager = step(x, y)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(x, y)
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c, e, rtol=1e-6, atol=1e-6)
    ge = torch.autograd.grad(sum(t.square().sum() for t in eager), (x, y))
    gc = torch.autograd.grad(sum(t.square().sum() for t in compiled), (x, y))
    for e, c in zip(ge, gc):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)


# ---- GPU lane ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_gpu_projection_matches_cpu_reference(impl):
    _need("random_projection", impl, "cuda")
    for k, shape in [(1, (5,)), (7, (3, 10, 11)), (128, (3, 64, 64)), (40, (1000,))]:
        dim = math.prod(shape)
        p_cpu = _matrix_p(k, dim, 8)
        p_gpu = _matrix_p(k, dim, 8, impl, torch.float32, "cuda").cpu().double()
        torch.testing.assert_close(p_gpu, p_cpu, rtol=0, atol=2e-5)  # the same P on every device and impl
        for b in (1, 3, 37):
            x = torch.randn(b, *shape, generator=_gen(b))
            got = ops.random_projection(x.cuda(), k, 8, impl=impl).cpu()
            torch.testing.assert_close(got.double(), x.reshape(b, -1).double() @ p_cpu.t(), rtol=1e-4, atol=1e-4)
            y = torch.randn(b, k, generator=_gen(b + 1))
            got_t = ops.random_projection(y.cuda(), k, 8, True, shape=shape, impl=impl).cpu()
            torch.testing.assert_close(got_t.double().reshape(b, -1), y.double() @ p_cpu, rtol=1e-4, atol=1e-5)
    if impl == "cuda":  # float64 and gradients through the compiled ops
        x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device="cuda", requires_grad=True)
        assert torch.autograd.gradcheck(lambda a: ops.random_projection(a, 4, 2, impl=impl), (x,))


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_gpu_log_singular_values_match_svdvals(impl):
    _need("log_singular_values", impl, "cuda")
    for b, k, d in [(3, 7, 12), (2, 12, 7), (1, 1, 9), (5, 128, 512), (2, 200, 64), (3, 150, 300), (16, 33, 33)]:
        jac = torch.randn(b, k, d, generator=_gen(k + d))
        want = JV._log_singular_values_ref(jac, min(k, d))
        got = ops.log_singular_values(jac.cuda(), impl=impl).cpu()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
        got_t = ops.log_singular_values(jac.transpose(1, 2).cuda(), 3, impl=impl).cpu()
        torch.testing.assert_close(got_t, want[:, :3], rtol=0, atol=1e-9)
    jac = torch.randn(2, 10, 3, dtype=torch.float64) @ torch.randn(2, 3, 16, dtype=torch.float64)
    got = ops.log_singular_values(jac.cuda(), impl=impl).cpu()
    torch.testing.assert_close(got[:, :3], JV._log_singular_values_ref(jac, 3), rtol=0, atol=1e-9)
    assert bool((got[:, 3:] < got[:, :1] - 14).all())
    assert bool(torch.isneginf(ops.log_singular_values(torch.zeros(2, 4, 6, device="cuda"), impl=impl)).all())


@pytest.mark.gpu
def test_gpu_opcheck_cuda():
    _need("random_projection", "cuda", "cuda")
    keys, x, z = _gauss_samples(True)
    keys = keys.cuda()
    x = x.detach().cuda().requires_grad_(True)
    z = z.detach().cuda().requires_grad_(True)
    torch.library.opcheck(torch.ops.fastgan.random_projection_gauss.default, (x, keys, 0), test_utils=OPCHECK)
    torch.library.opcheck(torch.ops.fastgan.random_projection_gauss_t.default, (z, keys, 128, 150),
                          test_utils=OPCHECK)
    torch.library.opcheck(torch.ops.fastgan.log_singular_values.default, (torch.randn(2, 4, 6, device="cuda"), 3),
                          test_utils=OPCHECK)

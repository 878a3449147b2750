"""MaGNET building blocks: a seeded orthonormal random projection and batched log singular values.

``random_projection(x, k, seed, transpose=False, *, shape=None, impl="auto")``
    P is a k x D matrix with orthonormal rows (P P^T = I_k up to rounding), a function of (seed, k, D) only: the
    same P on every device, impl and batch size. It is never stored: kernels regenerate its entries on the fly.
    Forward (``transpose=False``): x (B, *s) with D = prod(s) -> (B, k) = vec(x) P^T. ``shape`` may be given and
    must then equal s.
    Transpose (``transpose=True``): x (B, k) -> (B, *shape) = x P reshaped, with ``shape`` an int D or a tuple
    such as (C, H, W): this is how image-shaped cotangents P[i] are made (``random_projection(eye(k), k, seed,
    True, shape=(C, H, W))`` gives the k rows of P as images).
    The two directions are adjoint (<x P^T, y> = <x, y P>) and each is the other's gradient. k <= D is required.
    The output has x's dtype; float16 / bfloat16 inputs accumulate in float32, float64 ones in float64.

``log_singular_values(jac, top_k=None, *, impl="auto") -> float64 (B, top_k)``
    The top_k largest log singular values of each jac[b] (B, k, d), in descending order, computed as
    1/2 log(eigenvalues) of the Gram matrix (J J^T when k <= d, else J^T J) accumulated in float64 from the
    float32 (or float64) data. ``top_k=None`` means min(k, d). The result is not differentiable (it is computed
    under no_grad). The Gram route resolves singular values down to about sqrt(eps_64) * sigma_max (~1.5e-8 times
    the largest): smaller ones come out as tiny values, and an eigenvalue that is exactly zero or rounds negative
    gives -inf (a rank-deficient J gives -inf or very small entries at its end; the float64 SVD reference gives
    about log(1e-16 sigma_max) there). Rows with NaN or Inf raise ValueError naming their batch indices.

Construction of P (module constants below). G (k x D) has i.i.d. standard normal entries drawn from the
counter-based generator of ``fastgan.ops.synth`` (``mix32`` / ``draw32``; its 32-bit integer arithmetic is native
in C++, CUDA and Triton, where the 64-bit mixer of ``fastgan.train.rng`` would cost emulated 64-bit multiplies on
GPUs and in torch): row r has the keys
``rng_keys(seed, [r], STREAM)``; columns come in groups of 128: column c belongs to group c >> 7, its Box-Muller
pair is p = 64 (c >> 7) + (c & 63) with draws h1 = draw(2p), h2 = draw(2p + 1), u1 = ((h1 >> 8) + 1) 2^-24,
u2 = (h2 >> 8) 2^-24, r = sqrt(-2 ln u1), t = 2 pi u2 (float32), and G[r, c] = r cos t for the first 64 columns
of the group and r sin t for the last 64 (both outputs of a pair are used, by columns 64 apart, so a kernel that
owns a 128-column group computes each pair once). With the Cholesky factor of the float64 Gram G G^T = L L^T,
P = L^-1 G: the rows of P are the Gram-Schmidt orthonormalisation of the rows of G, so for Gaussian G they are a
Haar-random orthonormal frame, the distribution of the Keras ``Orthogonal`` initialiser that MaGNET uses.
Then x P^T = (x G^T) L^-T and y P = (y L^-1) G: the kernels are streaming "x G^T" / "z G" passes over D that
regenerate G in registers (``random_projection_gauss`` / ``random_projection_gauss_t``), and only the k x k
matrix L^-1 is stored (a small LRU cache keyed by (seed, k, D, device, impl); its Gram is built once, in
float64, from column chunks of at most ``CHUNK_ELEMS`` entries of G as that impl generates them). The impls
evaluate log / sin / cos with their own float32 libraries, so their G entries, and hence their P, agree to float32
rounding (~1e-7 relative); each impl's P is orthonormal to its own working precision (1e-15 for float64 inputs on
ref and cpp), because its L comes from its own entries.

Implementations:
    random_projection    ref (torch, chunks of at most CHUNK_ELEMS entries of G), cpp (CPU, OpenMP), cuda, triton
    log_singular_values  ref (torch.linalg.svdvals in float64, the definition), cpp (CPU: OpenMP float64 Gram +
                         LAPACK eigvalsh), cuda (one thread block per matrix: float64 Gram in shared memory and a
                         parallel cyclic Jacobi eigensolver, for Gram sizes <= 128; larger ones use a float64 Gram
                         and torch's eigvalsh), triton (fused float64-accumulating Gram kernel, then
                         torch.linalg.eigvalsh on the Gram)
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from . import _dispatch
from .synth import _check_seed, draw32, rng_keys

STREAM = 0x4A564F4C  # the counter stream of projection rows ("JVOL")
GROUP = 128  # columns per Box-Muller group: the first HALF take the cosines, the last HALF the sines
HALF = GROUP // 2
CHUNK_ELEMS = 2**24  # entries of G that the reference holds at once
MAX_DIM = 2**31 - GROUP  # D limit: every draw counter 2p + 1 stays below 2^32
CACHE_SIZE = 16  # (seed, k, D, device, impl) bases kept by the LRU cache
TWO_PI_F32 = 6.2831855  # float32(2 pi), as every kernel uses it
ShapeArg = Union[int, Sequence[int], None]

# --------------------------------------------------------------------------------------------------------
# G: the Gaussian matrix behind P (references)
# --------------------------------------------------------------------------------------------------------


def row_keys(seed: int, rows: int, device=None) -> Tensor:
    """(rows, 2) int64 counter keys (k0, k1) of the rows of G (uint32 values)."""
    return rng_keys(seed, torch.arange(rows, dtype=torch.int64, device=device), STREAM)


def gaussian_block(keys: Tensor, col0: int, cols: int) -> Tensor:
    """float32 (R, cols) block G[:, col0:col0 + cols] of the rows keyed by ``keys`` (R, 2). See the module docstring."""
    dev = keys.device
    c = torch.arange(col0, col0 + cols, dtype=torch.int64, device=dev)
    p = (c >> 7) * HALF + (c & (HALF - 1))
    use_sin = ((c >> 6) & 1).bool()
    k0, k1 = keys[:, 0:1], keys[:, 1:2]
    h1 = draw32(k0, k1, 2 * p)
    h2 = draw32(k0, k1, 2 * p + 1)
    u1 = ((h1 >> 8) + 1).to(torch.float32) * (2.0 ** -24)
    u2 = (h2 >> 8).to(torch.float32) * (2.0 ** -24)
    r = torch.sqrt(-2.0 * torch.log(u1))
    t = u2 * torch.tensor(TWO_PI_F32, dtype=torch.float32)
    return torch.where(use_sin, r * torch.sin(t), r * torch.cos(t))


def _chunk_cols(rows: int) -> int:
    """Columns per reference chunk: a multiple of GROUP with at most CHUNK_ELEMS entries (at least one group)."""
    return max(GROUP, (CHUNK_ELEMS // max(rows, 1)) // GROUP * GROUP)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _gauss_project_ref(x: Tensor, keys: Tensor, col0: int) -> Tensor:
    """x (B, D) -> (B, R) = x G[:, col0:col0 + D]^T, float32 accumulation (float64 for float64 x), G in chunks."""
    acc = _acc_dtype(x.dtype)
    rows, d = keys.shape[0], x.shape[1]
    out = torch.zeros(x.shape[0], rows, dtype=acc, device=x.device)
    step = _chunk_cols(rows)
    for s in range(0, d, step):
        n = min(step, d - s)
        out = out + x[:, s:s + n].to(acc) @ gaussian_block(keys, col0 + s, n).to(acc).t()
    return out


def _gauss_project_t_ref(z: Tensor, keys: Tensor, col0: int, cols: int) -> Tensor:
    """z (B, R) float32/float64 -> (B, cols) = z G[:, col0:col0 + cols], G in chunks."""
    step = _chunk_cols(keys.shape[0])
    parts = [z @ gaussian_block(keys, col0 + s, min(step, cols - s)).to(z.dtype) for s in range(0, cols, step)]
    if not parts:
        return z.new_zeros((z.shape[0], 0))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class _RefProject(torch.autograd.Function):
    """The reference passes with the adjoint pass as gradient (so autograd never stores chunks of G)."""

    @staticmethod
    def forward(ctx, inp: Tensor, keys: Tensor, dim: int, transpose: bool) -> Tensor:
        ctx.save_for_backward(keys)
        ctx.meta = (inp.dtype, dim, transpose)
        if transpose:
            return _gauss_project_t_ref(inp, keys, 0, dim)
        return _gauss_project_ref(inp, keys, 0)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (keys,) = ctx.saved_tensors
        dtype, dim, transpose = ctx.meta
        if transpose:
            g = _gauss_project_ref(grad, keys, 0).to(dtype)
        else:
            g = _gauss_project_t_ref(grad.to(_acc_dtype(grad.dtype)), keys, 0, dim).to(dtype)
        return g, None, None, None


def _project_ref(inp: Tensor, keys: Tensor, dim: int, transpose: bool) -> Tensor:
    return _RefProject.apply(inp, keys, dim, transpose)


# --------------------------------------------------------------------------------------------------------
# the orthonormalising factor L^-1 (cached per (seed, k, D, device, impl))
# --------------------------------------------------------------------------------------------------------


def _block_fn(impl: str):
    """G[:, col0:col0 + cols] as generated by ``impl`` (the kernels' own float32 entries, taken through their
    transpose pass on the identity, which is exact), so that each impl's P is orthonormal to its own precision."""
    if impl == "ref":
        return gaussian_block
    if impl == "triton":
        return lambda keys, col0, cols: _gauss_t_triton(_eye32(keys), keys, col0, cols)
    return lambda keys, col0, cols: torch.ops.fastgan.random_projection_gauss_t(_eye32(keys), keys, col0, cols)


def _eye32(keys: Tensor) -> Tensor:
    return torch.eye(keys.shape[0], dtype=torch.float32, device=keys.device)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _basis_cached(seed: int, k: int, dim: int, device: str, impl: str) -> tuple[Tensor, Tensor]:
    keys = row_keys(seed, k, device)
    block = _block_fn(impl)
    gram = torch.zeros(k, k, dtype=torch.float64, device=device)
    step = _chunk_cols(k)
    for s in range(0, dim, step):
        g = block(keys, s, min(step, dim - s)).to(torch.float64)
        gram += g @ g.t()
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:  # only when k is close to D and G happens to be (numerically) rank-deficient
        raise RuntimeError(f"random_projection: the Gram matrix of G for seed={seed}, k={k}, D={dim} is not "
                           "positive definite; use another seed or a smaller k")
    eye = torch.eye(k, dtype=torch.float64, device=device)
    linv = torch.linalg.solve_triangular(chol, eye, upper=False)
    return keys, linv


@torch.compiler.assume_constant_result
def _basis(seed: int, k: int, dim: int, device: str, impl: str) -> tuple[Tensor, Tensor]:
    """(keys (k, 2) int64, L^-1 (k, k) float64) of P = L^-1 G on ``device``, with L from the Gram of the G
    entries that ``impl`` generates (computed once per (seed, k, D, device, impl), then cached)."""
    with torch.no_grad():
        return _basis_cached(seed, k, dim, device, impl)


def clear_cache() -> None:
    """Forget every cached projection basis (they are rebuilt on the next call)."""
    _basis_cached.cache_clear()


# --------------------------------------------------------------------------------------------------------
# log singular values (reference)
# --------------------------------------------------------------------------------------------------------


def _log_singular_values_ref(jac: Tensor, top_k: int) -> Tensor:
    """float64 (B, top_k): descending log of torch.linalg.svdvals of jac in float64 (the definition)."""
    s = torch.linalg.svdvals(jac.to(torch.float64))[:, :top_k]
    return torch.log(s)


# --------------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------------


def _check_int(v, name: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < low:
        raise ValueError(f"{name} must be at least {low}, got {v}")
    return v


def _parse_shape(shape: ShapeArg) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        dims = (shape,)
    else:
        try:
            dims = tuple(shape)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}") from None
    if not dims or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in dims):
        raise ValueError(f"shape must be a positive int or a non-empty sequence of positive ints, got {shape!r}")
    return dims


# --------------------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------------------


def random_projection(x: Tensor, k: int, seed: int, transpose: bool = False, *, shape: ShapeArg = None,
                      impl: str = "auto") -> Tensor:
    """x P^T (forward) or x P (``transpose=True``) for the seeded k x D orthonormal-row matrix P.

    Forward: x (B, *s) -> (B, k) with D = prod(s). Transpose: x (B, k) -> (B, *shape), ``shape`` required (an int
    D or a tuple such as (C, H, W)). See the module docstring for the construction of P.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    _check_int(k, "k", 1)
    seed = _check_seed(seed)
    if transpose:
        if shape is None:
            raise ValueError("random_projection(transpose=True) needs shape= (an int D or a tuple such as (C, H, W))")
        dims = _parse_shape(shape)
        if x.dim() != 2 or x.shape[1] != k:
            raise ValueError(f"random_projection(transpose=True): x must have shape (B, k) = (B, {k}), got "
                             f"{tuple(x.shape)}")
    else:
        if x.dim() < 2:
            raise ValueError(f"x must have shape (B, ...) with at least 2 dimensions, got {tuple(x.shape)}")
        dims = tuple(x.shape[1:])
        if shape is not None and _parse_shape(shape) not in (dims, (math.prod(dims),)):
            raise ValueError(f"shape {shape!r} does not match x's per-sample shape {dims}")
    dim = math.prod(dims)
    if k > dim:
        raise ValueError(f"random_projection needs k <= D: k={k} orthonormal rows do not fit in D={dim} dimensions")
    if dim > MAX_DIM:
        raise ValueError(f"random_projection supports D up to {MAX_DIM}, got D={dim}")
    b = x.shape[0]
    name, fn = _dispatch.resolve("random_projection", impl, x)
    keys, linv = _basis(seed, k, dim, str(x.device), name)
    if not transpose:
        raw = fn(x.reshape(b, dim), keys, dim, False)  # (B, k) x G^T
        return (raw.to(torch.float64) @ linv.t()).to(x.dtype)
    z = (x.to(torch.float64) @ linv).to(_acc_dtype(x.dtype))  # (B, k) x L^-1
    out = fn(z, keys, dim, True)  # (B, D) (x L^-1) G
    return out.to(x.dtype).reshape((b,) + dims)


def log_singular_values(jac: Tensor, top_k: Optional[int] = None, *, impl: str = "auto") -> Tensor:
    """float64 (B, top_k) descending log singular values of each jac[b] (B, k, d). See the module docstring."""
    if not isinstance(jac, Tensor):
        raise TypeError(f"jac must be a torch.Tensor, got {type(jac).__name__}")
    if jac.dim() != 3:
        raise ValueError(f"jac must have shape (B, k, d), got {tuple(jac.shape)}")
    if jac.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"jac must be float32, float64, float16 or bfloat16, got {jac.dtype}")
    b, k, d = jac.shape
    if b == 0 or k == 0 or d == 0:
        raise ValueError(f"jac is empty: shape {tuple(jac.shape)}")
    m = min(k, d)
    if top_k is None:
        top_k = m
    _check_int(top_k, "top_k", 1)
    if top_k > m:
        raise ValueError(f"top_k={top_k} exceeds min(k, d) = min({k}, {d}) = {m} singular values per matrix")
    with torch.no_grad():
        if not torch.compiler.is_compiling():
            finite = torch.isfinite(jac).flatten(1).all(dim=1)
            if not bool(finite.all()):
                bad = torch.nonzero(~finite).flatten().tolist()
                raise ValueError(f"jac has NaN or Inf values in batch rows {bad}; drop them before calling")
        _, fn = _dispatch.resolve("log_singular_values", impl, jac)
        return fn(jac, top_k)


# --------------------------------------------------------------------------------------------------------
# op registration: fake impls and autograd for the compiled and Triton ops
# --------------------------------------------------------------------------------------------------------


def _gauss_fake(x, keys, col0):
    return x.new_empty((x.shape[0], keys.shape[0]), dtype=_acc_dtype(x.dtype))


def _gauss_t_fake(z, keys, col0, cols):
    return z.new_empty((z.shape[0], cols))


def _logsv_fake(jac, top_k):
    return jac.new_empty((jac.shape[0], top_k), dtype=torch.float64)


def _register_gauss_autograd(fwd, fwd_t) -> None:
    """The backward of x G^T is g G and the other way round (fwd / fwd_t are the two ops)."""

    def setup_fwd(ctx, inputs, output):
        x, keys, col0 = inputs
        ctx.save_for_backward(keys)
        ctx.meta = (x.dtype, x.shape[1], col0)

    def backward_fwd(ctx, grad):
        (keys,) = ctx.saved_tensors
        dtype, cols, col0 = ctx.meta
        g = fwd_t(grad.to(_acc_dtype(grad.dtype)).contiguous(), keys, col0, cols)
        return g.to(dtype), None, None

    def setup_t(ctx, inputs, output):
        z, keys, col0, cols = inputs
        ctx.save_for_backward(keys)
        ctx.meta = (z.dtype, col0)

    def backward_t(ctx, grad):
        (keys,) = ctx.saved_tensors
        dtype, col0 = ctx.meta
        return fwd(grad.contiguous(), keys, col0).to(dtype), None, None, None

    torch.library.register_autograd(fwd, backward_fwd, setup_context=setup_fwd)
    torch.library.register_autograd(fwd_t, backward_t, setup_context=setup_t)


@torch.library.custom_op("fastgan::random_projection_gauss_triton", mutates_args=())
def _gauss_triton(x: Tensor, keys: Tensor, col0: int) -> Tensor:
    from fastgan.kernels import jacvol as kern

    return kern.gauss_project(x, keys, col0)


@torch.library.custom_op("fastgan::random_projection_gauss_t_triton", mutates_args=())
def _gauss_t_triton(z: Tensor, keys: Tensor, col0: int, cols: int) -> Tensor:
    from fastgan.kernels import jacvol as kern

    return kern.gauss_project_t(z, keys, col0, cols)


@torch.library.custom_op("fastgan::log_singular_values_triton", mutates_args=())
def _logsv_triton(jac: Tensor, top_k: int) -> Tensor:
    from fastgan.kernels import jacvol as kern

    return kern.log_singular_values(jac, top_k)


_gauss_triton.register_fake(_gauss_fake)
_gauss_t_triton.register_fake(_gauss_t_fake)
_logsv_triton.register_fake(_logsv_fake)
_register_gauss_autograd(_gauss_triton, _gauss_t_triton)


def _ext_ops() -> bool:
    """Register fake/autograd rules on the compiled ops; False when the extension (or this family) is missing."""
    import fastgan

    if not fastgan.HAS_EXT or not hasattr(torch.ops.fastgan, "random_projection_gauss"):
        return False
    torch.library.register_fake("fastgan::random_projection_gauss")(_gauss_fake)
    torch.library.register_fake("fastgan::random_projection_gauss_t")(_gauss_t_fake)
    torch.library.register_fake("fastgan::log_singular_values")(_logsv_fake)
    _register_gauss_autograd(torch.ops.fastgan.random_projection_gauss.default,
                             torch.ops.fastgan.random_projection_gauss_t.default)
    return True


_HAS_EXT_OPS = _ext_ops()

# --------------------------------------------------------------------------------------------------------
# dispatch table
# --------------------------------------------------------------------------------------------------------


def _project_triton(inp: Tensor, keys: Tensor, dim: int, transpose: bool) -> Tensor:
    if transpose:
        return _gauss_t_triton(inp.contiguous(), keys, 0, dim)
    return _gauss_triton(inp, keys, 0)


def _project_ext(inp: Tensor, keys: Tensor, dim: int, transpose: bool) -> Tensor:
    if transpose:
        return torch.ops.fastgan.random_projection_gauss_t(inp.contiguous(), keys, 0, dim)
    return torch.ops.fastgan.random_projection_gauss(inp, keys, 0)


def _logsv_ext(jac: Tensor, top_k: int) -> Tensor:
    return torch.ops.fastgan.log_singular_values(jac, top_k)


def _triton_supports(device_type: str, dtype: torch.dtype) -> Optional[str]:
    return _dispatch.triton_float_supports(device_type, dtype, "the Triton projection kernels")


def _triton_logsv_supports(device_type: str, dtype: torch.dtype) -> Optional[str]:
    if device_type == "cpu" and dtype == torch.bfloat16:
        return "the Triton interpreter computes bfloat16 wrongly; use float32/float16/float64 on CPU"
    return None


def _ext_available(device_type: str) -> Optional[str]:
    reason = _dispatch.ext_unavailable("jacvol", device_type)
    if reason is None and not _HAS_EXT_OPS:
        return "fastgan._C has no jacvol ops (rebuild the extension)"
    return reason


_AUTO = {"cpu": ("cpp", "ref"), "cuda": ("cuda", "triton", "ref"), "*": ("ref",)}
_DEVICES_REF = ("cpu", "cuda", "mps", "xpu")
_dispatch.register_op("random_projection", _AUTO)
_dispatch.register_impl("random_projection", "ref", _project_ref, devices=_DEVICES_REF)
_dispatch.register_impl("random_projection", "cpp", _project_ext, devices=("cpu",), available=_ext_available)
_dispatch.register_impl("random_projection", "cuda", _project_ext, devices=("cuda",), available=_ext_available)
_dispatch.register_impl("random_projection", "triton", _project_triton, devices=("cpu", "cuda"),
                        available=_dispatch.triton_unavailable, supports=_triton_supports)
_dispatch.register_op("log_singular_values", _AUTO)
_dispatch.register_impl("log_singular_values", "ref", _log_singular_values_ref, devices=_DEVICES_REF)
_dispatch.register_impl("log_singular_values", "cpp", _logsv_ext, devices=("cpu",), available=_ext_available)
_dispatch.register_impl("log_singular_values", "cuda", _logsv_ext, devices=("cuda",), available=_ext_available)
_dispatch.register_impl("log_singular_values", "triton", _logsv_triton, devices=("cpu", "cuda"),
                        available=_dispatch.triton_unavailable, supports=_triton_logsv_supports)

__all__ = ["random_projection", "log_singular_values", "gaussian_block", "row_keys", "clear_cache"]

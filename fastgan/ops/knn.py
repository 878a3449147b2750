"""k-nearest-neighbour radii and the real x fake reductions behind precision / recall / density / coverage.

``knn_radii(x, k, *, impl="auto") -> (N,)``
    Euclidean distance from each row of x (N, D) to its k-th nearest *other* row: the (k+1)-th smallest distance
    counting the row itself (distance 0), the convention of the prdc package and of Kynkaanniemi et al.
    Needs N >= k + 1.

``manifold_stats(real, fake, real_radii, fake_radii, *, inclusive, impl="auto") -> dict``
    One pass over the real x fake distances: ``fake_in_real`` (bool (F,): fake j lies in some real ball,
    d(r_i, f_j) <(=) real_radii[i]), ``real_in_fake`` (bool (R,): real i lies in some fake ball),
    ``density_count`` (float64 scalar: the number of (i, j) with d(r_i, f_j) <(=) real_radii[i]) and
    ``real_covered`` (bool (R,): the nearest fake of real i lies inside its ball). ``inclusive`` picks <= (NVlabs)
    or < (prdc).

Distances are computed in tiles of rows against all columns, so no N x N matrix is ever held: the tile height is
chosen so that a tile holds at most ``2**24`` distances. The references compute in float64 (features of any float
dtype are upcast) so that membership decisions match the prdc package exactly. Both ops also have Triton kernels
(``kernels/knn.py``: float32 distance tiles from ``tl.dot`` reduced on the spot: a running top-(k+1) per row for
the radii, any / nearest / count per row and any per column for the memberships), which ``auto`` picks on CUDA,
and CUDA C++ kernels (``csrc/knn/knn_cuda.cu``, ``impl="cuda"``: the same float32 arithmetic with a register top-(k+1)
list per row, k <= 63).
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _dispatch

TILE_ELEMS = 2**24


def _check_features(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be (N, D) features, got shape {tuple(x.shape)}")
    if not (x.is_floating_point()):
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or Inf values")
    return x


def _rows_per_tile(cols: int) -> int:
    return max(1, TILE_ELEMS // max(cols, 1))


def _distances(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances of rows of a to rows of b through the Gram form sqrt(|a|^2 - 2 a.b + |b|^2) (one GEMM
    per tile), as scikit-learn computes them for the prdc package."""
    return torch.cdist(a, b, compute_mode="use_mm_for_euclid_dist")


def _knn_radii_ref(x: Tensor, k: int) -> Tensor:
    x = x.to(torch.float64)
    n = x.shape[0]
    out = torch.empty(n, dtype=torch.float64, device=x.device)
    step = _rows_per_tile(n)
    for s in range(0, n, step):
        d = _distances(x[s:s + step], x)
        out[s:s + step] = torch.topk(d, k + 1, dim=1, largest=False).values[:, k]
    return out


def _manifold_stats_ref(real: Tensor, fake: Tensor, real_radii: Tensor, fake_radii: Tensor,
                        inclusive: bool) -> dict:
    real, fake = real.to(torch.float64), fake.to(torch.float64)
    rr, fr = real_radii.to(torch.float64), fake_radii.to(torch.float64)
    within = torch.le if inclusive else torch.lt
    nr, nf = real.shape[0], fake.shape[0]
    fake_in_real = torch.zeros(nf, dtype=torch.bool, device=real.device)
    real_in_fake = torch.empty(nr, dtype=torch.bool, device=real.device)
    real_covered = torch.empty(nr, dtype=torch.bool, device=real.device)
    count = torch.zeros((), dtype=torch.float64, device=real.device)
    step = _rows_per_tile(nf)
    for s in range(0, nr, step):
        d = _distances(real[s:s + step], fake)  # (tile, F)
        inside = within(d, rr[s:s + step, None])
        fake_in_real |= inside.any(dim=0)
        count += inside.sum(dtype=torch.float64)
        real_in_fake[s:s + step] = within(d, fr[None, :]).any(dim=1)
        real_covered[s:s + step] = within(d.min(dim=1).values, rr[s:s + step])
    return {"fake_in_real": fake_in_real, "real_in_fake": real_in_fake, "density_count": count,
            "real_covered": real_covered}


def knn_radii(x: Tensor, k: int, *, impl: str = "auto") -> Tensor:
    """float64 (N,) distance of each row of x to its k-th nearest other row. See the module docstring."""
    _check_features(x, "x")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if x.shape[0] < k + 1:
        raise ValueError(f"knn_radii needs at least k + 1 = {k + 1} samples, got {x.shape[0]}")
    _, fn = _dispatch.resolve("knn_radii", impl, x)
    return fn(x, k)


def manifold_stats(real: Tensor, fake: Tensor, real_radii: Tensor, fake_radii: Tensor, *, inclusive: bool,
                   impl: str = "auto") -> dict:
    """Membership and counts of real x fake pairs against the k-NN balls. See the module docstring."""
    _check_features(real, "real")
    _check_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]}")
    if real_radii.shape != (real.shape[0],) or fake_radii.shape != (fake.shape[0],):
        raise ValueError(f"radii must be ({real.shape[0]},) and ({fake.shape[0]},), got "
                         f"{tuple(real_radii.shape)} and {tuple(fake_radii.shape)}")
    _, fn = _dispatch.resolve("knn_manifold_stats", impl, real)
    return fn(real, fake, real_radii, fake_radii, bool(inclusive))


@torch.library.custom_op("fastgan::knn_radii_triton", mutates_args=())
def _knn_radii_triton(x: Tensor, k: int) -> Tensor:
    from fastgan.kernels import knn as kern

    return kern.knn_radii(x, k)


@_knn_radii_triton.register_fake
def _knn_radii_fake(x, k):
    return x.new_empty((x.shape[0],), dtype=torch.float64)


def _ext_ops() -> bool:
    """Fake (meta) kernels for the C++ ops, when the extension defines them."""
    import fastgan

    if not fastgan.HAS_EXT or not hasattr(torch.ops.fastgan, "knn_radii"):
        return False
    torch.library.register_fake("fastgan::knn_radii")(_knn_radii_fake)
    torch.library.register_fake("fastgan::knn_manifold_stats")(_manifold_stats_fake)
    return True


def _knn_radii_cuda(x: Tensor, k: int) -> Tensor:
    return torch.ops.fastgan.knn_radii(x, k)


def _manifold_stats_cuda(real, fake, real_radii, fake_radii, inclusive):
    fake_in, real_in, count, covered = torch.ops.fastgan.knn_manifold_stats(real, fake, real_radii, fake_radii,
                                                                            inclusive)
    return {"fake_in_real": fake_in, "real_in_fake": real_in, "density_count": count, "real_covered": covered}


def _knn_unavailable(device_type: str):
    if not _HAS_EXT_OPS:
        return "the compiled extension fastgan._C is not loaded or has no knn ops"
    return _dispatch.ext_unavailable("knn", device_type)


_dispatch.register_op("knn_radii", {"cuda": ("triton", "cuda", "ref"), "*": ("ref",)})
_dispatch.register_impl("knn_radii", "ref", _knn_radii_ref, devices=("cpu", "cuda", "mps", "xpu"))
_dispatch.register_impl("knn_radii", "triton", _knn_radii_triton, devices=("cpu", "cuda"),
                        available=_dispatch.triton_unavailable)
@torch.library.custom_op("fastgan::knn_manifold_stats_triton", mutates_args=())
def _manifold_stats_triton_op(real: Tensor, fake: Tensor, real_radii: Tensor, fake_radii: Tensor,
                              inclusive: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from fastgan.kernels import knn as kern

    return kern.manifold_stats(real, fake, real_radii, fake_radii, inclusive)


@_manifold_stats_triton_op.register_fake
def _manifold_stats_fake(real, fake, real_radii, fake_radii, inclusive):
    nr, nf = real.shape[0], fake.shape[0]
    return (real.new_empty((nf,), dtype=torch.bool), real.new_empty((nr,), dtype=torch.bool),
            real.new_empty((), dtype=torch.float64), real.new_empty((nr,), dtype=torch.bool))


def _manifold_stats_triton(real, fake, real_radii, fake_radii, inclusive):
    fake_in, real_in, count, covered = _manifold_stats_triton_op(real, fake, real_radii, fake_radii, inclusive)
    return {"fake_in_real": fake_in, "real_in_fake": real_in, "density_count": count, "real_covered": covered}


_HAS_EXT_OPS = _ext_ops()

_dispatch.register_impl("knn_radii", "cuda", _knn_radii_cuda, devices=("cuda",), available=_knn_unavailable)
_dispatch.register_op("knn_manifold_stats", {"cuda": ("triton", "cuda", "ref"), "*": ("ref",)})
_dispatch.register_impl("knn_manifold_stats", "ref", _manifold_stats_ref, devices=("cpu", "cuda", "mps", "xpu"))
_dispatch.register_impl("knn_manifold_stats", "triton", _manifold_stats_triton, devices=("cpu", "cuda"),
                        available=_dispatch.triton_unavailable)
_dispatch.register_impl("knn_manifold_stats", "cuda", _manifold_stats_cuda, devices=("cuda",),
                        available=_knn_unavailable)

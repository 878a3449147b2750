"""Triton kernels for ``fastgan.ops.knn_radii`` and ``manifold_stats``: fused distance tiles, no N x N matrix.

``manifold_stats``: one program per BLOCK_M real rows sweeps the fake columns with the same tiles and reduces them on
the fly: per real row "inside some fake ball", the nearest fake and the number of fake samples in its ball; per fake
column "inside some real ball" with an atomic max across programs.

``knn_radii``:

One program owns BLOCK_M rows. It sweeps the columns in tiles of BLOCK_N: the squared distances of the tile come
from one ``tl.dot`` per BLOCK_K slice (|x|^2 + |y|^2 - 2 x.y, float32 accumulation, IEEE products: no TF32) and are
merged into a running, sorted list of the k + 1 smallest squared distances of each row (k + 1 rounds of "take the
smaller of the two minima, knock it out of its source"). No N x N matrix and no separate top-k pass exist; the
program writes sqrt of the (k+1)-th smallest value (the row itself being the first) at the end.

The float32 Gram form loses precision when distances are tiny next to the norms (as every fp32 k-NN does); the
float64 reference (``impl="ref"``) is the exact route.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _sq_dist_tile(A, B, rows, cols, row_ok, col_ok, sq_rows, SQB, D, stride_a, stride_b, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Squared distances (BLOCK_M, BLOCK_N) of rows of A to rows of B: |a|^2 + |b|^2 - 2 a.b, clamped at 0."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < D
        a = tl.load(A + rows[:, None].to(tl.int64) * stride_a + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0)
        b = tl.load(B + cols[:, None].to(tl.int64) * stride_b + ks[None, :], mask=col_ok[:, None] & k_ok[None, :],
                    other=0.0)
        acc += tl.dot(a, tl.trans(b), input_precision="ieee")
    sq_cols = tl.load(SQB + cols, mask=col_ok, other=0.0)
    return tl.maximum(sq_rows[:, None] + sq_cols[None, :] - 2.0 * acc, 0.0)


@triton.jit
def _knn_radii_kernel(X, SQ, OUT, N, D, stride_n, K1: tl.constexpr, KP: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    sq_rows = tl.load(SQ + rows, mask=row_ok, other=0.0)
    kidx = tl.arange(0, KP)
    best = tl.full((BLOCK_M, KP), float("inf"), tl.float32)
    for c0 in range(0, N, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        d2 = _sq_dist_tile(X, X, rows, cols, row_ok, col_ok, sq_rows, SQ, D, stride_n, stride_n, BLOCK_M, BLOCK_N,
                           BLOCK_K)
        d2 = tl.where(col_ok[None, :], d2, float("inf"))
        # merge: the K1 smallest of (best, d2), in order
        new = tl.full((BLOCK_M, KP), float("inf"), tl.float32)
        for t in tl.static_range(K1):
            m_tile = tl.min(d2, axis=1)
            m_best = tl.min(best, axis=1)
            from_tile = m_tile < m_best
            val = tl.where(from_tile, m_tile, m_best)
            i_tile = tl.argmin(d2, axis=1)
            i_best = tl.argmin(best, axis=1)
            hit_tile = (cols[None, :] - c0) == i_tile[:, None]
            hit_best = kidx[None, :] == i_best[:, None]
            d2 = tl.where(hit_tile & from_tile[:, None], float("inf"), d2)
            best = tl.where(hit_best & (m_tile >= m_best)[:, None], float("inf"), best)
            new = tl.where(kidx[None, :] == t, val[:, None], new)
        best = new
    kth = tl.sum(tl.where(kidx[None, :] == K1 - 1, best, 0.0), axis=1)
    tl.store(OUT + rows, tl.sqrt(kth), mask=row_ok)


@triton.jit
def _manifold_kernel(R, FK, SQR, SQF, RR2, FR2, FAKE_IN, REAL_IN, COVERED, COUNT, NR, NF, D, stride_r, stride_f,
                     INCLUSIVE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < NR
    sq_rows = tl.load(SQR + rows, mask=row_ok, other=0.0)
    r2 = tl.load(RR2 + rows, mask=row_ok, other=0.0)
    in_fake = tl.zeros((BLOCK_M,), tl.int32)
    nearest = tl.full((BLOCK_M,), float("inf"), tl.float32)
    count = tl.zeros((BLOCK_M,), tl.int32)
    for c0 in range(0, NF, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        col_ok = cols < NF
        d2 = _sq_dist_tile(R, FK, rows, cols, row_ok, col_ok, sq_rows, SQF, D, stride_r, stride_f, BLOCK_M,
                           BLOCK_N, BLOCK_K)
        f2 = tl.load(FR2 + cols, mask=col_ok, other=0.0)
        valid = row_ok[:, None] & col_ok[None, :]
        if INCLUSIVE:
            in_real_ball = (d2 <= r2[:, None]) & valid
            in_fake_ball = (d2 <= f2[None, :]) & valid
        else:
            in_real_ball = (d2 < r2[:, None]) & valid
            in_fake_ball = (d2 < f2[None, :]) & valid
        count += tl.sum(in_real_ball.to(tl.int32), axis=1)
        in_fake = tl.maximum(in_fake, tl.max(in_fake_ball.to(tl.int32), axis=1))
        nearest = tl.minimum(nearest, tl.min(tl.where(valid, d2, float("inf")), axis=1))
        tl.atomic_max(FAKE_IN + cols, tl.max(in_real_ball.to(tl.int32), axis=0), mask=col_ok)
    if INCLUSIVE:
        covered = nearest <= r2
    else:
        covered = nearest < r2
    tl.store(REAL_IN + rows, in_fake, mask=row_ok)
    tl.store(COVERED + rows, covered.to(tl.int32), mask=row_ok)
    tl.store(COUNT + rows, count, mask=row_ok)


def manifold_stats(real: torch.Tensor, fake: torch.Tensor, real_radii: torch.Tensor, fake_radii: torch.Tensor,
                   inclusive: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fake_in_real, real_in_fake, density_count, real_covered) of ``fastgan.ops.manifold_stats``, float32
    distances compared squared with the squared radii."""
    r = real.to(torch.float32).contiguous()
    f = fake.to(torch.float32).contiguous()
    nr, d = r.shape
    nf = f.shape[0]
    sq_r = (r.double() ** 2).sum(dim=1).to(torch.float32)
    sq_f = (f.double() ** 2).sum(dim=1).to(torch.float32)
    rr2 = (real_radii.double() ** 2).to(torch.float32)
    fr2 = (fake_radii.double() ** 2).to(torch.float32)
    fake_in = torch.zeros(nf, dtype=torch.int32, device=r.device)
    real_in = torch.empty(nr, dtype=torch.int32, device=r.device)
    covered = torch.empty(nr, dtype=torch.int32, device=r.device)
    count = torch.empty(nr, dtype=torch.int32, device=r.device)
    block_m, block_n, block_k = 32, 64, 32
    grid = (triton.cdiv(nr, block_m),)
    _manifold_kernel[grid](r, f, sq_r, sq_f, rr2, fr2, fake_in, real_in, covered, count, nr, nf, d, r.stride(0),
                           f.stride(0), INCLUSIVE=bool(inclusive), BLOCK_M=block_m, BLOCK_N=block_n,
                           BLOCK_K=block_k, num_warps=4)
    return fake_in.bool(), real_in.bool(), count.sum(dtype=torch.int64).to(torch.float64), covered.bool()


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """float64 (N,) k-th nearest-other-row distances of x (N, D) (computed in float32). See the module docstring."""
    xf = x.to(torch.float32).contiguous()
    n, d = xf.shape
    sq = (xf.double() ** 2).sum(dim=1).to(torch.float32)
    out = torch.empty(n, dtype=torch.float32, device=x.device)
    k1 = k + 1
    kp = max(2, triton.next_power_of_2(k1))
    block_m, block_n, block_k = 32, 64, 32
    grid = (triton.cdiv(n, block_m),)
    _knn_radii_kernel[grid](xf, sq, out, n, d, xf.stride(0), K1=k1, KP=kp, BLOCK_M=block_m, BLOCK_N=block_n,
                            BLOCK_K=block_k, num_warps=4)
    return out.to(torch.float64)


__all__ = ["knn_radii", "manifold_stats"]

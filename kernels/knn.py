"""Triton kernel for ``fastgan.ops.knn_radii``: fused distance tiles + running top-(k+1) per row.

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
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k0 in range(0, D, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < D
            a = tl.load(X + rows[:, None].to(tl.int64) * stride_n + ks[None, :],
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(X + cols[:, None].to(tl.int64) * stride_n + ks[None, :],
                        mask=col_ok[:, None] & k_ok[None, :], other=0.0)
            acc += tl.dot(a, tl.trans(b), input_precision="ieee")
        sq_cols = tl.load(SQ + cols, mask=col_ok, other=0.0)
        d2 = tl.maximum(sq_rows[:, None] + sq_cols[None, :] - 2.0 * acc, 0.0)
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


__all__ = ["knn_radii"]

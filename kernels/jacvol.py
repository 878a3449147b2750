"""Triton kernels of ``fastgan.ops.random_projection`` and ``fastgan.ops.log_singular_values``.

``gauss_project`` (x G^T) and ``gauss_project_t`` (z G) stream over the D columns of the seeded Gaussian matrix G
and regenerate its entries in registers, one 128-column group at a time: the group's 64 Box-Muller pairs per row
give the cosine half (its first 64 columns) and the sine half (its last 64) from one hash / log / sqrt each, and
each half feeds one ``tl.dot`` (float32, IEEE products: no TF32). G is never written to memory.

  * ``gauss_project``: one program per (batch tile, row tile, D split). A program sweeps the groups of its split
    and writes a float32 partial (B, R) sum; the splits are added by torch in a fixed order (deterministic; the
    split count only grows the grid so that a small batch still fills the GPU).
  * ``gauss_project_t``: one program per (batch tile, column group); it loops over the rows of G in tiles and
    writes its 128 output columns once.
  * ``log_singular_values``: a fused float64 Gram kernel (J J^T when k <= d, else J^T J, read through strides, so
    non-contiguous inputs cost no copy; float16 / float32 data upcast on load, products and sums in float64), one
    program per (matrix, Gram tile); then ``torch.linalg.eigvalsh`` on the (B, m, m) Gram. A batched Jacobi
    eigensolver in Triton is not provided: the CUDA backend has one (csrc/jacvol/jacvol_cuda.cu).

Semantics (the construction of G, the column groups, the output dtypes) are those of ``fastgan.ops.jacvol``.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .synth import _box_muller, _draw32

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
GPU_MATH = not INTERPRET  # precise libdevice log / sin / cos on the GPU; the interpreter has no extern calls

GROUP = 128
HALF = tl.constexpr(64)


@triton.jit
def _gauss_pairs(k0, k1, g, GPU_MATH: tl.constexpr):
    """(cos half, sin half) of column group g for rows keyed (k0, k1) (uint32 vectors): two (R, 64) float32 tiles."""
    t = tl.arange(0, HALF)
    p = (g * HALF + t).to(tl.uint32)
    h1 = _draw32(k0[:, None], k1[:, None], p[None, :] * 2)
    h2 = _draw32(k0[:, None], k1[:, None], p[None, :] * 2 + 1)
    return _box_muller(h1, h2, GPU_MATH)


@triton.jit
def _gauss_fwd_kernel(X, KEYS, OUT, B, R, D, g_first, g_total, groups_per_split, col0, stride_xb, stride_xd,
                      GPU_MATH: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_R: tl.constexpr):
    """OUT[s, b, r] = sum over the groups of split s of X[b, c] G[r, col0 + c] (float32)."""
    pid_b = tl.program_id(0)
    pid_r = tl.program_id(1)
    pid_s = tl.program_id(2)
    bb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    rr = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    b_ok = bb < B
    r_ok = rr < R
    k0 = tl.load(KEYS + 2 * rr.to(tl.int64), mask=r_ok, other=0).to(tl.uint32)
    k1 = tl.load(KEYS + 2 * rr.to(tl.int64) + 1, mask=r_ok, other=0).to(tl.uint32)
    t = tl.arange(0, HALF)
    xrow = X + bb.to(tl.int64)[:, None] * stride_xb
    acc = tl.zeros((BLOCK_B, BLOCK_R), tl.float32)
    gi0 = pid_s * groups_per_split
    gi1 = tl.minimum(gi0 + groups_per_split, g_total)
    for gi in range(gi0, gi1):
        g = g_first + gi
        c_cos = g.to(tl.int64) * 128 + t - col0  # local column of the cosine half
        c_sin = c_cos + HALF
        m_cos = (c_cos >= 0) & (c_cos < D)
        m_sin = (c_sin >= 0) & (c_sin < D)
        x_cos = tl.load(xrow + c_cos[None, :] * stride_xd, mask=b_ok[:, None] & m_cos[None, :], other=0.0)
        x_sin = tl.load(xrow + c_sin[None, :] * stride_xd, mask=b_ok[:, None] & m_sin[None, :], other=0.0)
        g_cos, g_sin = _gauss_pairs(k0, k1, g, GPU_MATH)
        acc += tl.dot(x_cos.to(tl.float32), tl.trans(g_cos), input_precision="ieee")
        acc += tl.dot(x_sin.to(tl.float32), tl.trans(g_sin), input_precision="ieee")
    off = (pid_s.to(tl.int64) * B + bb[:, None]) * R + rr[None, :]
    tl.store(OUT + off, acc, mask=b_ok[:, None] & r_ok[None, :])


@triton.jit
def _gauss_t_kernel(Z, KEYS, OUT, B, R, COLS, g_first, col0, GPU_MATH: tl.constexpr, BLOCK_B: tl.constexpr,
                    BLOCK_R: tl.constexpr):
    """OUT[b, c] = sum_r Z[b, r] G[r, col0 + c] for the 128 columns of one group (Z, OUT contiguous float32)."""
    pid_b = tl.program_id(0)
    g = g_first + tl.program_id(1)
    bb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    b_ok = bb < B
    t = tl.arange(0, HALF)
    acc_cos = tl.zeros((BLOCK_B, HALF), tl.float32)
    acc_sin = tl.zeros((BLOCK_B, HALF), tl.float32)
    for r0 in range(0, R, BLOCK_R):
        rr = r0 + tl.arange(0, BLOCK_R)
        r_ok = rr < R
        k0 = tl.load(KEYS + 2 * rr.to(tl.int64), mask=r_ok, other=0).to(tl.uint32)
        k1 = tl.load(KEYS + 2 * rr.to(tl.int64) + 1, mask=r_ok, other=0).to(tl.uint32)
        z = tl.load(Z + bb.to(tl.int64)[:, None] * R + rr[None, :], mask=b_ok[:, None] & r_ok[None, :], other=0.0)
        g_cos, g_sin = _gauss_pairs(k0, k1, g, GPU_MATH)
        acc_cos += tl.dot(z, g_cos, input_precision="ieee")
        acc_sin += tl.dot(z, g_sin, input_precision="ieee")
    c_cos = g.to(tl.int64) * 128 + t - col0
    c_sin = c_cos + HALF
    orow = OUT + bb.to(tl.int64)[:, None] * COLS
    tl.store(orow + c_cos[None, :], acc_cos, mask=b_ok[:, None] & ((c_cos >= 0) & (c_cos < COLS))[None, :])
    tl.store(orow + c_sin[None, :], acc_sin, mask=b_ok[:, None] & ((c_sin >= 0) & (c_sin < COLS))[None, :])


def _block(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(n, 1))))


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def gauss_project(x: torch.Tensor, keys: torch.Tensor, col0: int) -> torch.Tensor:
    """float32 (B, R) = x G[:, col0:col0 + D]^T for x (B, D) float32/float16/bfloat16 (any strides)."""
    b, d = x.shape
    r = keys.shape[0]
    keys = keys.contiguous()
    g_first = col0 // GROUP
    g_total = (col0 + d + GROUP - 1) // GROUP - g_first
    block_b = _block(b, 16, 64)
    block_r = _block(r, 16, 64)
    tiles = triton.cdiv(b, block_b) * triton.cdiv(r, block_r)
    # enough D splits to give every SM a few programs; each split keeps at least 4 groups of work
    splits = max(1, min(triton.cdiv(g_total, 4), triton.cdiv(4 * _num_sms(x.device), tiles)))
    if x.device.type == "cpu":
        splits = min(splits, 2)
    per = triton.cdiv(max(g_total, 1), splits)
    splits = triton.cdiv(max(g_total, 1), per)
    part = torch.empty(splits, b, r, dtype=torch.float32, device=x.device)
    if b == 0 or r == 0:
        return part.sum(dim=0)
    grid = (triton.cdiv(b, block_b), triton.cdiv(r, block_r), splits)
    _gauss_fwd_kernel[grid](x, keys, part, b, r, d, g_first, g_total, per, col0, x.stride(0), x.stride(1),
                            GPU_MATH=GPU_MATH, BLOCK_B=block_b, BLOCK_R=block_r, num_warps=4)
    return part[0] if splits == 1 else part.sum(dim=0)


def gauss_project_t(z: torch.Tensor, keys: torch.Tensor, col0: int, cols: int) -> torch.Tensor:
    """float32 (B, cols) = z G[:, col0:col0 + cols] for z (B, R) float32."""
    z = z.contiguous()
    b, r = z.shape
    keys = keys.contiguous()
    out = torch.empty(b, cols, dtype=torch.float32, device=z.device)
    if b == 0 or cols == 0:
        return out
    if r == 0:
        return out.zero_()
    g_first = col0 // GROUP
    g_total = (col0 + cols + GROUP - 1) // GROUP - g_first
    block_b = _block(b, 16, 64)
    block_r = _block(r, 16, 32)
    grid = (triton.cdiv(b, block_b), g_total)
    _gauss_t_kernel[grid](z, keys, out, b, r, cols, g_first, col0, GPU_MATH=GPU_MATH, BLOCK_B=block_b,
                          BLOCK_R=block_r, num_warps=4)
    return out


# ---------------------------------------------------------------------------------------------------------
# log singular values: fused float64 Gram, then eigvalsh
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _gram_kernel(J, OUT, M, N, stride_b, stride_a, stride_l, BLOCK: tl.constexpr, BLOCK_L: tl.constexpr):
    """OUT[b, i, j] = sum_l J(b, i, l) J(b, j, l) in float64, J(b, a, l) at b stride_b + a stride_a + l stride_l."""
    pid_b = tl.program_id(0).to(tl.int64)
    ii = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    jj = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
    i_ok = ii < M
    j_ok = jj < M
    base = J + pid_b * stride_b
    acc = tl.zeros((BLOCK, BLOCK), tl.float64)
    for l0 in range(0, N, BLOCK_L):
        ll = l0 + tl.arange(0, BLOCK_L)
        l_ok = ll < N
        a = tl.load(base + ii.to(tl.int64)[:, None] * stride_a + ll[None, :] * stride_l,
                    mask=i_ok[:, None] & l_ok[None, :], other=0.0).to(tl.float64)
        c = tl.load(base + jj.to(tl.int64)[:, None] * stride_a + ll[None, :] * stride_l,
                    mask=j_ok[:, None] & l_ok[None, :], other=0.0).to(tl.float64)
        acc += tl.sum(a[:, None, :] * c[None, :, :], axis=2)
    off = (pid_b * M + ii[:, None]) * M + jj[None, :]
    tl.store(OUT + off, acc, mask=i_ok[:, None] & j_ok[None, :])


def gram64(jac: torch.Tensor) -> torch.Tensor:
    """float64 (B, m, m) Gram of jac (B, k, d): J J^T when k <= d, else J^T J (m = min(k, d))."""
    b, k, d = jac.shape
    if k <= d:
        m, n, sa, sl = k, d, jac.stride(1), jac.stride(2)
    else:
        m, n, sa, sl = d, k, jac.stride(2), jac.stride(1)
    out = torch.empty(b, m, m, dtype=torch.float64, device=jac.device)
    block = 16 if m <= 16 else 32
    grid = (b, triton.cdiv(m, block), triton.cdiv(m, block))
    _gram_kernel[grid](jac, out, m, n, jac.stride(0), sa, sl, BLOCK=block, BLOCK_L=8, num_warps=4)
    return out


def log_singular_values(jac: torch.Tensor, top_k: int) -> torch.Tensor:
    """float64 (B, top_k) descending 1/2 log eigenvalues of the float64 Gram (-inf where an eigenvalue is <= 0)."""
    lam = torch.linalg.eigvalsh(gram64(jac)).flip(-1)[:, :top_k]
    return torch.where(lam > 0, 0.5 * torch.log(lam.clamp_min(torch.finfo(torch.float64).tiny)),
                       torch.full_like(lam, float("-inf")))

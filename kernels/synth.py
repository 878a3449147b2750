"""Triton kernels of the Primitives-PS synthesis stages (spectral noise field, min-max quantisation, shapes).

What is fused:
  * ``spectral_field`` draws the weighted half spectrum straight from the counter-based generator: per 2-D tile
    of (row frequency, column frequency) bins it hashes the bin counters, applies Box-Muller, the Hermitian
    rules of columns 0 and size / 2, and multiplies by the anisotropic weight 1 / ((f_i^a + eps) + (f_j^b + eps)).
    The powers are taken once per tile row / column (vectors), not per bin; no noise image, no forward FFT and
    no weight tensor ever exists, and (re, im) are written interleaved, ready for ``torch.view_as_complex``.
  * ``minmax_quantize`` is two streaming passes: a split per-image min / max reduction that writes one partial
    per program, then the quantise pass, whose programs combine their image's partials themselves (no extra
    launch) and write uint8 directly. The division is IEEE round-to-nearest (``div_rn``), as in the reference.
  * ``rasterize_shapes`` walks the shape table from the last row to the first, per 2-D pixel tile, with one
    "open" flag per channel: a hit paints the open channels it owns and closes them, and the walk stops as soon
    as the whole tile is closed (front-to-back painting == the reference's back-to-front painter's algorithm).
    A small pre-pass writes one conservative float64 box per row (empty for rows that paint nothing), so a row
    that misses the tile costs four cached loads and one scalar test, before any per-pixel work. The inside
    tests are float64 in exactly the reference's operation order, vectorised as row / column vectors where the
    algebra separates (x-only and y-only terms).

Every kernel is launched with ``enable_fp_fusion=False``: no FMA contraction changes a rounding, so the uint8
(and float) images of the rasteriser and the quantiser are bit-identical to the reference.

Semantics are those of ``fastgan.ops.synth`` (the references ``_spectral_field_ref``, ``_minmax_quantize_ref``
and ``_rasterize_shapes_ref`` there). Small per-call preparations (the ellipse angles' cos / sin, computed by
torch on the table's device exactly as the reference computes them) are torch ops on tiny tensors.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Precise libdevice calls (log, sin, cos, pow) on the GPU; the interpreter cannot call extern functions, and its
# numpy versions of tl.log / tl.sin / tl.cos are accurate anyway.
GPU_MATH = not INTERPRET

# Kernel constants (globals read by @triton.jit functions must be constexpr). Python floats become float32
# constants in float32 expressions, rounded to nearest as torch rounds them.
TWO_PI_F32 = tl.constexpr(6.2831855)  # float32(2 pi), as the reference's torch.tensor(2 * math.pi, dtype=float32)
SQRT2_F32 = tl.constexpr(1.4142135)  # float32(sqrt 2)
EPS = tl.constexpr(1e-6)
INV_2_24 = tl.constexpr(5.9604644775390625e-08)  # 2^-24


def is_available() -> tuple[bool, str]:
    """(True, "") when these kernels can run for CUDA tensors, or for CPU tensors under the interpreter."""
    if torch.cuda.is_available() or INTERPRET:
        return True, ""
    return False, "no CUDA device is visible and the Triton interpreter is off"


# ---------------------------------------------------------------------------------------------------------
# counter-based random numbers (uint32 arithmetic, wraps mod 2^32)
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _mix32(x):
    """lowbias32 on a uint32 tensor."""
    x = x ^ (x >> 16)
    x = x * tl.full((), 0x7FEB352D, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full((), 0x846CA68B, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def _draw32(k0, k1, j):
    """draw(k0, k1, j) = mix(mix(j ^ k0) + k1), all uint32."""
    return _mix32(_mix32(j ^ k0) + k1)


# ---------------------------------------------------------------------------------------------------------
# spectral field
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _powf(f, e, GPU_MATH: tl.constexpr):
    """float32 f ** e (f > 0), evaluated in float64 and rounded once: as close to powf as it gets."""
    f64 = f.to(tl.float64)
    e64 = e.to(tl.float64)
    if GPU_MATH:
        r = libdevice.pow(f64, e64)
    else:
        r = tl.exp2(e64 * tl.log2(f64))
    return r.to(tl.float32)


@triton.jit
def _box_muller(h1, h2, GPU_MATH: tl.constexpr):
    """Two standard normals (cos and sin branch) from two uint32 hashes: u1 = (h1 >> 8 + 1) / 2^24 in (0, 1],
    u2 = (h2 >> 8) / 2^24; GPU_MATH picks libdevice's log / cos / sin (compiled) over tl's (interpreter)."""
    u1 = ((h1 >> 8) + 1).to(tl.float32) * INV_2_24
    u2 = (h2 >> 8).to(tl.float32) * INV_2_24
    theta = u2 * TWO_PI_F32
    if GPU_MATH:
        lg = libdevice.log(u1)
        cs = libdevice.cos(theta)
        sn = libdevice.sin(theta)
    else:
        lg = tl.log(u1)
        cs = tl.cos(theta)
        sn = tl.sin(theta)
    r = tl.sqrt_rn(-2.0 * lg)
    return r * cs, r * sn


@triton.jit
def _field_kernel(KEYS, EXPS, OUT, C, S, WH, inv, f0,
                  GPU_MATH: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    """OUT[n, c, i, j, :] = (re, im) * w[i, j] for one (image, channel) and a BLOCK_I x BLOCK_J tile of bins.

    KEYS is contiguous (n, 2) int64 holding uint32 values, EXPS contiguous (n, C, 2) float32, OUT contiguous
    (n, C, S, WH, 2) float32. ``inv`` = float32(5 / S) and ``f0`` = float32(0.1) * inv (the DC frequency).
    """
    nc = tl.program_id(0).to(tl.int64)
    n = nc // C
    c = (nc % C).to(tl.int32)
    k0 = tl.load(KEYS + 2 * n).to(tl.uint32)
    k1 = tl.load(KEYS + 2 * n + 1).to(tl.uint32)
    a = tl.load(EXPS + 2 * nc)
    b = tl.load(EXPS + 2 * nc + 1)

    i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)  # row frequency index
    j = tl.program_id(2) * BLOCK_J + tl.arange(0, BLOCK_J)  # column frequency index
    imask = i < S
    jmask = j < WH

    # weight: separable powers on the tile's row / column vectors
    fi = tl.where(i == 0, f0, tl.minimum(i, S - i).to(tl.float32) * inv)
    fj = tl.where(j == 0, f0, tl.minimum(j, S - j).to(tl.float32) * inv)
    fi = tl.where(imask, fi, 1.0)
    fj = tl.where(jmask, fj, 1.0)
    pa = _powf(fi, a, GPU_MATH) + EPS
    pb = _powf(fj, b, GPU_MATH) + EPS
    w = tl.math.div_rn(tl.full((BLOCK_I, BLOCK_J), 1.0, tl.float32), pa[:, None] + pb[None, :])

    # Hermitian columns: rows below the middle take the conjugate of their mirror row
    even = (S % 2) == 0
    herm = (j == 0) | (even & (j == S // 2))
    si = tl.where(imask, (S - i) % S, 0)
    mirror = i > si
    hm = herm[None, :] & mirror[:, None]
    src_i = tl.where(hm, si[:, None], i[:, None])
    m = ((c * S + src_i).to(tl.int64) * WH + j[None, :]).to(tl.uint32)
    m2 = m * 2
    re, im = _box_muller(_draw32(k0, k1, m2), _draw32(k0, k1, m2 + 1), GPU_MATH)
    self_conj = herm[None, :] & ((i == 0) | (even & (i == S // 2)))[:, None]
    re = tl.where(self_conj, re * SQRT2_F32, re)
    im = tl.where(self_conj, 0.0, tl.where(hm, -im, im))

    val = tl.join(re * w, im * w)  # (BLOCK_I, BLOCK_J, 2)
    off = ((nc * S + i[:, None]) * WH + j[None, :]) * 2
    k = tl.arange(0, 2)
    mask = (imask[:, None] & jmask[None, :])[:, :, None] & (k < 2)[None, None, :]
    tl.store(OUT + off[:, :, None] + k[None, None, :], val, mask=mask)


# ---------------------------------------------------------------------------------------------------------
# min-max quantisation
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _elem_offsets(b, k, s0, d2, d3, s1, s2, s3, CONTIG: tl.constexpr):
    """Memory offsets of flat element k (int64) of image b in a (n, d1, d2, d3) strided view.

    The strided path divides in int32 (the launcher sends images of 2^31 or more elements the contiguous way).
    """
    if CONTIG:
        off = b * s0 + k
    else:
        k32 = k.to(tl.int32)
        i3 = k32 % d3
        t = k32 // d3
        off = b * s0 + (t // d2).to(tl.int64) * s1 + (t % d2).to(tl.int64) * s2 + i3.to(tl.int64) * s3
    return off


@triton.jit
def _minmax_partial_kernel(X, PMIN, PMAX, L, CHUNK, SPLIT, s0, d2, d3, s1, s2, s3,
                           CONTIG: tl.constexpr, BLOCK: tl.constexpr):
    """Partial min / max of image b over elements [p * CHUNK, (p + 1) * CHUNK) -> PMIN / PMAX[b, p].

    A NaN anywhere in the chunk makes the partial min NaN (the reference's amin / amax propagate NaN).
    """
    b = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    start = p.to(tl.int64) * CHUNK
    lane = tl.arange(0, BLOCK)
    mn = tl.full((BLOCK,), float("inf"), tl.float32)
    mx = tl.full((BLOCK,), float("-inf"), tl.float32)
    nan = tl.zeros((BLOCK,), tl.int32)
    for o in range(0, CHUNK, BLOCK):
        k = start + o + lane
        mask = k < L
        v = tl.load(X + _elem_offsets(b, k, s0, d2, d3, s1, s2, s3, CONTIG), mask=mask, other=0.0)
        mn = tl.minimum(mn, tl.where(mask, v, float("inf")))
        mx = tl.maximum(mx, tl.where(mask, v, float("-inf")))
        nan = nan | (mask & (v != v)).to(tl.int32)
    lo = tl.min(mn, axis=0)
    hi = tl.max(mx, axis=0)
    lo = tl.where(tl.max(nan, axis=0) > 0, float("nan"), lo)
    tl.store(PMIN + b * SPLIT + p, lo)
    tl.store(PMAX + b * SPLIT + p, hi)


@triton.jit
def _quantize_kernel(X, PMIN, PMAX, Y, L, CHUNK, SPLIT, s0, d2, d3, s1, s2, s3,
                     CONTIG: tl.constexpr, SPLIT_P2: tl.constexpr, BLOCK: tl.constexpr):
    """Y[b, k] = clamp(floor(div_rn(x - mn, mx - mn) * 255), 0, 255) as uint8 (0 for a constant / NaN image)."""
    b = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    q = tl.arange(0, SPLIT_P2)
    qm = q < SPLIT
    pmin = tl.load(PMIN + b * SPLIT + q, mask=qm, other=float("inf"))
    pmax = tl.load(PMAX + b * SPLIT + q, mask=qm, other=float("-inf"))
    bad = tl.max((pmin != pmin).to(tl.int32), axis=0) > 0
    mn = tl.min(tl.where(pmin != pmin, float("inf"), pmin), axis=0)
    mx = tl.max(pmax, axis=0)
    rng = mx - mn
    ok = (rng > 0) & (~bad)
    den = tl.where(ok, rng, 1.0)
    start = p.to(tl.int64) * CHUNK
    lane = tl.arange(0, BLOCK)
    for o in range(0, CHUNK, BLOCK):
        k = start + o + lane
        mask = k < L
        v = tl.load(X + _elem_offsets(b, k, s0, d2, d3, s1, s2, s3, CONTIG), mask=mask, other=0.0)
        t = tl.math.div_rn(v - mn, tl.full((BLOCK,), 1.0, tl.float32) * den)
        y = tl.floor(t * 255.0)
        y = tl.where(y > 0.0, tl.minimum(y, 255.0), 0.0)  # NaN (inf - inf in the image) -> 0
        y = tl.where(ok, y, 0.0)
        tl.store(Y + b * L + k, y.to(tl.uint8), mask=mask)


# ---------------------------------------------------------------------------------------------------------
# shape rasteriser
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _shape_bbox_kernel(SHAPES, BOX, N, HAS_TEX: tl.constexpr, BLOCK: tl.constexpr):
    """BOX[r] = float64 (x0, x1, y0, y1): a conservative pixel-centre box of table row r (N rows, contiguous).

    Rows that paint nothing (invalid kind; textured without a texture) get an empty box (+inf, -inf, ...).
    Rows whose test has no finite box get an infinite one: any non-finite parameter (the exact test decides).
    Ellipses with a zero radius have no area and paint nothing.
    The margin (half a pixel plus 1e-6 of the parameters' magnitude) absorbs the float64 rounding of the
    inside tests, so culling with the box never changes a pixel.
    """
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = r < N
    row = SHAPES + r.to(tl.int64) * 10
    kind = tl.load(row, mask=m, other=0.0)
    valid = ((kind >= 1.0) & (kind <= 4.0)) | ((kind >= 9.0) & (kind <= 12.0))
    valid = valid & (kind == tl.floor(kind))
    if not HAS_TEX:
        valid = valid & (kind < 9.0)
    base = tl.where(kind > 8.0, kind - 8.0, kind)
    p0 = tl.load(row + 4, mask=m, other=0.0).to(tl.float64)
    p1 = tl.load(row + 5, mask=m, other=0.0).to(tl.float64)
    p2 = tl.load(row + 6, mask=m, other=0.0).to(tl.float64)
    p3 = tl.load(row + 7, mask=m, other=0.0).to(tl.float64)
    p4 = tl.load(row + 8, mask=m, other=0.0).to(tl.float64)
    bx = tl.abs(p2)
    by = tl.abs(p3)
    mag = tl.abs(p0) + tl.abs(p1) + bx + by + tl.abs(p4)
    seg = (base == 1.0) | (base == 4.0)  # line, rectangle: box of the two points
    lo_x = tl.where(seg, tl.minimum(p0, p2), p0)
    hi_x = tl.where(seg, tl.maximum(p0, p2), p0)
    lo_y = tl.where(seg, tl.minimum(p1, p3), p1)
    hi_y = tl.where(seg, tl.maximum(p1, p3), p1)
    ext = tl.where(base == 1.0, tl.abs(p4) * 0.5,
                   tl.where(base == 2.0, bx, tl.where(base == 3.0, tl.maximum(bx, by), 0.0)))
    ext = ext + 0.5 + mag * 1e-6
    unbounded = ~(mag < float("inf"))
    valid = valid & ~((base == 3.0) & (p2 * p3 == 0.0))  # a zero-radius ellipse has no area
    inf = float("inf")
    x0 = tl.where(valid, tl.where(unbounded, -inf, lo_x - ext), inf)
    x1 = tl.where(valid, tl.where(unbounded, inf, hi_x + ext), -inf)
    y0 = tl.where(valid, tl.where(unbounded, -inf, lo_y - ext), inf)
    y1 = tl.where(valid, tl.where(unbounded, inf, hi_y + ext), -inf)
    out = BOX + r.to(tl.int64) * 4
    tl.store(out, x0, mask=m)
    tl.store(out + 1, x1, mask=m)
    tl.store(out + 2, y0, mask=m)
    tl.store(out + 3, y1, mask=m)


@triton.jit
def _paint_channel(c, tex, hit, textured, v, o, IS_U8: tl.constexpr, HAS_TEX: tl.constexpr):
    """One channel of one table row: (new values, still-open mask) of the tile. ``c`` is the row's raw colour value
    for the channel (for a textured row: its flag), ``tex`` the channel's texture tile."""
    if IS_U8:
        f = tl.minimum(tl.maximum(c, 0.0), 255.0).to(tl.uint8)
    else:
        f = c
    if HAS_TEX:
        f = tl.where(textured, tex, f)
        g = hit & ((~textured) | (c != 0.0))
    else:
        g = hit
    g = g & o
    return tl.where(g, f, v), o & (~g)


# At most 4 pixels per thread: the float64 temporaries of the inside tests cost 2 registers per pixel each
# (ptxas for sm_90a: ~110 registers at 4 pixels / thread, ~80 at 2, but 160-200 at 8).
_RASTER_CFGS = [
    triton.Config({"BLOCK_H": 32, "BLOCK_W": 32}, num_warps=8),
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 32}, num_warps=4),
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 16}, num_warps=2),
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 16}, num_warps=4),
    triton.Config({"BLOCK_H": 32, "BLOCK_W": 64}, num_warps=16),
]


@triton.autotune(configs=_RASTER_CFGS[:1] if INTERPRET else _RASTER_CFGS,
                 key=["H", "W", "C", "IS_U8", "HAS_TEX"])
@triton.jit
def _raster_kernel(CANVAS, TEX, SHAPES, BOX, TRIG, OUT, S, H, W,
                   scb, scc, sch, scw, stb, stc, sth, stw, sob, soc, soh, sow,
                   C: tl.constexpr, IS_U8: tl.constexpr, HAS_TEX: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """One program per (image, BLOCK_H x BLOCK_W pixel tile); 1-D grid, image-major.

    SHAPES is contiguous (B, S, 10) float32, BOX contiguous (B, S, 4) float64 from ``_shape_bbox_kernel`` and
    TRIG contiguous (B, S, 2) float64 = (cos, sin) of each row's p4 * pi / 180 (only ellipses read it).
    Canvas, texture and output are addressed through their strides.
    """
    tiles_w = tl.cdiv(W, BLOCK_W)
    tiles = tl.cdiv(H, BLOCK_H) * tiles_w
    pid = tl.program_id(0)
    b = (pid // tiles).to(tl.int64)
    t = pid % tiles
    i0 = (t // tiles_w) * BLOCK_H
    j0 = (t % tiles_w) * BLOCK_W
    ii = i0 + tl.arange(0, BLOCK_H)
    jj = j0 + tl.arange(0, BLOCK_W)
    inb = (ii < H)[:, None] & (jj < W)[None, :]
    y = ii.to(tl.float64)[:, None]  # (BLOCK_H, 1) pixel centres
    x = jj.to(tl.float64)[None, :]  # (1, BLOCK_W)
    xlo = j0.to(tl.float64)
    xhi = xlo + (BLOCK_W - 1)
    ylo = i0.to(tl.float64)
    yhi = ylo + (BLOCK_H - 1)

    cpix = b * scb + ii[:, None].to(tl.int64) * sch + jj[None, :].to(tl.int64) * scw
    v0 = tl.load(CANVAS + cpix, mask=inb)
    o0 = inb
    v1 = v0
    o1 = tl.zeros((BLOCK_H, BLOCK_W), tl.int1)
    v2 = v0
    o2 = tl.zeros((BLOCK_H, BLOCK_W), tl.int1)
    if C > 1:
        v1 = tl.load(CANVAS + cpix + scc, mask=inb)
        o1 = inb
    if C > 2:
        v2 = tl.load(CANVAS + cpix + 2 * scc, mask=inb)
        o2 = inb
    t0 = v0  # texture tiles; without a texture they are bound but never read
    t1 = v0
    t2 = v0
    if HAS_TEX:
        tpix = b * stb + ii[:, None].to(tl.int64) * sth + jj[None, :].to(tl.int64) * stw
        t0 = tl.load(TEX + tpix, mask=inb)
        if C > 1:
            t1 = tl.load(TEX + tpix + stc, mask=inb)
        if C > 2:
            t2 = tl.load(TEX + tpix + 2 * stc, mask=inb)

    # Front to back: the last row that covers a pixel decides it; stop when every pixel of the tile is closed.
    n_open = tl.sum(inb.to(tl.int32))
    s = S - 1
    while (s >= 0) & (n_open > 0):
        rs = b * S + s
        box = BOX + rs * 4
        bx0 = tl.load(box)
        bx1 = tl.load(box + 1)
        by0 = tl.load(box + 2)
        by1 = tl.load(box + 3)
        if (bx0 <= xhi) & (bx1 >= xlo) & (by0 <= yhi) & (by1 >= ylo):
            row = SHAPES + rs * 10
            kk = tl.load(row).to(tl.int32)  # a valid kind (the box is empty otherwise)
            textured = kk > 8
            base = tl.where(textured, kk - 8, kk)
            p0 = tl.load(row + 4).to(tl.float64)
            p1 = tl.load(row + 5).to(tl.float64)
            p2 = tl.load(row + 6).to(tl.float64)
            p3 = tl.load(row + 7).to(tl.float64)
            p4 = tl.load(row + 8).to(tl.float64)
            # inside tests: the reference's operations in its order (x-only / y-only terms as vectors)
            if base == 1:  # line: capsule of half-width p4 / 2 around (p0, p1)-(p2, p3)
                dx = p2 - p0
                dy = p3 - p1
                wx = x - p0
                wy = y - p1
                ll = dx * dx + dy * dy
                dot = wx * dx + wy * dy
                hh = (p4 * 0.5) * (p4 * 0.5)
                d0 = wx * wx + wy * wy
                ex = x - p2
                ey = y - p3
                d1 = ex * ex + ey * ey
                cross = wx * dy - wy * dx
                hit = tl.where(dot <= 0.0, d0 <= hh, tl.where(dot >= ll, d1 <= hh, cross * cross <= hh * ll))
            elif base == 2:  # circle
                cx = x - p0
                cy = y - p1
                hit = cx * cx + cy * cy <= p2 * p2
            elif base == 3:  # ellipse, rx axis along (cos th, sin th)
                cth = tl.load(TRIG + rs * 2)
                sth_ = tl.load(TRIG + rs * 2 + 1)
                cx = x - p0
                cy = y - p1
                u = cx * cth + cy * sth_
                v = cy * cth - cx * sth_
                ur = u * p3
                vr = v * p2
                rr = p2 * p3
                hit = ur * ur + vr * vr <= rr * rr  # rr != 0: zero-radius rows have an empty box
            else:  # rectangle, inclusive. torch.minimum / maximum propagate NaN (then nothing is inside); the
                # GPU's min / max return the other operand, so a NaN corner is tested explicitly.
                no_nan = (p0 == p0) & (p1 == p1) & (p2 == p2) & (p3 == p3)
                rx0 = tl.where(no_nan, tl.minimum(p0, p2), float("nan"))
                rx1 = tl.where(no_nan, tl.maximum(p0, p2), float("nan"))
                ry0 = tl.where(no_nan, tl.minimum(p1, p3), float("nan"))
                ry1 = tl.where(no_nan, tl.maximum(p1, p3), float("nan"))
                hit = ((x >= rx0) & (x <= rx1)) & ((y >= ry0) & (y <= ry1))
            # Paint: a solid row paints every open covered pixel with its colour (uint8 canvas: clamped to
            # [0, 255], truncated) and closes it; a textured row does so, with the texture, only in the channels
            # whose colour value is non-zero.
            v0, o0 = _paint_channel(tl.load(row + 1), t0, hit, textured, v0, o0, IS_U8, HAS_TEX)
            opn = o0
            if C > 1:
                v1, o1 = _paint_channel(tl.load(row + 2), t1, hit, textured, v1, o1, IS_U8, HAS_TEX)
                opn = opn | o1
            if C > 2:
                v2, o2 = _paint_channel(tl.load(row + 3), t2, hit, textured, v2, o2, IS_U8, HAS_TEX)
                opn = opn | o2
            n_open = tl.sum(opn.to(tl.int32))
        s -= 1

    opix = b * sob + ii[:, None].to(tl.int64) * soh + jj[None, :].to(tl.int64) * sow
    tl.store(OUT + opix, v0, mask=inb)
    if C > 1:
        tl.store(OUT + opix + soc, v1, mask=inb)
    if C > 2:
        tl.store(OUT + opix + 2 * soc, v2, mask=inb)


# ---------------------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------------------


def _field_blocks(size: int) -> tuple[int, int, int]:
    wh = size // 2 + 1
    if INTERPRET:  # few, large programs
        return min(64, triton.next_power_of_2(size)), min(64, triton.next_power_of_2(wh)), 4
    # 16 bins (128 bytes of interleaved re/im) per row segment; 64 rows -> 1024 bins per program, 4 per thread
    return 64, 16, 8


def spectral_field(keys: torch.Tensor, exponents: torch.Tensor, size: int) -> torch.Tensor:
    """float32 (n, C, size, size // 2 + 1, 2): the weighted half spectrum of ``fastgan.ops.synth``."""
    n, c = exponents.shape[0], exponents.shape[1]
    wh = size // 2 + 1
    out = torch.empty((n, c, size, wh, 2), device=exponents.device, dtype=torch.float32)
    if out.numel() == 0:
        return out
    keys = keys.to(torch.int64).contiguous()
    exps = exponents.to(torch.float32).contiguous()
    inv = torch.tensor(5.0, dtype=torch.float32) / torch.tensor(float(size), dtype=torch.float32)
    f0 = torch.tensor(0.1, dtype=torch.float32) * inv
    bi, bj, warps = _field_blocks(size)
    grid = (n * c, triton.cdiv(size, bi), triton.cdiv(wh, bj))
    _field_kernel[grid](keys, exps, out, c, size, wh, inv.item(), f0.item(),
                        GPU_MATH=GPU_MATH, BLOCK_I=bi, BLOCK_J=bj, num_warps=warps, enable_fp_fusion=False)
    return out


_QUANT_BLOCK = 1024 if INTERPRET else 4096
_QUANT_WARPS = 4 if INTERPRET else 8
_QUANT_PROGRAMS = 4 if INTERPRET else 2048  # target number of programs per launch (GPU: ~16 per SM)


def _flat4(x: torch.Tensor):
    """(x', contiguous?, (d2, d3), (s0, s1, s2, s3)) with x' a (n, d1, d2, d3) view of x when x is strided."""
    if x.is_contiguous():
        return x, True, (1, 1), (x[0].numel(), 1, 1, 1)
    if x.dim() > 4 or x[0].numel() >= 2**31:
        x = x.contiguous()
        return x, True, (1, 1), (x[0].numel(), 1, 1, 1)
    sizes = [1] * (4 - x.dim()) + list(x.shape[1:])
    strides = [0] * (4 - x.dim()) + list(x.stride()[1:])
    return x, False, (sizes[1], sizes[2]), (x.stride(0), strides[0], strides[1], strides[2])


def minmax_quantize(x: torch.Tensor) -> torch.Tensor:
    """uint8 of x's shape: per image (dim 0) floor((x - min) / (max - min) * 255), 0 for a constant image."""
    n = x.shape[0]
    y = torch.empty(x.shape, device=x.device, dtype=torch.uint8)
    if y.numel() == 0:
        return y
    x = x.to(torch.float32)
    length = x[0].numel()
    x, contig, (d2, d3), (s0, s1, s2, s3) = _flat4(x)
    block = _QUANT_BLOCK
    split = max(1, min(triton.cdiv(length, 4 * block), triton.cdiv(_QUANT_PROGRAMS, n), 1024))
    chunk = triton.cdiv(triton.cdiv(length, split), block) * block
    split = triton.cdiv(length, chunk)
    pmin = torch.empty((n, split), device=x.device, dtype=torch.float32)
    pmax = torch.empty((n, split), device=x.device, dtype=torch.float32)
    grid = (n, split)
    _minmax_partial_kernel[grid](x, pmin, pmax, length, chunk, split, s0, d2, d3, s1, s2, s3,
                                 CONTIG=contig, BLOCK=block, num_warps=_QUANT_WARPS, enable_fp_fusion=False)
    _quantize_kernel[grid](x, pmin, pmax, y, length, chunk, split, s0, d2, d3, s1, s2, s3,
                           CONTIG=contig, SPLIT_P2=max(2, triton.next_power_of_2(split)), BLOCK=block,
                           num_warps=_QUANT_WARPS, enable_fp_fusion=False)
    return y


_BOX_BLOCK = 1024 if INTERPRET else 256


def rasterize_shapes(canvas: torch.Tensor, shapes: torch.Tensor, texture: Optional[torch.Tensor]) -> torch.Tensor:
    """A painted copy of ``canvas`` (same strides as ``torch.empty_like``); see ``fastgan.ops.synth``."""
    b, c, h, w = canvas.shape
    out = torch.empty_like(canvas)
    if out.numel() == 0:
        return out
    s = shapes.shape[1]
    has_tex = texture is not None
    tex = texture if has_tex else canvas  # dummy pointer, never read
    if has_tex and tex.dtype != canvas.dtype:
        raise TypeError(f"texture dtype {tex.dtype} does not match the canvas dtype {canvas.dtype}")
    table = shapes.to(torch.float32).contiguous()
    rows = b * s
    box = torch.empty((b, s, 4), device=canvas.device, dtype=torch.float64)
    # cos / sin of the ellipse angles with torch, on the table's device, exactly as the reference evaluates them
    trig = torch.empty((b, s, 2), device=canvas.device, dtype=torch.float64)
    if rows:
        th = table[..., 8].to(torch.float64) * (math.pi / 180.0)
        torch.cos(th, out=trig[..., 0])
        torch.sin(th, out=trig[..., 1])
        _shape_bbox_kernel[(triton.cdiv(rows, _BOX_BLOCK),)](table, box, rows, HAS_TEX=has_tex, BLOCK=_BOX_BLOCK,
                                                            num_warps=4, enable_fp_fusion=False)

    def grid(meta):
        return (b * triton.cdiv(h, meta["BLOCK_H"]) * triton.cdiv(w, meta["BLOCK_W"]),)

    _raster_kernel[grid](canvas, tex, table, box, trig, out, s, h, w,
                         *canvas.stride(), *tex.stride(), *out.stride(),
                         C=c, IS_U8=canvas.dtype == torch.uint8, HAS_TEX=has_tex, enable_fp_fusion=False)
    return out


__all__ = ["spectral_field", "minmax_quantize", "rasterize_shapes", "is_available"]

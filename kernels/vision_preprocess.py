"""Triton kernels of the fused vision-backbone preprocessing (``fastgan.ops.vision_preprocess``).

Semantics are those of ``fastgan.ops.vision_preprocess._vision_preprocess_ref``: DiffAugment (brightness,
saturation, contrast, translation, cutout, each optional, in that order) -> x * 0.5 + 0.5 -> area resize to
(OH, OW) (adaptive average pooling windows rows [floor(p H / OH), ceil((p + 1) H / OH)), columns likewise) ->
(x - mean_c) / std_c. The per-sample parameters come as a float64 table (N, 9)
``[b, s, k, ty, tx, y0, y1, x0, x1]`` (see that module); which ops are on is a set of constexpr flags.

Forward (two launches when contrast is on, else one):
  * ``_mean_kernel``: per image, split partial sums of the colour-adjusted image y2 (brightness + saturation);
    the contrast mean M = sum / (C H W) is formed from the partials in float64.
  * ``_fwd_kernel``: one program per (image, channel, block of output pixels). For each output pixel it walks its
    pooling window, maps each window pixel (i, j) back through cutout (zero) and translation (source
    (i + ty, j + tx), zero outside), loads the C channels of the source pixel once to form the saturation mean, applies
    the colour ops, and accumulates x * 0.5 + 0.5; then divides by the window size and normalises. Only the
    (N, C, OH, OW) output is written: the augmented native-resolution image never exists.

Backward (gradient w.r.t. x only; the map is affine, so nothing of the forward is saved but the parameters):
  * ``_bwd_sum_kernel`` (contrast only): per image, split partial sums of the gradient g3 at the translation
    output (before the contrast adjoint), which the contrast adjoint needs.
  * ``_bwd_kernel``: one program per (image, block of native pixels). For each pixel and channel it gathers the
    area-resize adjoint (the output cells whose windows contain the translated source pixel, each weighted by
    1 / window size) times 0.5 / std_c, masked by cutout and translation validity; then applies the contrast
    adjoint g2 = k g3 + (1 - k) sum(g3) / (C H W) and the saturation adjoint
    g1_c = s g2_c + (1 - s) sum_c(g2) / C (brightness passes the gradient through).

Arithmetic is float32 for float32 / float16 / bfloat16 inputs (loaded and upcast; the interpreter cannot do bfloat16
arithmetic, so bfloat16 runs on GPUs only). Offsets of the image base are int64; per-image offsets are int32 (checked by
the caller: C H W and C OH OW below 2^31).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Interpreted programs cost ~1-3 ms each plus numpy work per lane, so the interpreter gets few blocks sized to the
# problem (at most 1024 lanes); GPUs get 256-lane blocks.
MAX_BLOCK = 1024 if INTERPRET else 256
SPLIT_CHUNK = 1 << 14  # native pixels per partial sum in the reduction kernels


@triton.jit
def _colour(X, base, HW, off, ok, c_sel, b, s, NC: tl.constexpr, BRIGHT: tl.constexpr, SAT: tl.constexpr,
            BLOCK: tl.constexpr):
    """y2 (brightness, then saturation) of channel ``c_sel`` at flat native offsets ``off`` (masked by ``ok``)."""
    tot = tl.zeros([BLOCK], tl.float32)
    vc = tl.zeros([BLOCK], tl.float32)
    for cc in tl.static_range(NC):
        v = tl.load(X + base + cc * HW + off, mask=ok, other=0.0).to(tl.float32)
        if BRIGHT:
            v = v + b
        tot += v
        vc = tl.where(c_sel == cc, v, vc)
    if SAT:
        m = tot / NC
        vc = (vc - m) * s + m
    return vc


@triton.jit
def _load_params(TAB, n, IDX: tl.constexpr):
    row = TAB + n * 9
    b = tl.load(row + 0).to(tl.float32)
    s = tl.load(row + 1).to(tl.float32)
    k = tl.load(row + 2).to(tl.float32)
    ty = tl.load(row + 3).to(IDX)
    tx = tl.load(row + 4).to(IDX)
    y0 = tl.load(row + 5).to(IDX)
    y1 = tl.load(row + 6).to(IDX)
    x0 = tl.load(row + 7).to(IDX)
    x1 = tl.load(row + 8).to(IDX)
    return b, s, k, ty, tx, y0, y1, x0, x1


@triton.jit
def _mean_kernel(X, TAB, PART, H, W, CHUNK, SPLIT, NC: tl.constexpr, BRIGHT: tl.constexpr, SAT: tl.constexpr,
                 IDX: tl.constexpr, BLOCK: tl.constexpr):
    """PART[n, sp] = sum over the channels and the native pixels [sp CHUNK, (sp + 1) CHUNK) of y2."""
    n = tl.program_id(0).to(IDX)
    sp = tl.program_id(1).to(IDX)
    HW = H * W
    b, s, k, ty, tx, y0, y1, x0, x1 = _load_params(TAB, n, IDX)
    base = n.to(tl.int64) * NC * HW
    lo = sp * CHUNK
    hi = tl.minimum(lo + CHUNK, HW)
    acc = tl.zeros([BLOCK], tl.float32)
    for it in range(0, CHUNK, BLOCK):
        off = lo + it + tl.arange(0, BLOCK).to(IDX)
        ok = off < hi
        tot = tl.zeros([BLOCK], tl.float32)
        for cc in tl.static_range(NC):
            v = tl.load(X + base + cc * HW + off, mask=ok, other=0.0).to(tl.float32)
            if BRIGHT:
                v = v + b
            tot += v
        if SAT:
            m = tot / NC
            for cc in tl.static_range(NC):
                v = tl.load(X + base + cc * HW + off, mask=ok, other=0.0).to(tl.float32)
                if BRIGHT:
                    v = v + b
                acc += tl.where(ok, (v - m) * s + m, 0.0)
        else:
            acc += tl.where(ok, tot, 0.0)
    tl.store(PART + n * SPLIT + sp, tl.sum(acc, axis=0))


@triton.jit
def _fwd_kernel(X, TAB, MEANS, STDS, CMEAN, OUT, H, W, OH, OW, KH, KW, NC: tl.constexpr, BRIGHT: tl.constexpr,
                SAT: tl.constexpr, CONTR: tl.constexpr, TRANS: tl.constexpr, CUT: tl.constexpr,
                IDX: tl.constexpr, BLOCK: tl.constexpr):
    pid_nc = tl.program_id(0).to(IDX)
    n = pid_nc // NC
    c = pid_nc % NC
    HW = H * W
    offs = tl.program_id(1).to(IDX) * BLOCK + tl.arange(0, BLOCK).to(IDX)
    omask = offs < OH * OW
    p = offs // OW
    q = offs % OW
    h0 = (p * H) // OH
    h1 = ((p + 1) * H + OH - 1) // OH
    w0 = (q * W) // OW
    w1 = ((q + 1) * W + OW - 1) // OW
    b, s, k, ty, tx, y0, y1, x0, x1 = _load_params(TAB, n, IDX)
    if CONTR:
        cm = tl.load(CMEAN + n)
    base = n.to(tl.int64) * NC * HW
    acc = tl.zeros([BLOCK], tl.float32)
    for dh in range(0, KH):
        i = h0 + dh
        for dw in range(0, KW):
            j = w0 + dw
            inwin = omask & (i < h1) & (j < w1)
            si = i
            sj = j
            if TRANS:
                si = i + ty
                sj = j + tx
            ok = inwin & (si >= 0) & (si < H) & (sj >= 0) & (sj < W)
            if CUT:
                ok = ok & ~((i >= y0) & (i < y1) & (j >= x0) & (j < x1))
            off = tl.minimum(tl.maximum(si, 0), H - 1) * W + tl.minimum(tl.maximum(sj, 0), W - 1)
            y = _colour(X, base, HW, off, ok, c, b, s, NC, BRIGHT, SAT, BLOCK)
            if CONTR:
                y = (y - cm) * k + cm
            y = tl.where(ok, y, 0.0)
            acc += tl.where(inwin, y * 0.5 + 0.5, 0.0)
    cnt = ((h1 - h0) * (w1 - w0)).to(tl.float32)
    mean_c = tl.load(MEANS + c)
    std_c = tl.load(STDS + c)
    res = (acc / cnt - mean_c) / std_c
    obase = pid_nc.to(tl.int64) * OH * OW
    tl.store(OUT + obase + offs, res.to(OUT.dtype.element_ty), mask=omask)


@triton.jit
def _grad3(G, gbase, std_c, a, bb, ok0, H, W, OH, OW, KP, KQ, ty, tx, y0, y1, x0, x1, TRANS: tl.constexpr,
           CUT: tl.constexpr, BLOCK: tl.constexpr):
    """Gradient at the translation output for native pixels (a, bb) of one channel (``gbase``: its grad plane)."""
    i = a
    j = bb
    if TRANS:
        i = a - ty
        j = bb - tx
    ok = ok0 & (i >= 0) & (i < H) & (j >= 0) & (j < W)
    if CUT:
        ok = ok & ~((i >= y0) & (i < y1) & (j >= x0) & (j < x1))
    i = tl.minimum(tl.maximum(i, 0), H - 1)
    j = tl.minimum(tl.maximum(j, 0), W - 1)
    p_lo = (i * OH) // H
    p_hi = tl.minimum(((i + 1) * OH - 1) // H, OH - 1)
    q_lo = (j * OW) // W
    q_hi = tl.minimum(((j + 1) * OW - 1) // W, OW - 1)
    acc = tl.zeros([BLOCK], tl.float32)
    for dp in range(0, KP):
        p = p_lo + dp
        rok = ok & (p <= p_hi)
        hc = ((p + 1) * H + OH - 1) // OH - (p * H) // OH
        for dq in range(0, KQ):
            q = q_lo + dq
            m = rok & (q <= q_hi)
            wc = ((q + 1) * W + OW - 1) // OW - (q * W) // OW
            g = tl.load(G + gbase + p * OW + q, mask=m, other=0.0).to(tl.float32)
            acc += tl.where(m, g / std_c / (hc * wc).to(tl.float32), 0.0)
    return acc * 0.5


@triton.jit
def _bwd_sum_kernel(G, TAB, STDS, PART, H, W, OH, OW, KP, KQ, CHUNK, SPLIT, NC: tl.constexpr, TRANS: tl.constexpr,
                    CUT: tl.constexpr, IDX: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(IDX)
    sp = tl.program_id(1).to(IDX)
    HW = H * W
    b, s, k, ty, tx, y0, y1, x0, x1 = _load_params(TAB, n, IDX)
    lo = sp * CHUNK
    hi = tl.minimum(lo + CHUNK, HW)
    acc = tl.zeros([BLOCK], tl.float32)
    for it in range(0, CHUNK, BLOCK):
        off = lo + it + tl.arange(0, BLOCK).to(IDX)
        ok = off < hi
        a = off // W
        bb = off % W
        for cc in tl.static_range(NC):
            gbase = (n.to(tl.int64) * NC + cc) * OH * OW
            acc += _grad3(G, gbase, tl.load(STDS + cc), a, bb, ok, H, W, OH, OW, KP, KQ, ty, tx, y0, y1, x0, x1,
                          TRANS, CUT, BLOCK)
    tl.store(PART + n * SPLIT + sp, tl.sum(acc, axis=0))


@triton.jit
def _bwd_kernel(G, TAB, STDS, GSUM, GX, H, W, OH, OW, KP, KQ, inv_chw, NC: tl.constexpr, SAT: tl.constexpr,
                CONTR: tl.constexpr, TRANS: tl.constexpr, CUT: tl.constexpr, IDX: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(IDX)
    HW = H * W
    off = tl.program_id(1).to(IDX) * BLOCK + tl.arange(0, BLOCK).to(IDX)
    ok = off < HW
    a = off // W
    bb = off % W
    b, s, k, ty, tx, y0, y1, x0, x1 = _load_params(TAB, n, IDX)
    if CONTR:
        gm = tl.load(GSUM + n) * inv_chw
    gtot = tl.zeros([BLOCK], tl.float32)
    if SAT:
        for cc in tl.static_range(NC):
            gbase = (n.to(tl.int64) * NC + cc) * OH * OW
            g = _grad3(G, gbase, tl.load(STDS + cc), a, bb, ok, H, W, OH, OW, KP, KQ, ty, tx, y0, y1, x0, x1,
                       TRANS, CUT, BLOCK)
            if CONTR:
                g = g * k + (1.0 - k) * gm
            gtot += g
    for cc in tl.static_range(NC):
        gbase = (n.to(tl.int64) * NC + cc) * OH * OW
        g = _grad3(G, gbase, tl.load(STDS + cc), a, bb, ok, H, W, OH, OW, KP, KQ, ty, tx, y0, y1, x0, x1,
                   TRANS, CUT, BLOCK)
        if CONTR:
            g = g * k + (1.0 - k) * gm
        if SAT:
            g = g * s + (1.0 - s) * (gtot / NC)
        xbase = (n.to(tl.int64) * NC + cc) * HW
        tl.store(GX + xbase + off, g.to(GX.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------------------

BRIGHTNESS, SATURATION, CONTRAST, TRANSLATION, CUTOUT = 1, 2, 4, 8, 16


def _flags(flags: int) -> dict:
    return dict(SAT=bool(flags & SATURATION), CONTR=bool(flags & CONTRAST), TRANS=bool(flags & TRANSLATION),
                CUT=bool(flags & CUTOUT))


# Index arithmetic type: int32 on GPUs; int64 under the interpreter, which checks every int32 add / mul for overflow
# with extra numpy work (several times the cost of the kernel's own arithmetic) and skips the check for int64.
IDX = tl.int64 if INTERPRET else tl.int32


def window_extent(src: int, dst: int) -> int:
    """Upper bound of the number of source pixels in one adaptive-pooling window (src -> dst)."""
    return (src + dst - 2) // dst + 1


def _block(work: int) -> int:
    """Lanes per program for ``work`` elements: MAX_BLOCK, or less under the interpreter for small problems."""
    if not INTERPRET:
        return MAX_BLOCK
    return max(16, min(MAX_BLOCK, triton.next_power_of_2(work)))


def _split(hw: int, block: int) -> tuple[int, int]:
    chunk = min(SPLIT_CHUNK, triton.cdiv(hw, block) * block)
    return chunk, triton.cdiv(hw, chunk)


def _check_index_range(h: int, w: int, out_h: int, out_w: int) -> None:
    """Window arithmetic multiplies sizes (p H, i OH) in 32-bit integers on GPUs."""
    if max(h + 1, out_h + 1) * max(h, out_h) >= 2**31 or max(w + 1, out_w + 1) * max(w, out_w) >= 2**31:
        raise ValueError(f"vision_preprocess (triton): sizes {h}x{w} -> {out_h}x{out_w} overflow 32-bit window "
                         "arithmetic; use impl='cpp' / 'cuda' (64-bit indices)")


def _stats(values, device) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)


def forward(x: torch.Tensor, table: torch.Tensor, flags: int, out_h: int, out_w: int, mean, std) -> torch.Tensor:
    """(N, C, out_h, out_w) in x's dtype. See the module docstring."""
    x = x.contiguous()
    table = table.to(device=x.device, dtype=torch.float64).contiguous()
    n, c, h, w = x.shape
    _check_index_range(h, w, out_h, out_w)
    out = torch.empty((n, c, out_h, out_w), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    f = _flags(flags)
    means, stds = _stats(mean, x.device), _stats(std, x.device)
    if f["CONTR"]:
        blk = _block(h * w)
        chunk, split = _split(h * w, blk)
        part = torch.empty((n, split), dtype=torch.float32, device=x.device)
        _mean_kernel[(n, split)](x, table, part, h, w, chunk, split, NC=c, BRIGHT=bool(flags & BRIGHTNESS),
                                 SAT=f["SAT"], IDX=IDX, BLOCK=blk)
        cmean = (part.to(torch.float64).sum(dim=1) / (c * h * w)).to(torch.float32)
    else:
        cmean = means  # unused
    blk = _block(out_h * out_w)
    grid = (n * c, triton.cdiv(out_h * out_w, blk))
    _fwd_kernel[grid](x, table, means, stds, cmean, out, h, w, out_h, out_w, window_extent(h, out_h),
                      window_extent(w, out_w), NC=c, BRIGHT=bool(flags & BRIGHTNESS), IDX=IDX, BLOCK=blk, **f)
    return out


def backward(grad_out: torch.Tensor, table: torch.Tensor, flags: int, height: int, width: int, std) -> torch.Tensor:
    """Gradient w.r.t. x (N, C, height, width), in grad_out's dtype."""
    g = grad_out.contiguous()
    table = table.to(device=g.device, dtype=torch.float64).contiguous()
    n, c, oh, ow = g.shape
    h, w = height, width
    _check_index_range(h, w, oh, ow)
    gx = torch.empty((n, c, h, w), dtype=g.dtype, device=g.device)
    if gx.numel() == 0:
        return gx
    f = _flags(flags)
    stds = _stats(std, g.device)
    kp, kq = window_extent(oh, h), window_extent(ow, w)
    blk = _block(h * w)
    if f["CONTR"]:
        chunk, split = _split(h * w, blk)
        part = torch.empty((n, split), dtype=torch.float32, device=g.device)
        _bwd_sum_kernel[(n, split)](g, table, stds, part, h, w, oh, ow, kp, kq, chunk, split, NC=c,
                                    TRANS=f["TRANS"], CUT=f["CUT"], IDX=IDX, BLOCK=blk)
        gsum = part.to(torch.float64).sum(dim=1).to(torch.float32)
    else:
        gsum = stds  # unused
    grid = (n, triton.cdiv(h * w, blk))
    _bwd_kernel[grid](g, table, stds, gsum, gx, h, w, oh, ow, kp, kq, 1.0 / (c * h * w), NC=c, IDX=IDX, BLOCK=blk, **f)
    return gx

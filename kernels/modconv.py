"""Triton kernels of the modulated-conv / AdaFM-conv family (implicit-GEMM convolution).

What is fused:
  * activations are scaled per (sample, reduction channel) on load ("modulate on load"), so no per-sample
    weight tensor ever exists;
  * demodulation (a per (sample, output channel) factor) is the epilogue;
  * AdaFM's W' = gamma * W + beta is applied to each weight tile on load (W' is never stored);
  * the weight-gradient kernel reduces over the kernel taps in registers: for AdaFM it produces
    grad_gamma = sum_taps dW' * W and grad_beta = sum_taps dW' without storing dW' (and dW = dW' * gamma
    only when the weight is trainable); for modulated conv it applies the demodulation correction in its epilogue.

Semantics are those of ``fastgan.ops.modconv`` (the references there); the small per-call (N, C) preparations
(sigma, demodulation coefficients) are torch ops on tiny tensors.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

_FWD_CFGS = [
    triton.Config({"BLOCK_P": 64, "BLOCK_CO": 64, "BLOCK_R": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_P": 128, "BLOCK_CO": 64, "BLOCK_R": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_P": 64, "BLOCK_CO": 128, "BLOCK_R": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_P": 128, "BLOCK_CO": 128, "BLOCK_R": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_P": 32, "BLOCK_CO": 64, "BLOCK_R": 64}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_P": 16, "BLOCK_CO": 128, "BLOCK_R": 64}, num_warps=4, num_stages=4),
]
_WGRAD_CFGS = [
    triton.Config({"BLOCK_CO": 64, "BLOCK_CI": 64, "BLOCK_P": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_CO": 32, "BLOCK_CI": 32, "BLOCK_P": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_CO": 64, "BLOCK_CI": 64, "BLOCK_P": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_CO": 16, "BLOCK_CI": 32, "BLOCK_P": 64}, num_warps=4, num_stages=3),
]
# The interpreter runs one program at a time in Python and cannot autotune over several configs.
_FWD_INTERP = [triton.Config({"BLOCK_P": 64, "BLOCK_CO": 32, "BLOCK_R": 32})]
_WGRAD_INTERP = [triton.Config({"BLOCK_CO": 32, "BLOCK_CI": 32, "BLOCK_P": 64})]


@triton.autotune(configs=_FWD_INTERP if INTERPRET else _FWD_CFGS,
                 key=["R", "CO", "YH", "YW", "KH", "KW", "SH", "SW", "TRANSPOSED", "HAS_PRE", "HAS_POST",
                      "HAS_AFFINE", "HAS_BIAS", "DOT_DTYPE", "PREC"])
@triton.jit
def _conv_kernel(X, W, GAMMA, BETA, PRE, POST, BIAS, Y,
                 R, CO, XH, XW, YH, YW, PH, PW,
                 sxn, sxr, sxh, sxw, swco, swr, swh, sww, sgco, sgr,
                 KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                 TRANSPOSED: tl.constexpr, HAS_PRE: tl.constexpr, HAS_POST: tl.constexpr,
                 HAS_AFFINE: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_DTYPE: tl.constexpr, PREC: tl.constexpr,
                 BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_R: tl.constexpr):
    """Y[n, co, p] = post[n, co] * sum_{r, taps} X[n, r, pos(p, tap)] * pre[n, r] * W'[co, r, tap] (+ bias[co]).

    Forward: pos = p * stride + tap - pad. TRANSPOSED (input gradient): pos = (p + pad - tap) / stride where exact.
    The weight is addressed through strides (swco = stride over the output channel, swr = over the reduced one),
    so the transposed mode reads the original weight with those two strides swapped.
    """
    pid_p = tl.program_id(0).to(tl.int64)
    pid_co = tl.program_id(1).to(tl.int64)
    n = tl.program_id(2).to(tl.int64)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    pmask = p < YH * YW
    comask = co < CO
    oh = p // YW
    ow = p % YW
    acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            if TRANSPOSED:
                th = oh + PH - kh
                tw = ow + PW - kw
                ih = th // SH
                iw = tw // SW
                valid = (th >= 0) & (tw >= 0) & (th % SH == 0) & (tw % SW == 0) & (ih < XH) & (iw < XW)
            else:
                ih = oh * SH + kh - PH
                iw = ow * SW + kw - PW
                valid = (ih >= 0) & (iw >= 0) & (ih < XH) & (iw < XW)
            valid = valid & pmask
            xoff = n * sxn + tl.where(valid, ih * sxh + iw * sxw, 0)
            for r0 in range(0, R, BLOCK_R):
                r = r0 + tl.arange(0, BLOCK_R)
                rmask = r < R
                xt = tl.load(X + xoff[:, None] + r[None, :] * sxr, mask=valid[:, None] & rmask[None, :],
                             other=0.0).to(tl.float32)
                if HAS_PRE:
                    xt = xt * tl.load(PRE + n * R + r, mask=rmask, other=0.0)[None, :]
                wmask = rmask[:, None] & comask[None, :]
                wt = tl.load(W + r[:, None] * swr + co[None, :] * swco + kh * swh + kw * sww, mask=wmask,
                             other=0.0).to(tl.float32)
                if HAS_AFFINE:
                    goff = r[:, None] * sgr + co[None, :] * sgco
                    wt = wt * tl.load(GAMMA + goff, mask=wmask, other=0.0).to(tl.float32) \
                        + tl.load(BETA + goff, mask=wmask, other=0.0).to(tl.float32)
                if DOT_DTYPE == "fp32":
                    acc += tl.dot(xt, wt, input_precision=PREC)
                elif DOT_DTYPE == "fp16":
                    acc += tl.dot(xt.to(tl.float16), wt.to(tl.float16))
                else:
                    acc += tl.dot(xt.to(tl.bfloat16), wt.to(tl.bfloat16))
    if HAS_POST:
        acc = acc * tl.load(POST + n * CO + co, mask=comask, other=0.0)[None, :]
    if HAS_BIAS:
        acc = acc + tl.load(BIAS + co, mask=comask, other=0.0).to(tl.float32)[None, :]
    yoff = n * CO * YH * YW + co[None, :] * (YH * YW) + p[:, None]
    tl.store(Y + yoff, acc.to(Y.dtype.element_ty), mask=pmask[:, None] & comask[None, :])


@triton.autotune(configs=_WGRAD_INTERP if INTERPRET else _WGRAD_CFGS,
                 key=["N", "CO", "CI", "XH", "XW", "YH", "YW", "KH", "KW", "SH", "SW", "HAS_PRE", "MODE",
                      "NEED_W", "NEED_G", "NEED_B", "DOT_DTYPE", "PREC"])
@triton.jit
def _wgrad_kernel(G, X, PREG, PREX, W, GAMMA, CORR, DW, DG, DB,
                  N, CO, CI, XH, XW, YH, YW, PH, PW,
                  sxn, sxc, sxh, sxw,
                  KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                  HAS_PRE: tl.constexpr, MODE: tl.constexpr, NEED_W: tl.constexpr, NEED_G: tl.constexpr,
                  NEED_B: tl.constexpr, DOT_DTYPE: tl.constexpr, PREC: tl.constexpr,
                  BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_P: tl.constexpr):
    """dW_tap[co, ci] = sum_{n, p} G[n, co, p] * preG[n, co] * X[n, ci, p * s + tap - pad] * preX[n, ci].

    MODE "modconv": DW[co, ci, tap] = dW_tap - W[co, ci, tap] * CORR[co, ci] (demodulation term).
    MODE "adafm": DG = sum_taps dW_tap * W, DB = sum_taps dW_tap, DW = dW_tap * GAMMA (each only if needed);
    G is contiguous (N, CO, YH, YW); W and DW are contiguous (CO, CI, KH, KW); GAMMA, CORR, DG, DB (CO, CI).
    """
    pid_co = tl.program_id(0).to(tl.int64)
    pid_ci = tl.program_id(1).to(tl.int64)
    co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    ci = pid_ci * BLOCK_CI + tl.arange(0, BLOCK_CI)
    comask = co < CO
    cimask = ci < CI
    omask = comask[:, None] & cimask[None, :]
    woff = (co[:, None] * CI + ci[None, :]) * (KH * KW)
    goff = co[:, None] * CI + ci[None, :]
    if MODE == "adafm":
        sum_g = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
        sum_b = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
        if NEED_W:
            gamma = tl.load(GAMMA + goff, mask=omask, other=0.0).to(tl.float32)
    else:
        corr = tl.load(CORR + goff, mask=omask, other=0.0)
    P = YH * YW
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            acc = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
            g_n = G  # pointers advanced per sample (64-bit pointer arithmetic, no int32 overflow)
            x_n = X
            pg_n = PREG
            px_n = PREX
            for n in range(0, N):
                if HAS_PRE:
                    pg = tl.load(pg_n + co, mask=comask, other=0.0)
                    px = tl.load(px_n + ci, mask=cimask, other=0.0)
                for p0 in range(0, P, BLOCK_P):
                    p = p0 + tl.arange(0, BLOCK_P)
                    pmask = p < P
                    oh = p // YW
                    ow = p % YW
                    ih = oh * SH + kh - PH
                    iw = ow * SW + kw - PW
                    valid = pmask & (ih >= 0) & (iw >= 0) & (ih < XH) & (iw < XW)
                    gt = tl.load(g_n + co[:, None] * P + p[None, :],
                                 mask=comask[:, None] & pmask[None, :], other=0.0).to(tl.float32)
                    xoff = tl.where(valid, ih * sxh + iw * sxw, 0)
                    xt = tl.load(x_n + xoff[:, None] + ci[None, :] * sxc, mask=valid[:, None] & cimask[None, :],
                                 other=0.0).to(tl.float32)
                    if HAS_PRE:
                        gt = gt * pg[:, None]
                        xt = xt * px[None, :]
                    if DOT_DTYPE == "fp32":
                        acc += tl.dot(gt, xt, input_precision=PREC)
                    elif DOT_DTYPE == "fp16":
                        acc += tl.dot(gt.to(tl.float16), xt.to(tl.float16))
                    else:
                        acc += tl.dot(gt.to(tl.bfloat16), xt.to(tl.bfloat16))
                g_n += CO * P
                x_n += sxn
                pg_n += CO
                px_n += CI
            tap = kh * KW + kw
            if MODE == "adafm":
                w = tl.load(W + woff + tap, mask=omask, other=0.0).to(tl.float32)
                sum_g += acc * w
                sum_b += acc
                if NEED_W:
                    tl.store(DW + woff + tap, (acc * gamma).to(DW.dtype.element_ty), mask=omask)
            else:
                w = tl.load(W + woff + tap, mask=omask, other=0.0).to(tl.float32)
                tl.store(DW + woff + tap, (acc - w * corr).to(DW.dtype.element_ty), mask=omask)
    if MODE == "adafm":
        if NEED_G:
            tl.store(DG + goff, sum_g.to(DG.dtype.element_ty), mask=omask)
        if NEED_B:
            tl.store(DB + goff, sum_b.to(DB.dtype.element_ty), mask=omask)


# ---------------------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------------------


def is_available() -> tuple[bool, str]:
    """(True, "") when these kernels can run for CUDA tensors, or for CPU tensors under the interpreter."""
    if torch.cuda.is_available() or INTERPRET:
        return True, ""
    return False, "no CUDA device is visible and the Triton interpreter is off"


_DOT = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _dot_args(dtype: torch.dtype) -> tuple[str, str]:
    if dtype not in _DOT:
        raise TypeError(f"Triton modconv kernels take float32/float16/bfloat16, got {dtype}")
    prec = "tf32" if (dtype == torch.float32 and torch.backends.cudnn.allow_tf32 and not INTERPRET) else "ieee"
    return _DOT[dtype], prec


def _sigma(s32: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= max_i |s[n, i]| per sample (1 for 0 or non-finite): exact rescaling."""
    m = s32.abs().amax(dim=1)
    mant, exp = torch.frexp(m)
    exp = torch.where(mant == 0.5, exp - 1, exp)
    sig = torch.ldexp(torch.ones_like(m), exp)
    return torch.where((m > 0) & torch.isfinite(m), sig, torch.ones_like(m))


def _prep(weight, styles, demodulate, eps):
    s32 = styles.float()
    sigma = _sigma(s32)
    pre = (s32 / sigma[:, None]).contiguous()
    q = d = None
    if demodulate:
        q = weight.float().square().sum(dim=(2, 3))
        d = torch.rsqrt(s32.square() @ q.t() + eps)
        coef = (sigma[:, None] * d).contiguous()
    else:
        coef = sigma[:, None].expand(styles.shape[0], weight.shape[0]).contiguous()
    return s32, sigma, pre, coef, q, d


def _conv(x, w, *, co, yh, yw, stride, padding, pre=None, post=None, gamma=None, beta=None, bias=None,
          transposed=False, out_dtype=None):
    """Launch _conv_kernel. In transposed mode ``co`` is w.shape[1] and the reduction runs over w.shape[0]."""
    n, r = x.shape[0], x.shape[1]
    y = torch.empty((n, co, yh, yw), device=x.device, dtype=out_dtype or x.dtype)
    if y.numel() == 0:
        return y
    dot, prec = _dot_args(x.dtype)
    if transposed:
        swco, swr = w.stride(1), w.stride(0)
        sgco, sgr = (gamma.stride(1), gamma.stride(0)) if gamma is not None else (0, 0)
    else:
        swco, swr = w.stride(0), w.stride(1)
        sgco, sgr = (gamma.stride(0), gamma.stride(1)) if gamma is not None else (0, 0)
    dummy = y
    grid = lambda meta: (triton.cdiv(yh * yw, meta["BLOCK_P"]), triton.cdiv(co, meta["BLOCK_CO"]), n)  # noqa: E731
    _conv_kernel[grid](
        x, w, gamma if gamma is not None else dummy, beta if beta is not None else dummy,
        pre if pre is not None else dummy, post if post is not None else dummy, bias if bias is not None else dummy,
        y, r, co, x.shape[2], x.shape[3], yh, yw, padding[0], padding[1],
        x.stride(0), x.stride(1), x.stride(2), x.stride(3), swco, swr, w.stride(2), w.stride(3), sgco, sgr,
        KH=w.shape[2], KW=w.shape[3], SH=stride[0], SW=stride[1], TRANSPOSED=transposed,
        HAS_PRE=pre is not None, HAS_POST=post is not None, HAS_AFFINE=gamma is not None,
        HAS_BIAS=bias is not None, DOT_DTYPE=dot, PREC=prec)
    return y


def _wgrad(g, x, weight, *, stride, padding, mode, preg=None, prex=None, gamma=None, corr=None,
           need_w=True, need_g=False, need_b=False):
    co, ci, kh, kw = weight.shape
    dw = torch.empty_like(weight, memory_format=torch.contiguous_format) if need_w else None
    dg = torch.empty((co, ci), device=x.device, dtype=weight.dtype) if need_g else None
    db = torch.empty((co, ci), device=x.device, dtype=weight.dtype) if need_b else None
    dot, prec = _dot_args(x.dtype)
    dummy = weight
    grid = lambda meta: (triton.cdiv(co, meta["BLOCK_CO"]), triton.cdiv(ci, meta["BLOCK_CI"]))  # noqa: E731
    _wgrad_kernel[grid](
        g, x, preg if preg is not None else dummy, prex if prex is not None else dummy, weight,
        gamma if gamma is not None else dummy, corr if corr is not None else dummy,
        dw if dw is not None else dummy, dg if dg is not None else dummy, db if db is not None else dummy,
        x.shape[0], co, ci, x.shape[2], x.shape[3], g.shape[2], g.shape[3], padding[0], padding[1],
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        KH=kh, KW=kw, SH=stride[0], SW=stride[1], HAS_PRE=preg is not None, MODE=mode,
        NEED_W=need_w, NEED_G=need_g, NEED_B=need_b, DOT_DTYPE=dot, PREC=prec)
    return dw, dg, db


def modulated_conv2d_fwd(x, weight, styles, demodulate: bool, padding: tuple[int, int], eps: float):
    weight = weight.contiguous()
    _, _, pre, coef, _, _ = _prep(weight, styles, demodulate, eps)
    yh = x.shape[2] + 2 * padding[0] - weight.shape[2] + 1
    yw = x.shape[3] + 2 * padding[1] - weight.shape[3] + 1
    return _conv(x, weight, co=weight.shape[0], yh=yh, yw=yw, stride=(1, 1), padding=padding, pre=pre, post=coef)


def modulated_conv2d_bwd(grad_out, x, weight, styles, out, demodulate: bool, padding: tuple[int, int], eps: float,
                         output_mask: Sequence[bool]):
    need_x, need_w, need_s = (bool(m) for m in output_mask)
    gx, gw, gs = (x.new_empty((0,)) for _ in range(3))  # distinct tensors: outputs of an op must not alias
    if not (need_x or need_w or need_s):
        return gx, gw, gs
    weight = weight.contiguous()
    grad_out = grad_out.contiguous()
    s32, sigma, pre, coef, q, d = _prep(weight, styles, demodulate, eps)
    kh, kw = weight.shape[2:]
    a = None
    if demodulate and (need_s or need_w):
        a = (grad_out.float() * out.float()).sum(dim=(2, 3)) * d * d  # (N, Cout)
    if need_x or need_s:
        # gradient w.r.t. the modulated activations x * pre, in fp32
        gxs = _conv(grad_out, weight, co=weight.shape[1], yh=x.shape[2], yw=x.shape[3], stride=(1, 1),
                    padding=padding,
                    pre=coef, transposed=True, out_dtype=torch.float32)
        if need_x:
            gx = (gxs * pre[:, :, None, None]).to(x.dtype)
        if need_s:
            g32 = (gxs * x.float()).sum(dim=(2, 3)) / sigma[:, None]
            if demodulate:
                g32 = g32 - s32 * (a @ q)
            gs = g32.to(styles.dtype)
    if need_w:
        corr = (a.t() @ s32.square()).contiguous() if demodulate else torch.zeros(
            weight.shape[:2], device=x.device, dtype=torch.float32)
        gw, _, _ = _wgrad(grad_out, x, weight, stride=(1, 1), padding=padding, mode="modconv", preg=coef, prex=pre,
                          corr=corr)
    return gx, gw, gs


def adafm_conv2d_fwd(x, weight, gamma, beta, bias: Optional[torch.Tensor], stride: tuple[int, int],
                     padding: tuple[int, int]):
    kh, kw = weight.shape[2:]
    yh = (x.shape[2] + 2 * padding[0] - kh) // stride[0] + 1
    yw = (x.shape[3] + 2 * padding[1] - kw) // stride[1] + 1
    return _conv(x, weight, co=weight.shape[0], yh=yh, yw=yw, stride=stride, padding=padding, gamma=gamma,
                 beta=beta, bias=bias)


def adafm_conv2d_bwd(grad_out, x, weight, gamma, beta, stride: tuple[int, int], padding: tuple[int, int],
                     output_mask: Sequence[bool]):
    need_x, need_w, need_g, need_b, need_bias = (bool(m) for m in output_mask)
    gx, gw, gg, gb, gbias = (x.new_empty((0,)) for _ in range(5))  # distinct: outputs must not alias
    grad_out = grad_out.contiguous()
    if need_x:
        gx = _conv(grad_out, weight, co=weight.shape[1], yh=x.shape[2], yw=x.shape[3], stride=stride,
                   padding=padding, gamma=gamma, beta=beta, transposed=True, out_dtype=x.dtype)
    if need_w or need_g or need_b:
        dw, dg, db = _wgrad(grad_out, x, weight.contiguous(), stride=stride, padding=padding, mode="adafm",
                            gamma=gamma.contiguous(), need_w=need_w, need_g=need_g, need_b=need_b)
        gw = dw if need_w else gw
        gg = dg if need_g else gg
        gb = db if need_b else gb
    if need_bias:
        gbias = grad_out.float().sum(dim=(0, 2, 3)).to(x.dtype)
    return gx, gw, gg, gb, gbias

"""Fused modulated conv (StyleGAN2) and AdaFM conv: the public functions, their references, and op registration.

``modulated_conv2d(x, weight, styles, *, demodulate=True, padding=None, eps=1e-8, impl="auto")``
    x (N,Cin,H,W), weight (Cout,Cin,kh,kw), styles (N,Cin); stride 1, padding default (kh//2, kw//2).
    w_n = weight * styles[n] (over Cin); if demodulate, w_n /= sqrt(sum_{Cin,kh,kw} w_n^2 + eps);
    out[n] = conv2d(x[n], w_n).  Gradients for x, weight and styles.

``adafm_conv2d(x, weight, gamma, beta, bias=None, *, stride=1, padding=None, impl="auto")``
    gamma, beta (Cout,Cin), identity at (1, 0). W' = gamma[..., None, None] * weight + beta[..., None, None];
    out = conv2d(x, W', bias, stride, padding). Gradients for x, gamma, beta, bias, and for weight only when it
    requires grad (a frozen weight, the normal case in transfer, costs no weight-gradient work).

Implementations (``impl``):
    ref     plain torch (the definition; grouped conv with per-sample weights for modulated conv)
    cpp     CPU kernels in fastgan._C: OpenMP modulation/demodulation around one shared-weight oneDNN convolution
    cuda    CUDA kernels in fastgan._C: the same fused form around one shared-weight cuDNN convolution
    triton  implicit-GEMM Triton kernels: modulation applied to activations on load, demodulation / AdaFM
            affine on weight load, no per-sample weight tensor
No fused impl builds per-sample weights. All of them support double backward (R1, path-length
regularisation): when a backward runs with ``create_graph=True`` the gradient is taken through a
differentiable torch composition of the same fused form, so every impl routes there automatically.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _dispatch

IntPair = Union[int, Sequence[int]]

# --------------------------------------------------------------------------------------------------------
# references (they define the semantics)
# --------------------------------------------------------------------------------------------------------


def _modulated_conv2d_ref(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True,
                          padding: IntPair = None, eps: float = 1e-8) -> Tensor:
    """Per-sample weights and one grouped convolution (groups = N): obviously right, slow."""
    n, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    pad = _pair(padding, (kh // 2, kw // 2), "padding")
    wn = weight.unsqueeze(0) * styles.reshape(n, 1, cin, 1, 1)  # (N, Cout, Cin, kh, kw)
    if demodulate:
        wn = wn * torch.rsqrt(wn.square().sum(dim=(2, 3, 4), keepdim=True) + eps)
    out = F.conv2d(x.reshape(1, n * cin, h, w), wn.reshape(n * cout, cin, kh, kw), padding=pad, groups=n)
    return out.reshape(n, cout, out.shape[2], out.shape[3])


def _modulated_conv2d_decomposed(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True,
                                 padding: IntPair = None, eps: float = 1e-8) -> Tensor:
    """The fused form in plain differentiable torch: scale activations, shared-weight conv, scale outputs.

    Mathematically equal to the reference; used for double backward and as a benchmark baseline.
    """
    kh, kw = weight.shape[2:]
    pad = _pair(padding, (kh // 2, kw // 2), "padding")
    y = F.conv2d(x * styles[:, :, None, None], weight, padding=pad)
    if demodulate:
        q = weight.square().sum(dim=(2, 3))  # (Cout, Cin)
        d = torch.rsqrt(styles.square() @ q.t() + eps)  # (N, Cout)
        y = y * d[:, :, None, None]
    return y


def _adafm_conv2d_ref(x: Tensor, weight: Tensor, gamma: Tensor, beta: Tensor, bias: Optional[Tensor] = None,
                      stride: IntPair = 1, padding: IntPair = None) -> Tensor:
    """W' = gamma * W + beta (broadcast over the kernel taps), then a plain convolution."""
    kh, kw = weight.shape[2:]
    w = gamma[:, :, None, None] * weight + beta[:, :, None, None]
    return F.conv2d(x, w, bias, stride=_pair(stride, None, "stride"),
                    padding=_pair(padding, (kh // 2, kw // 2), "padding"))


# --------------------------------------------------------------------------------------------------------
# argument checks (clear errors before any kernel runs)
# --------------------------------------------------------------------------------------------------------


def _pair(v: IntPair, default: Optional[tuple[int, int]], name: str) -> tuple[int, int]:
    if v is None:
        if default is None:
            raise ValueError(f"{name} must be given")
        return default
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    try:
        a, b = v  # type: ignore[misc]
        return (int(a), int(b))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}") from None


def _check_tensor(t: object, name: str, dim: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    return t


def _check_same(x: Tensor, others: dict[str, Optional[Tensor]]) -> None:
    for name, t in others.items():
        if t is None:
            continue
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has {x.dtype}; cast them to one dtype")


def _check_modconv(x: Tensor, weight: Tensor, styles: Tensor, padding: IntPair) -> tuple[int, int]:
    _check_tensor(x, "x", 4)
    _check_tensor(weight, "weight", 4)
    _check_tensor(styles, "styles", 2)
    _check_same(x, {"weight": weight, "styles": styles})
    n, cin, h, w = x.shape
    if weight.shape[1] != cin:
        raise ValueError(f"weight has {weight.shape[1]} input channels but x has {cin} (weight {tuple(weight.shape)}, "
                         f"x {tuple(x.shape)})")
    if tuple(styles.shape) != (n, cin):
        raise ValueError(f"styles must have shape (N, Cin) = {(n, cin)}, got {tuple(styles.shape)}")
    kh, kw = weight.shape[2:]
    pad = _pair(padding, (kh // 2, kw // 2), "padding")
    if min(pad) < 0:
        raise ValueError(f"padding must be non-negative, got {pad}")
    if h + 2 * pad[0] < kh or w + 2 * pad[1] < kw:
        raise ValueError(f"the {kh}x{kw} kernel does not fit the padded {h}x{w} input (padding {pad})")
    return pad


def _check_adafm(x: Tensor, weight: Tensor, gamma: Tensor, beta: Tensor, bias: Optional[Tensor],
                 stride: IntPair, padding: IntPair) -> tuple[tuple[int, int], tuple[int, int]]:
    _check_tensor(x, "x", 4)
    _check_tensor(weight, "weight", 4)
    _check_tensor(gamma, "gamma", 2)
    _check_tensor(beta, "beta", 2)
    if bias is not None:
        _check_tensor(bias, "bias", 1)
    _check_same(x, {"weight": weight, "gamma": gamma, "beta": beta, "bias": bias})
    cout, cin, kh, kw = weight.shape
    if x.shape[1] != cin:
        raise ValueError(f"weight has {cin} input channels but x has {x.shape[1]}")
    if tuple(gamma.shape) != (cout, cin):
        raise ValueError(f"gamma must have shape (Cout, Cin) = {(cout, cin)}, got {tuple(gamma.shape)}")
    if tuple(beta.shape) != (cout, cin):
        raise ValueError(f"beta must have shape (Cout, Cin) = {(cout, cin)}, got {tuple(beta.shape)}")
    if bias is not None and tuple(bias.shape) != (cout,):
        raise ValueError(f"bias must have shape (Cout,) = {(cout,)}, got {tuple(bias.shape)}")
    st = _pair(stride, None, "stride")
    pad = _pair(padding, (kh // 2, kw // 2), "padding")
    if min(st) < 1:
        raise ValueError(f"stride must be positive, got {st}")
    if min(pad) < 0:
        raise ValueError(f"padding must be non-negative, got {pad}")
    if x.shape[2] + 2 * pad[0] < kh or x.shape[3] + 2 * pad[1] < kw:
        raise ValueError(f"the {kh}x{kw} kernel does not fit the padded {tuple(x.shape[2:])} input (padding {pad})")
    return st, pad


# --------------------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------------------


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, *, demodulate: bool = True,
                     padding: IntPair = None, eps: float = 1e-8, impl: str = "auto") -> Tensor:
    """StyleGAN2 modulated convolution without per-sample weights. See the module docstring."""
    pad = _check_modconv(x, weight, styles, padding)
    args = (x, weight, styles, bool(demodulate), list(pad), float(eps))
    name, fn = _dispatch.resolve("modulated_conv2d", impl, x)
    if name != "ref" and torch._C._are_functorch_transforms_active():
        op, bwd_op = _kernel_ops(name)
        return _TransformableModConv.apply(*args[:3], op, bwd_op, *args[3:])
    return fn(*args)


def adafm_conv2d(x: Tensor, weight: Tensor, gamma: Tensor, beta: Tensor, bias: Optional[Tensor] = None, *,
                 stride: IntPair = 1, padding: IntPair = None, impl: str = "auto") -> Tensor:
    """AdaFM convolution: W' = gamma * W + beta applied on weight load. See the module docstring."""
    st, pad = _check_adafm(x, weight, gamma, beta, bias, stride, padding)
    args = (x, weight, gamma, beta, bias, list(st), list(pad))
    _, fn = _dispatch.resolve("adafm_conv2d", impl, x)
    return fn(*args)


# --------------------------------------------------------------------------------------------------------
# op registration: fake (meta) impls and autograd for the compiled op and the Triton op
# --------------------------------------------------------------------------------------------------------


def _conv_out_hw(h: int, w: int, kh: int, kw: int, stride: Sequence[int], padding: Sequence[int]) -> tuple:
    return ((h + 2 * padding[0] - kh) // stride[0] + 1, (w + 2 * padding[1] - kw) // stride[1] + 1)


def _modconv_fake(x, weight, styles, demodulate, padding, eps):
    ho, wo = _conv_out_hw(x.shape[2], x.shape[3], weight.shape[2], weight.shape[3], (1, 1), padding)
    return x.new_empty((x.shape[0], weight.shape[0], ho, wo))


def _modconv_bwd_fake(grad_out, x, weight, styles, out, demodulate, padding, eps, output_mask):
    return tuple(t.new_empty(t.shape) if m else x.new_empty((0,))
                 for t, m in zip((x, weight, styles), output_mask))


def _adafm_fake(x, weight, gamma, beta, bias, stride, padding):
    ho, wo = _conv_out_hw(x.shape[2], x.shape[3], weight.shape[2], weight.shape[3], stride, padding)
    return x.new_empty((x.shape[0], weight.shape[0], ho, wo))


def _adafm_bwd_fake(grad_out, x, weight, gamma, beta, stride, padding, output_mask):
    like = (x, weight, gamma, beta, weight.new_empty((weight.shape[0],)))
    return tuple(t.new_empty(t.shape) if m else x.new_empty((0,)) for t, m in zip(like, output_mask))


def _register_modconv_autograd(op, bwd_op) -> None:
    def setup_context(ctx, inputs, output):
        x, weight, styles, demodulate, padding, eps = inputs
        ctx.save_for_backward(x, weight, styles, output)
        ctx.args = (demodulate, list(padding), eps)

    def backward(ctx, grad_out):
        x, weight, styles, out = ctx.saved_tensors
        demodulate, padding, eps = ctx.args
        mask = list(ctx.needs_input_grad[:3])
        if torch.is_grad_enabled():  # create_graph=True: differentiate a torch composition instead
            grads = _grad_through(lambda a, b, c: _modulated_conv2d_decomposed(a, b, c, demodulate, padding, eps),
                                  (x, weight, styles), mask, grad_out)
        else:
            gx, gw, gs = bwd_op(grad_out, x, weight, styles, out, demodulate, padding, eps, mask)
            grads = [g if m else None for g, m in zip((gx, gw, gs), mask)]
        return (*grads, None, None, None)

    torch.library.register_autograd(op, backward, setup_context=setup_context)


class _TransformableModConv(torch.autograd.Function):
    """A fused modulated-conv kernel seen by ``torch.func`` transforms (``vjp``, ``vmap``, ``jacrev``, ...).

    torch 2.13 refuses to transform compiled ops whose autograd comes from ``torch.library.register_autograd``
    ("must override the setup_context staticmethod"). Under a transform, ``modulated_conv2d`` therefore routes the
    same kernels through this Function: forward and backward call the registered ops, and ``generate_vmap_rule``
    vmaps them with the ops' batching rules (``_register_modconv_vmap``), so ``vmap(vjp_fn)`` over many cotangents
    runs one folded backward kernel instead of one per cotangent; forward mode (``jvp``, ``jacfwd``) has its own
    rule below. Outside transforms the ops are called directly. The backward kernel itself has no derivative, so
    under transforms the fused impls give first derivatives
    (``vjp``, ``jacrev``, ``grad``); for second derivatives use ``impl="ref"`` (or plain autograd with
    ``create_graph=True``, where the registered backward differentiates the torch composition)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, styles, op, bwd_op, demodulate, padding, eps):
        return op(x, weight, styles, demodulate, padding, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, styles, _, bwd_op, demodulate, padding, eps = inputs
        ctx.save_for_backward(x, weight, styles, output)
        ctx.save_for_forward(x, weight, styles, output)
        ctx.bwd_op = bwd_op
        ctx.args = (demodulate, list(padding), eps)

    @staticmethod
    def jvp(ctx, dx, dweight, dstyles, *_):
        """Forward mode (``torch.func.jvp`` / ``jacfwd``) from the decomposed form y = conv(x * s, W) * d with
        d = rsqrt(s^2 q^T + eps), q = sum_k W^2: one shared-weight convolution per tangent (two with a weight
        tangent) of dx * s + x * ds, then dy * d + out * (dd / d) (the primal conv is out / d). Fused
        multiply-adds keep the tangent-sized passes to five around the convolution."""
        x, weight, styles, out = ctx.saved_tensors
        demodulate, padding, eps = ctx.args
        sc = styles[:, :, None, None]
        if dx is not None and dstyles is not None:
            da = torch.addcmul(x * dstyles[:, :, None, None], dx, sc)
        elif dx is not None:
            da = dx * sc
        elif dstyles is not None:
            da = x * dstyles[:, :, None, None]
        else:
            da = None
        dy = None if da is None else F.conv2d(da, weight, padding=padding)
        if dweight is not None:
            t = F.conv2d(x * sc, dweight, padding=padding)
            dy = t if dy is None else dy + t
        if dy is None:
            return torch.zeros_like(out)
        if not demodulate:
            return dy
        q = weight.square().sum(dim=(2, 3))  # (Cout, Cin)
        d = torch.rsqrt(styles.square() @ q.t() + eps)  # (N, Cout)
        dsum = None  # d(s^2 q^T)
        if dstyles is not None:
            dsum = (2 * styles * dstyles) @ q.t()
        if dweight is not None:
            t = styles.square() @ (2 * (weight * dweight).sum(dim=(2, 3))).t()
            dsum = t if dsum is None else dsum + t
        if dsum is None:
            return dy * d[:, :, None, None]
        rel = -0.5 * d.square() * dsum  # dd / d
        return torch.addcmul(out * rel[:, :, None, None], dy, d[:, :, None, None])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, styles, out = ctx.saved_tensors
        demodulate, padding, eps = ctx.args
        mask = list(ctx.needs_input_grad[:3])
        gx, gw, gs = ctx.bwd_op(grad_out, x, weight, styles, out, demodulate, padding, eps, mask)
        return (*[g if m else None for g, m in zip((gx, gw, gs), mask)], None, None, None, None, None)


def _kernel_ops(impl: str):
    """(forward op, backward op) of a fused modulated-conv impl ("cpp", "cuda" or "triton")."""
    if impl == "triton":
        return _modconv_triton, _modconv_triton_bwd
    return torch.ops.fastgan.modulated_conv2d.default, torch.ops.fastgan.modulated_conv2d_backward.default


def _vm_batched(t: Tensor, dim: Optional[int], size: int) -> Tensor:
    """``t`` with its vmapped dimension first (broadcast to ``size`` when it is not batched)."""
    return t.movedim(dim, 0) if dim is not None else t.unsqueeze(0).expand(size, *t.shape)


def _vm_slice(t: Tensor, dim: Optional[int], i: int) -> Tensor:
    return t if dim is None else t.select(dim, i)


def _register_modconv_vmap(op, bwd_op) -> None:
    """Batching rules, so that ``torch.func.vmap`` (e.g. batched VJPs in fastgan.sampling) runs the fused kernels
    once on the whole batch: the vmapped dimension is folded into N (modulation is per sample, the weight shared).
    A batched weight, or a weight gradient (which sums over N and so cannot be folded), runs per vmapped slice.
    ``op`` / ``bwd_op``: custom-op objects or "namespace::name" strings of compiled ops."""
    reg_op, reg_bwd = op, bwd_op
    if isinstance(op, str):
        op = getattr(torch.ops.fastgan, op.split("::")[1]).default
        bwd_op = getattr(torch.ops.fastgan, bwd_op.split("::")[1]).default

    def forward_rule(info, in_dims, x, weight, styles, demodulate, padding, eps):
        v = info.batch_size
        xd, wd, sd = in_dims[0], in_dims[1], in_dims[2]
        if wd is not None:
            outs = [op(_vm_slice(x, xd, i), weight.select(wd, i), _vm_slice(styles, sd, i), demodulate, padding, eps)
                    for i in range(v)]
            return torch.stack(outs), 0
        xb, sb = _vm_batched(x, xd, v), _vm_batched(styles, sd, v)
        out = op(xb.flatten(0, 1), weight, sb.flatten(0, 1), demodulate, padding, eps)
        return out.unflatten(0, (v, xb.shape[1])), 0

    def backward_rule(info, in_dims, grad_out, x, weight, styles, out, demodulate, padding, eps, output_mask):
        v = info.batch_size
        gd, xd, wd, sd, od = in_dims[:5]
        if wd is not None or output_mask[1]:
            res = [bwd_op(_vm_slice(grad_out, gd, i), _vm_slice(x, xd, i), _vm_slice(weight, wd, i),
                          _vm_slice(styles, sd, i), _vm_slice(out, od, i), demodulate, padding, eps, output_mask)
                   for i in range(v)]
            return tuple(torch.stack([r[j] for r in res]) for j in range(3)), (0, 0, 0)
        gb, xb, sb, ob = (_vm_batched(t, d, v) for t, d in ((grad_out, gd), (x, xd), (styles, sd), (out, od)))
        n = xb.shape[1]
        gx, gw, gs = bwd_op(gb.flatten(0, 1), xb.flatten(0, 1), weight, sb.flatten(0, 1), ob.flatten(0, 1),
                            demodulate, padding, eps, output_mask)
        gx = gx.unflatten(0, (v, n)) if output_mask[0] else gx
        gs = gs.unflatten(0, (v, n)) if output_mask[2] else gs
        return (gx, gw, gs), (0 if output_mask[0] else None, None, 0 if output_mask[2] else None)

    torch.library.register_vmap(reg_op, forward_rule)
    torch.library.register_vmap(reg_bwd, backward_rule)


def _register_adafm_autograd(op, bwd_op) -> None:
    def setup_context(ctx, inputs, output):
        x, weight, gamma, beta, bias, stride, padding = inputs
        ctx.save_for_backward(x, weight, gamma, beta, bias)
        ctx.args = (list(stride), list(padding), bias is not None)

    def backward(ctx, grad_out):
        x, weight, gamma, beta, bias = ctx.saved_tensors
        stride, padding, has_bias = ctx.args
        mask = list(ctx.needs_input_grad[:5])
        mask[4] = mask[4] and has_bias
        if torch.is_grad_enabled():
            ins = (x, weight, gamma, beta, bias if has_bias else None)
            grads = _grad_through(lambda a, b, c, d, e: _adafm_conv2d_ref(a, b, c, d, e, stride, padding),
                                  ins, mask, grad_out)
        else:
            out = bwd_op(grad_out, x, weight, gamma, beta, stride, padding, mask)
            grads = [g if m else None for g, m in zip(out, mask)]
        return (*grads, None, None)

    torch.library.register_autograd(op, backward, setup_context=setup_context)


def _grad_through(fn, inputs: tuple, mask: Sequence[bool], grad_out: Tensor) -> list:
    """Gradients of ``fn(*inputs)`` for the masked inputs, keeping the graph (for double backward)."""
    wanted = [t for t, m in zip(inputs, mask) if m]
    if not wanted:
        return [None] * len(inputs)
    with torch.enable_grad():
        out = fn(*inputs)
        got = iter(torch.autograd.grad(out, wanted, grad_out, create_graph=True, allow_unused=True))
    grads = []
    for t, m in zip(inputs, mask):
        g = next(got) if m else None
        grads.append(torch.zeros_like(t) if m and g is None else g)
    return grads


# Triton-backed ops are defined here, from Python, so they exist whether or not fastgan._C is built.
@torch.library.custom_op("fastgan::modulated_conv2d_triton", mutates_args=())
def _modconv_triton(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool, padding: list[int],
                    eps: float) -> Tensor:
    from fastgan.kernels import modconv as k

    return k.modulated_conv2d_fwd(x, weight, styles, demodulate, tuple(padding), eps)


@torch.library.custom_op("fastgan::modulated_conv2d_triton_backward", mutates_args=())
def _modconv_triton_bwd(grad_out: Tensor, x: Tensor, weight: Tensor, styles: Tensor, out: Tensor,
                        demodulate: bool, padding: list[int], eps: float,
                        output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    from fastgan.kernels import modconv as k

    return tuple(k.modulated_conv2d_bwd(grad_out, x, weight, styles, out, demodulate, tuple(padding), eps,
                                        output_mask))


@torch.library.custom_op("fastgan::adafm_conv2d_triton", mutates_args=())
def _adafm_triton(x: Tensor, weight: Tensor, gamma: Tensor, beta: Tensor, bias: Optional[Tensor],
                  stride: list[int], padding: list[int]) -> Tensor:
    from fastgan.kernels import modconv as k

    return k.adafm_conv2d_fwd(x, weight, gamma, beta, bias, tuple(stride), tuple(padding))


@torch.library.custom_op("fastgan::adafm_conv2d_triton_backward", mutates_args=())
def _adafm_triton_bwd(grad_out: Tensor, x: Tensor, weight: Tensor, gamma: Tensor, beta: Tensor,
                      stride: list[int], padding: list[int],
                      output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    from fastgan.kernels import modconv as k

    return tuple(k.adafm_conv2d_bwd(grad_out, x, weight, gamma, beta, tuple(stride), tuple(padding),
                                    output_mask))


for _op, _fake in ((_modconv_triton, _modconv_fake), (_modconv_triton_bwd, _modconv_bwd_fake),
                   (_adafm_triton, _adafm_fake), (_adafm_triton_bwd, _adafm_bwd_fake)):
    _op.register_fake(_fake)
_register_modconv_autograd(_modconv_triton, _modconv_triton_bwd)
_register_modconv_vmap(_modconv_triton, _modconv_triton_bwd)
_register_adafm_autograd(_adafm_triton, _adafm_triton_bwd)


def _ext_ops() -> bool:
    """Register fake/autograd rules on the compiled ops; False when the extension is not loaded."""
    import fastgan

    if not fastgan.HAS_EXT or not hasattr(torch.ops.fastgan, "modulated_conv2d"):
        return False
    for name, fake in (("modulated_conv2d", _modconv_fake), ("modulated_conv2d_backward", _modconv_bwd_fake),
                       ("adafm_conv2d", _adafm_fake), ("adafm_conv2d_backward", _adafm_bwd_fake)):
        torch.library.register_fake(f"fastgan::{name}")(fake)
    _register_modconv_autograd("fastgan::modulated_conv2d", torch.ops.fastgan.modulated_conv2d_backward)
    _register_modconv_vmap("fastgan::modulated_conv2d", "fastgan::modulated_conv2d_backward")
    _register_adafm_autograd("fastgan::adafm_conv2d", torch.ops.fastgan.adafm_conv2d_backward)
    return True


_HAS_EXT_OPS = _ext_ops()

# --------------------------------------------------------------------------------------------------------
# dispatch table
# --------------------------------------------------------------------------------------------------------




def _ext_fn(name: str):
    def call(*args):
        return getattr(torch.ops.fastgan, name)(*args)

    call.__name__ = f"{name}_ext"
    return call


def _register(op: str, ref, ext_name: str, triton_fn) -> None:
    # auto order, from benchmarks/results/{modconv,adafm}.csv: on CPU `cpp` is 1.1-8.6x faster than the grouped-conv
    # reference for modulated conv (fwd+bwd), and for AdaFM 1.07-1.08x faster at 4-8 px and even (0.94-1.01x, within
    # the machine's noise) at 16-64 px. On CUDA `cuda` comes first and `triton` second until GPU benchmarks say more.
    _dispatch.register_op(op, {"cpu": ("cpp", "ref"), "cuda": ("cuda", "triton", "ref"), "*": ("ref",)})
    _dispatch.register_impl(op, "ref", ref, devices=("cpu", "cuda", "mps", "xpu", "meta"))
    ext = _ext_fn(ext_name)
    _dispatch.register_impl(op, "cpp", ext, devices=("cpu",), available=lambda d: _dispatch.ext_unavailable(
        "modconv", d))
    _dispatch.register_impl(op, "cuda", ext, devices=("cuda",), available=lambda d: _dispatch.ext_unavailable(
        "modconv", d))
    _dispatch.register_impl(op, "triton", triton_fn, devices=("cpu", "cuda"), available=_dispatch.triton_unavailable,
                            supports=_dispatch.triton_float_supports)


_register("modulated_conv2d", _modulated_conv2d_ref, "modulated_conv2d", _modconv_triton)
_register("adafm_conv2d", _adafm_conv2d_ref, "adafm_conv2d", _adafm_triton)

__all__ = ["modulated_conv2d", "adafm_conv2d"]

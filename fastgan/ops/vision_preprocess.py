"""Fused preprocessing of the vision-aided discriminator's frozen backbones: DiffAugment, area resize, normalise.

``vision_preprocess(x, params=None, size=224, mean=CLIP_MEAN, std=CLIP_STD, *, impl="auto") -> (N, C, S, S)``
    x (N, C, H, W) floating images in [-1, 1]; ``params`` the per-sample DiffAugment parameters of this call
    (:func:`fastgan.train.augment.diffaugment_params`, drawn for H x W images) or None for no augmentation.
    The result equals ``preprocess(diffaugment(x, policy, keys), size, mean, std)`` of
    :mod:`fastgan.nn.vision.backbones` when ``params = diffaugment_params(keys, policy, H, W)``:

    1. DiffAugment, the ops of ``params`` in the order brightness (x + b), saturation ((x - mean over channels) s
       + that mean), contrast ((x - mean over C, H, W) k + that mean), translation (out[i, j] = x[i + ty, j + tx],
       zero outside), cutout (rows [y0, y1) x columns [x0, x1) set to 0). Policies whose ops repeat or come in
       another order (``"cutout,translation"``) are not fusable and raise; apply them with ``diffaugment``.
    2. x * 0.5 + 0.5.
    3. Area resize to ``size`` x ``size`` (``F.interpolate(mode="area")`` = adaptive average pooling: output row p
       averages input rows [floor(p H / S), ceil((p + 1) H / S)), columns likewise; an upscale repeats pixels).
       Skipped when ``size`` is None or H = W = ``size``.
    4. (x - mean_c) / std_c per channel; ``mean`` and ``std`` have one finite entry per channel (std non-zero).

    Differentiable w.r.t. x (the parameters are random draws, not trained). The whole map is affine in x, so the
    backward needs only the parameters: it is the adjoint chain (normalise -> 1 / std, area resize -> a uniform
    scatter over each window, translation -> the inverse shift, cutout -> a mask, contrast and saturation -> their
    mean-coupled adjoints). The output has x's dtype; float16 / bfloat16 inputs are computed in float32 by the
    kernels (the reference computes in the input's dtype, as the unfused path does).

Equality with the unfused path: ``ref`` is that composition itself (the same DiffAugment apply functions and the
same interpolate call). The kernels differ only in the order of floating-point operations: the contrast mean is
accumulated in float64 (``cpp``) or in float32 split partials (``triton``), window sums are separable, and the
adjoint sums in another order, so float32 results agree to a few ulp of the values (tests: 2e-5 relative to the
output scale, forward and backward).

Kernel table (what the compiled and Triton ops take): a float64 (N, 9) table ``[b, s, k, ty, tx, y0, y1, x0, x1]``
with identity values for the ops that are off, and ``flags`` = a bit set of the ops that are on (1 brightness,
2 saturation, 4 contrast, 8 translation, 16 cutout): :func:`pack_params` builds both.

Implementations:
    ref     the torch composition (autograd through torch ops)
    cpp     CPU, one image per task (at::parallel_for): colour pass into a per-thread native-resolution buffer,
            float64 contrast mean, translated/cut window sums done separably (columns, then rows), normalise;
            the backward scatters the output gradient back (rows, then columns), undoes translation and cutout and
            applies the contrast and saturation adjoints. float32 / float64 / float16 / bfloat16.
    triton  one read of the native image per output pixel window, no native-resolution intermediate; float32 /
            float16 / bfloat16 (bfloat16 on GPUs only: the interpreter's bfloat16 arithmetic is wrong).
    cuda    the Triton kernels' scheme in CUDA (one thread per output pixel, a gather per native pixel in the
            backward), when fastgan._C is built with CUDA.
Ops: ``torch.ops.fastgan.vision_preprocess`` / ``vision_preprocess_backward`` (compiled) and their ``_triton`` twins.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _dispatch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BRIGHTNESS, SATURATION, CONTRAST, TRANSLATION, CUTOUT = 1, 2, 4, 8, 16
_FLAG_OF = {"brightness": BRIGHTNESS, "saturation": SATURATION, "contrast": CONTRAST, "translation": TRANSLATION,
            "cutout": CUTOUT}
_COLUMNS = {"brightness": (0,), "saturation": (1,), "contrast": (2,), "translation": (3, 4), "cutout": (5, 6, 7, 8)}
_IDENTITY_ROW = (0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
MAX_PLANE = 2**31 - 1  # the kernels index one image (C x H x W, C x S x S) with 32-bit offsets
Stats = Union[Sequence[float], Tensor]

# --------------------------------------------------------------------------------------------------------
# parameters -> kernel table
# --------------------------------------------------------------------------------------------------------


def pack_params(params, x: Tensor) -> tuple[Tensor, int]:
    """(float64 (N, 9) table on x's device, flags) of ``params`` (DiffAugmentParams or None) for images ``x``."""
    from ..train.augment import DiffAugmentParams, _check_params_for

    n = x.shape[0]
    table = torch.tensor(_IDENTITY_ROW, dtype=torch.float64, device=x.device).repeat(n, 1)
    if params is None:
        return table, 0
    if not isinstance(params, DiffAugmentParams):
        raise TypeError(f"vision_preprocess: params must be DiffAugmentParams (from "
                        f"fastgan.train.augment.diffaugment_params) or None, got {type(params).__name__}")
    _check_params_for(x, params, "vision_preprocess")
    if not params.fusable:
        raise ValueError(f"vision_preprocess: the DiffAugment ops {list(params.ops)} cannot be fused: each op may "
                         "occur once, in the order brightness, saturation, contrast, translation, cutout (e.g. "
                         "'color,translation,cutout'); apply this policy with diffaugment() and preprocess()")
    flags = 0
    for op, v in zip(params.ops, params.values):
        flags |= _FLAG_OF[op]
        cols = list(_COLUMNS[op])
        table[:, cols] = v.to(device=x.device, dtype=torch.float64).view(n, len(cols))
    return table, flags


def _unpack(table: Tensor, flags: int):
    """(op, values) pairs in application order, the values as DiffAugmentParams holds them."""
    out = []
    for op in ("brightness", "saturation", "contrast", "translation", "cutout"):
        if flags & _FLAG_OF[op]:
            cols = list(_COLUMNS[op])
            v = table[:, cols]
            out.append((op, v[:, 0] if len(cols) == 1 else v.to(torch.int64)))
    return out


# --------------------------------------------------------------------------------------------------------
# reference (defines the semantics: the unfused composition)
# --------------------------------------------------------------------------------------------------------


def _vision_preprocess_ref(x: Tensor, table: Tensor, flags: int, out_h: int, out_w: int, mean: Sequence[float],
                           std: Sequence[float]) -> Tensor:
    """DiffAugment's apply functions, then backbones.preprocess's x * 0.5 + 0.5 / area interpolate / normalise."""
    from ..train.augment import _DA_APPLY

    for op, v in _unpack(table.to(x.device), flags):
        x = _DA_APPLY[op](x, v)
    x = x * 0.5 + 0.5
    if (out_h, out_w) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(out_h, out_w), mode="area")
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


# --------------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------------


def _stat_values(v: Stats, name: str, channels: int) -> list[float]:
    if isinstance(v, Tensor):
        vals = v.detach().to("cpu", torch.float64).flatten().tolist()
    else:
        try:
            vals = [float(t) for t in v]
        except (TypeError, ValueError):
            raise TypeError(f"vision_preprocess: {name} must be a sequence of {channels} numbers (one per channel) "
                            f"or a tensor, got {v!r}") from None
    if len(vals) != channels:
        raise ValueError(f"vision_preprocess: {name} has {len(vals)} entries but x has {channels} channels; give one "
                         f"{name} per channel")
    if not all(math.isfinite(t) for t in vals):
        raise ValueError(f"vision_preprocess: {name} must be finite, got {vals}")
    if name == "std" and any(t == 0 for t in vals):
        raise ValueError(f"vision_preprocess: std must be non-zero, got {vals}")
    return vals


def _check_args(x: Tensor, size: Optional[int], mean: Stats, std: Stats) -> tuple[int, int, list, list]:
    if not isinstance(x, Tensor):
        raise TypeError(f"vision_preprocess: x must be a torch.Tensor (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"vision_preprocess: x must be 4-D images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"vision_preprocess: x must be float32, float64, float16 or bfloat16 images in [-1, 1], "
                        f"got {x.dtype}")
    n, c, h, w = x.shape
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"vision_preprocess: x must have at least one channel, row and column, got {tuple(x.shape)}")
    if size is None:
        out_h, out_w = h, w
    else:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"vision_preprocess: size must be an int or None, got {size!r}")
        if size < 1:
            raise ValueError(f"vision_preprocess: size must be at least 1, got {size}")
        out_h = out_w = size
    if c * h * w > MAX_PLANE or c * out_h * out_w > MAX_PLANE:
        raise ValueError(f"vision_preprocess: one image of {c}x{h}x{w} (or its {c}x{out_h}x{out_w} output) is too "
                         "large to index with 32-bit offsets")
    return out_h, out_w, _stat_values(mean, "mean", c), _stat_values(std, "std", c)


# --------------------------------------------------------------------------------------------------------
# public function
# --------------------------------------------------------------------------------------------------------


def vision_preprocess(x: Tensor, params=None, size: Optional[int] = 224, mean: Stats = CLIP_MEAN,
                      std: Stats = CLIP_STD, *, impl: str = "auto") -> Tensor:
    """DiffAugment (``params``) -> x * 0.5 + 0.5 -> area resize to size x size -> (x - mean) / std, fused.

    See the module docstring. ``params``: :class:`fastgan.train.augment.DiffAugmentParams` drawn for this batch
    and image size, or None. ``size=None`` keeps the image size."""
    out_h, out_w, mean_v, std_v = _check_args(x, size, mean, std)
    table, flags = pack_params(params, x)
    _, fn = _dispatch.resolve("vision_preprocess", impl, x)
    return fn(x, table, flags, out_h, out_w, mean_v, std_v)


# --------------------------------------------------------------------------------------------------------
# op registration: fake impls and autograd for the compiled and Triton ops
# --------------------------------------------------------------------------------------------------------


def _fwd_fake(x, table, flags, out_h, out_w, mean, std):
    return x.new_empty((x.shape[0], x.shape[1], out_h, out_w))


def _bwd_fake(grad_out, table, flags, height, width, std):
    return grad_out.new_empty((grad_out.shape[0], grad_out.shape[1], height, width))


def _register_autograd(op, bwd_op) -> None:
    def setup_context(ctx, inputs, output):
        x, table, flags, out_h, out_w, mean, std = inputs
        ctx.save_for_backward(table)
        ctx.args = (flags, out_h, out_w, list(mean), list(std), tuple(x.shape), x.dtype, x.device)

    def backward(ctx, grad):
        (table,) = ctx.saved_tensors
        flags, out_h, out_w, mean, std, shape, dtype, device = ctx.args
        if torch.is_grad_enabled():
            # create_graph=True: the backward is linear in grad and independent of x, so differentiate the
            # reference at any point (zeros) to get a result that is differentiable w.r.t. grad.
            with torch.enable_grad():
                xx = torch.zeros(shape, dtype=dtype, device=device, requires_grad=True)
                out = _vision_preprocess_ref(xx, table, flags, out_h, out_w, mean, std)
                (gx,) = torch.autograd.grad(out, xx, grad, create_graph=True)
        else:
            gx = bwd_op(grad.contiguous(), table, flags, shape[2], shape[3], std)
        return gx, None, None, None, None, None, None

    torch.library.register_autograd(op, backward, setup_context=setup_context)


# Triton-backed ops are defined here, from Python, so they exist whether or not fastgan._C is built.
@torch.library.custom_op("fastgan::vision_preprocess_triton", mutates_args=())
def _vp_triton(x: Tensor, table: Tensor, flags: int, out_h: int, out_w: int, mean: list[float],
               std: list[float]) -> Tensor:
    from fastgan.kernels import vision_preprocess as k

    return k.forward(x, table, flags, out_h, out_w, mean, std)


@torch.library.custom_op("fastgan::vision_preprocess_triton_backward", mutates_args=())
def _vp_triton_bwd(grad_out: Tensor, table: Tensor, flags: int, height: int, width: int,
                   std: list[float]) -> Tensor:
    from fastgan.kernels import vision_preprocess as k

    return k.backward(grad_out, table, flags, height, width, std)


_vp_triton.register_fake(_fwd_fake)
_vp_triton_bwd.register_fake(_bwd_fake)
_register_autograd(_vp_triton, _vp_triton_bwd)


def _ext_ops() -> bool:
    """Register fake/autograd rules on the compiled ops; False when the extension (or this family) is missing."""
    import fastgan

    if not fastgan.HAS_EXT or not hasattr(torch.ops.fastgan, "vision_preprocess"):
        return False
    torch.library.register_fake("fastgan::vision_preprocess")(_fwd_fake)
    torch.library.register_fake("fastgan::vision_preprocess_backward")(_bwd_fake)
    _register_autograd("fastgan::vision_preprocess", torch.ops.fastgan.vision_preprocess_backward)
    return True


_HAS_EXT_OPS = _ext_ops()

# --------------------------------------------------------------------------------------------------------
# dispatch table
# --------------------------------------------------------------------------------------------------------


def _ext_fn(x: Tensor, table: Tensor, flags: int, out_h: int, out_w: int, mean: list, std: list) -> Tensor:
    return torch.ops.fastgan.vision_preprocess(x, table, flags, out_h, out_w, mean, std)


def _ext_available(device_type: str) -> Optional[str]:
    reason = _dispatch.ext_unavailable("vision", device_type)
    if reason is None and not _HAS_EXT_OPS:
        return "fastgan._C has no vision_preprocess op (rebuild the extension)"
    return reason




# auto order on CPU from benchmarks/results/train.csv (preprocess_* cases, batch 16, 64 and 256 px -> 224): cpp is
# 6.0-21.7x faster than the unfused reference with color,translation,cutout and 2.1-7.9x without augmentation (fwd,
# bwd and fwd+bwd; docs/ops.md). On CUDA cuda, then triton, until GPU rows of that benchmark say more.
_dispatch.register_op("vision_preprocess", {"cpu": ("cpp", "ref"), "cuda": ("cuda", "triton", "ref"),
                                            "*": ("ref",)})
_dispatch.register_impl("vision_preprocess", "ref", _vision_preprocess_ref, devices=("cpu", "cuda", "mps", "xpu",
                                                                                       "meta"))
_dispatch.register_impl("vision_preprocess", "cpp", _ext_fn, devices=("cpu",), available=_ext_available)
_dispatch.register_impl("vision_preprocess", "cuda", _ext_fn, devices=("cuda",), available=_ext_available)
_dispatch.register_impl("vision_preprocess", "triton", _vp_triton, devices=("cpu", "cuda"),
                        available=_dispatch.triton_unavailable, supports=_dispatch.triton_float_supports)

__all__ = ["vision_preprocess", "pack_params", "CLIP_MEAN", "CLIP_STD"]

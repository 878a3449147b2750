"""Differentiable, per-sample-keyed image augmentation for the discriminator: DiffAugment and ADA.

Every random quantity is drawn by :mod:`fastgan.train.rng` from a per-sample int64 key, each kind of quantity
on its own ``stream``. So a sample's augmentation depends only on its key, never on the batch it is in, the
batch size or the torch global RNG. Images use the StyleGAN convention: float ``(N, C, H, W)`` in about [-1, 1].

- :func:`diffaugment`: DiffAugment (Zhao et al. 2020), ``color``, ``translation`` and ``cutout``, with the
  semantics of the official ``DiffAugment_pytorch.py``. Its constants assume [-1, 1] images. It is
  :func:`diffaugment_params` (draw the per-sample parameters) followed by :func:`apply_diffaugment`; the fused
  vision-backbone preprocessing (:func:`fastgan.ops.vision_preprocess`) takes the same parameters.
- :class:`AdaptiveAugment`: the ADA pipeline (Karras et al. 2020), presets ``blit``/``geom``/``color``/``bg``/``bgc``.
  Each op fires per sample with probability ``p * multiplier``. Geometric ops are composed into one 3x3 matrix
  per sample and color ops into one 4x4 matrix per sample. An optional cutout runs last.
- :class:`AdaController`: ADA's heuristic for ``p``. It tracks r_t = E[sign(D(real))] and moves p toward a
  target. Its accumulators can be all-reduced across processes.

Keys: use different keys, for example ``rng.derive(seed, step, phase, pipe_id)`` folded into
:func:`rng.sample_keys`, for pipes that must be independent, such as the main D's and each vision head's.
The streams below differ only between the quantities of one call.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fastgan.train import rng

__all__ = ["diffaugment", "diffaugment_params", "apply_diffaugment", "DiffAugmentParams", "DIFFAUGMENT_OPS",
           "DIFFAUGMENT_FUSED_ORDER", "AdaptiveAugment", "ADA_PRESETS", "AdaController"]

# ------------------------------------------------------------------------------------------------------------
# Shared helpers


def _check_batch(x: Tensor, keys: Optional[Tensor], fn: str) -> Tensor:
    """Validate ``x`` (N, C, H, W) floating and ``keys`` (N,) int64; return keys on x's device."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: x must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{fn}: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}; "
                         "add a batch dimension with x[None] for a single image")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: x must be a floating tensor (images in [-1, 1]), got {x.dtype}; "
                        "convert with x.float() / 127.5 - 1")
    if keys is None:
        raise ValueError(f"{fn}: keys is required: pass one int64 key per sample, "
                         "e.g. fastgan.train.rng.sample_keys(rng.derive(seed, step, phase), global_indices)")
    if not isinstance(keys, Tensor) or keys.dtype != torch.int64:
        got = keys.dtype if isinstance(keys, Tensor) else type(keys).__name__
        raise TypeError(f"{fn}: keys must be an int64 tensor of shape (N,), got {got}; "
                        "build it with fastgan.train.rng.sample_keys")
    if keys.dim() != 1 or keys.shape[0] != x.shape[0]:
        raise ValueError(f"{fn}: keys must have shape ({x.shape[0]},), one key per sample of x, "
                         f"got {tuple(keys.shape)}")
    return keys.to(x.device)


def _where_rows(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per-sample select: ``a[n]`` where ``mask[n]`` else ``b[n]`` (mask (N,), a/b (N, ...))."""
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    """Batched small matrix product with elementwise ops only (bitwise independent of the batch size)."""
    out = a[:, :, 0:1] * b[:, 0:1, :]
    for k in range(1, a.shape[2]):
        out = out + a[:, :, k:k + 1] * b[:, k:k + 1, :]
    return out


def _eye(n: int, batch: int, device) -> Tensor:
    return torch.eye(n, dtype=torch.float64, device=device).expand(batch, n, n).clone()


# ------------------------------------------------------------------------------------------------------------
# DiffAugment

DIFFAUGMENT_OPS: Dict[str, Tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "translation": ("translation",),
    "cutout": ("cutout",),
    # Extensions: the three parts of "color" on their own (same streams as inside "color").
    "brightness": ("brightness",),
    "saturation": ("saturation",),
    "contrast": ("contrast",),
}
# Stream ids: 100 + 16 * op + sub-quantity + 1000 * occurrence (occurrence: the k-th use of an op in one policy).
_DA_OP_ID = {"brightness": 0, "saturation": 1, "contrast": 2, "translation": 3, "cutout": 4}


def _da_stream(op: str, occurrence: int, sub: int = 0) -> int:
    return 100 + 16 * _DA_OP_ID[op] + sub + 1000 * occurrence


def _parse_policy(policy) -> List[str]:
    if policy is None:
        return []
    if not isinstance(policy, str):
        raise TypeError(f"diffaugment: policy must be a comma-separated string, got {type(policy).__name__}")
    names = [n.strip().lower() for n in policy.split(",") if n.strip()]
    bad = [n for n in names if n != "none" and n not in DIFFAUGMENT_OPS]
    if bad:
        raise ValueError(f"diffaugment: unknown policy name(s) {bad} in policy={policy!r}; valid names are "
                         f"{sorted(DIFFAUGMENT_OPS)} (comma-separated), or '' / 'none' for no augmentation")
    ops: List[str] = []
    for n in names:
        if n != "none":
            ops.extend(DIFFAUGMENT_OPS[n])
    return ops


def _da_brightness_draw(keys: Tensor, s: int, h: int, w: int) -> Tensor:
    # Official: x + (U[0,1) - 0.5), i.e. a per-sample offset in [-0.5, 0.5) on the [-1, 1] scale.
    return rng.uniform(keys, (), s).to(torch.float64) - 0.5


def _da_saturation_draw(keys: Tensor, s: int, h: int, w: int) -> Tensor:
    # Official: scale the deviation from the per-pixel channel mean by U[0, 2).
    return rng.uniform(keys, (), s).to(torch.float64) * 2


def _da_contrast_draw(keys: Tensor, s: int, h: int, w: int) -> Tensor:
    # Official: scale the deviation from the per-image mean (over C, H, W) by U[0.5, 1.5).
    return rng.uniform(keys, (), s).to(torch.float64) + 0.5


def _da_translation_draw(keys: Tensor, s: int, h: int, w: int, ratio: float = 0.125) -> Tensor:
    """(N, 2) int64 (ty, tx): ty in [-sh, sh], sh = int(H*ratio + 0.5) (tx likewise with W)."""
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = rng.randint(keys, 2 * sh + 1, (), s) - sh
    tx = rng.randint(keys, 2 * sw + 1, (), s + 1) - sw
    return torch.stack([ty, tx], dim=1)


def _cutout_span(off: Tensor, size: int, length: int) -> Tuple[Tensor, Tensor]:
    """Rows [lo, hi) zeroed by the official clamp-and-scatter of ``off - size//2 + arange(size)``."""
    lo = off - size // 2
    if size <= 0:
        return lo.clamp(0, length), lo.clamp(0, length)
    return lo.clamp(0, length - 1), (lo + size - 1).clamp(0, length - 1) + 1


def _da_cutout_draw(keys: Tensor, s: int, h: int, w: int, ratio: float = 0.5) -> Tensor:
    """(N, 4) int64 (y0, y1, x0, x1): the official (int(H*r+.5), int(W*r+.5)) box centred at a random offset,
    clipped at the borders; rows [y0, y1) x columns [x0, x1) are zeroed."""
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = rng.randint(keys, h + (1 - ch % 2), (), s)
    ox = rng.randint(keys, w + (1 - cw % 2), (), s + 1)
    y0, y1 = _cutout_span(oy, ch, h)
    x0, x1 = _cutout_span(ox, cw, w)
    return torch.stack([y0, y1, x0, x1], dim=1)


# The colour factors are applied in x's dtype as the official code forms them there: the uniform u is cast to
# x's dtype first, then shifted or doubled (u = b + 0.5 = f / 2 = f - 0.5 exactly, so float32 / float64 images see
# exactly the stored value, and float16 / bfloat16 ones the official double rounding).


def _da_brightness_apply(x: Tensor, b: Tensor) -> Tensor:
    return x + ((b + 0.5).to(x.dtype) - 0.5).view(-1, 1, 1, 1)


def _da_saturation_apply(x: Tensor, f: Tensor) -> Tensor:
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * ((f * 0.5).to(x.dtype) * 2).view(-1, 1, 1, 1) + m


def _da_contrast_apply(x: Tensor, f: Tensor) -> Tensor:
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * ((f - 0.5).to(x.dtype) + 0.5).view(-1, 1, 1, 1) + m


def _da_translation_apply(x: Tensor, t: Tensor) -> Tensor:
    """Official semantics: out[i, j] = x[i + ty, j + tx] (zero outside)."""
    n, c, h, w = x.shape
    ty, tx = t[:, 0], t[:, 1]
    iy = torch.arange(h, device=x.device).view(1, h, 1) + ty.view(n, 1, 1)
    ix = torch.arange(w, device=x.device).view(1, 1, w) + tx.view(n, 1, 1)
    valid = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)  # (n, h, w)
    idx = (iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1)).reshape(n, 1, h * w).expand(n, c, h * w)
    out = x.reshape(n, c, h * w).gather(2, idx).view(n, c, h, w)
    return torch.where(valid.unsqueeze(1), out, out.new_zeros(()))


def _da_cutout_apply(x: Tensor, box: Tensor) -> Tensor:
    n, c, h, w = x.shape
    iy = torch.arange(h, device=x.device).view(1, h, 1)
    ix = torch.arange(w, device=x.device).view(1, 1, w)
    y0, y1, x0, x1 = (box[:, k].view(n, 1, 1) for k in range(4))
    inside = (iy >= y0) & (iy < y1) & (ix >= x0) & (ix < x1)
    return torch.where(inside.unsqueeze(1), x.new_zeros(()), x)


def _da_cutout(x: Tensor, keys: Tensor, s: int, ratio: float = 0.5) -> Tensor:
    """DiffAugment's cutout with ``ratio`` (also ADA's "always" cutout)."""
    return _da_cutout_apply(x, _da_cutout_draw(keys, s, x.shape[2], x.shape[3], ratio))


_DA_DRAW = {"brightness": _da_brightness_draw, "saturation": _da_saturation_draw, "contrast": _da_contrast_draw,
            "translation": _da_translation_draw, "cutout": _da_cutout_draw}
_DA_APPLY = {"brightness": _da_brightness_apply, "saturation": _da_saturation_apply,
             "contrast": _da_contrast_apply, "translation": _da_translation_apply, "cutout": _da_cutout_apply}
# The order in which a fused kernel (fastgan.ops.vision_preprocess) applies the ops; "color,translation,cutout".
DIFFAUGMENT_FUSED_ORDER: Tuple[str, ...] = ("brightness", "saturation", "contrast", "translation", "cutout")


@dataclasses.dataclass(frozen=True)
class DiffAugmentParams:
    """The per-sample random parameters of one DiffAugment call, drawn by :func:`diffaugment_params`.

    ``ops``: the policy's ops in the order they are applied (``"color"`` expands to brightness, saturation,
    contrast); ``values``: one tensor per op, on the keys' device:

    - brightness: float64 (N,) offset b in [-0.5, 0.5); x -> x + b
    - saturation: float64 (N,) factor f in [0, 2); x -> (x - mean over channels) * f + mean over channels
    - contrast: float64 (N,) factor f in [0.5, 1.5); x -> (x - mean over C, H, W) * f + that mean
    - translation: int64 (N, 2) (ty, tx); out[i, j] = x[i + ty, j + tx], zero where that falls outside
    - cutout: int64 (N, 4) (y0, y1, x0, x1); rows [y0, y1) x columns [x0, x1) are set to zero

    The float factors are exact (24-bit uniforms shifted or doubled); applying them casts to the images' dtype.
    ``height`` and ``width`` are the image size the geometric values were drawn for; ``batch`` is N.
    """
    ops: Tuple[str, ...]
    values: Tuple[Tensor, ...]
    height: int
    width: int
    batch: int

    def get(self, op: str) -> Optional[Tensor]:
        """The values of ``op`` (its first occurrence), or None when the policy does not use it."""
        if op not in _DA_DRAW:
            raise ValueError(f"DiffAugmentParams.get: unknown op {op!r}; ops are {list(_DA_DRAW)}")
        for name, v in zip(self.ops, self.values):
            if name == op:
                return v
        return None

    @property
    def fusable(self) -> bool:
        """True when every op occurs at most once and in :data:`DIFFAUGMENT_FUSED_ORDER` (what the fused
        preprocessing kernels implement); e.g. ``"color,translation,cutout"`` or ``"translation,cutout"``, but not
        ``"cutout,translation"`` or ``"color,brightness"``."""
        pos = [DIFFAUGMENT_FUSED_ORDER.index(op) for op in self.ops]
        return all(a < b for a, b in zip(pos, pos[1:]))

    @property
    def device(self) -> torch.device:
        return self.values[0].device if self.values else torch.device("cpu")

    def to(self, device) -> "DiffAugmentParams":
        """The same parameters on ``device``."""
        return dataclasses.replace(self, values=tuple(v.to(device) for v in self.values))

    def select(self, index) -> "DiffAugmentParams":
        """The parameters of the samples ``index`` (a slice, or an index tensor / list), e.g. to split a batch."""
        values = tuple(v[index] for v in self.values)
        n = values[0].shape[0] if values else torch.arange(self.batch)[index].numel()
        return dataclasses.replace(self, values=values, batch=n)


def diffaugment_params(keys: Tensor, policy: str = "color,translation,cutout", height: int = 0,
                       width: Optional[int] = None) -> DiffAugmentParams:
    """Draw the per-sample DiffAugment parameters of ``policy`` for images of ``height`` x ``width`` (``width``
    defaults to ``height``) from ``keys`` (N,) int64, on the same counter streams as :func:`diffaugment`, which is
    ``apply_diffaugment(x, diffaugment_params(keys, policy, H, W))``."""
    ops = _parse_policy(policy)
    if not isinstance(keys, Tensor) or keys.dtype != torch.int64 or keys.dim() != 1:
        got = f"{keys.dtype} of shape {tuple(keys.shape)}" if isinstance(keys, Tensor) else type(keys).__name__
        raise TypeError(f"diffaugment_params: keys must be a 1-D int64 tensor (one key per sample), got {got}; "
                        "build it with fastgan.train.rng.sample_keys")
    width = height if width is None else width
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"diffaugment_params: {name} must be a positive int (the image size), got {v!r}")
    seen: Dict[str, int] = {}
    values = []
    for op in ops:
        k = seen.get(op, 0)
        seen[op] = k + 1
        values.append(_DA_DRAW[op](keys, _da_stream(op, k), height, width))
    return DiffAugmentParams(tuple(ops), tuple(values), height, width, int(keys.shape[0]))


def apply_diffaugment(x: Tensor, params: DiffAugmentParams) -> Tensor:
    """Apply drawn DiffAugment parameters to ``x`` (N, C, H, W) in [-1, 1]; differentiable w.r.t. ``x``."""
    if not isinstance(params, DiffAugmentParams):
        raise TypeError(f"apply_diffaugment: params must be DiffAugmentParams (from diffaugment_params), got "
                        f"{type(params).__name__}")
    _check_params_for(x, params, "apply_diffaugment")
    for op, v in zip(params.ops, params.values):
        x = _DA_APPLY[op](x, v.to(x.device))
    return x


def _check_params_for(x: Tensor, params: DiffAugmentParams, fn: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{fn}: x must be 4-D (N, C, H, W), got {got}")
    if params.batch != x.shape[0]:
        raise ValueError(f"{fn}: params hold {params.batch} samples but x has {x.shape[0]} (params batch mismatch); "
                         "draw them with the keys of exactly these samples")
    if params.ops and (params.height, params.width) != tuple(x.shape[2:]):
        raise ValueError(f"{fn}: params were drawn for {params.height}x{params.width} images but x is "
                         f"{x.shape[2]}x{x.shape[3]}; pass the image size to diffaugment_params")


def diffaugment(x: Tensor, policy: str = "color,translation,cutout", keys: Optional[Tensor] = None) -> Tensor:
    """DiffAugment ``policy`` applied to ``x`` (N, C, H, W) in [-1, 1], with randomness from ``keys`` (N,) int64.

    Ops, with the official code's constants on the [-1, 1] scale: ``color`` = brightness (+U[-0.5, 0.5)),
    saturation (deviation from the channel mean x U[0, 2)), contrast (deviation from the image mean x U[0.5, 1.5));
    ``translation`` = integer shift by up to int(size/8 + 0.5) pixels per axis with zero fill; ``cutout`` = zero
    an int(size/2 + 0.5) square centred at a random pixel, clipped at the borders. ``brightness``,
    ``saturation`` and ``contrast`` are also accepted alone. ``""`` or ``"none"`` returns ``x`` unchanged.
    Differentiable w.r.t. ``x``; no python loop over the batch. The same as
    ``apply_diffaugment(x, diffaugment_params(keys, policy, H, W))``; :func:`fastgan.ops.vision_preprocess` fuses
    it with the vision backbones' resize and normalisation.
    """
    _parse_policy(policy)
    keys = _check_batch(x, keys, "diffaugment")
    return apply_diffaugment(x, diffaugment_params(keys, policy, x.shape[2], x.shape[3]))


# ------------------------------------------------------------------------------------------------------------
# ADA

_ADA_BLIT = ("xflip", "rotate90", "xint")
_ADA_GEOM = ("scale", "rotate", "aniso", "xfrac")
_ADA_COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
_ADA_OPS = _ADA_BLIT + _ADA_GEOM + _ADA_COLOR
ADA_PRESETS: Dict[str, Tuple[str, ...]] = {
    "none": (),
    "blit": _ADA_BLIT,
    "geom": _ADA_GEOM,
    "color": _ADA_COLOR,
    "bg": _ADA_BLIT + _ADA_GEOM,
    "bgc": _ADA_OPS,
}
_ADA_STRENGTHS = dict(xint_max=0.125, scale_std=0.2, rotate_max=1.0, aniso_std=0.2, xfrac_std=0.125,
                      brightness_std=0.2, contrast_std=0.5, hue_max=1.0, saturation_std=1.0)
# Streams: 200 + 4 * op index + (0: gate, 1: value, 2: second gate/value). Cutout "always" uses 300.
_ADA_SID = {name: 200 + 4 * i for i, name in enumerate(_ADA_OPS + ("rotate_post", "cutout"))}
_ALWAYS_CUTOUT_STREAM = 300


def _translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    m = _eye(3, tx.shape[0], tx.device)
    m[:, 0, 2] = tx
    m[:, 1, 2] = ty
    return m


def _scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    m = _eye(3, sx.shape[0], sx.device)
    m[:, 0, 0] = sx
    m[:, 1, 1] = sy
    return m


def _rotate2d_cs(c: Tensor, s: Tensor) -> Tensor:
    m = _eye(3, c.shape[0], c.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _reflect_index(i: Tensor, length: int) -> Tensor:
    """Symmetric reflection (edge pixel repeated), the same as grid_sample's reflection at align_corners=False."""
    m = torch.remainder(i, 2 * length)
    return torch.where(m < length, m, 2 * length - 1 - m)


class AdaptiveAugment(torch.nn.Module):
    """ADA augmentation pipeline with probability ``p`` in a float32 buffer (saved in ``state_dict``).

    ``preset`` picks the ops (``"bgc"``: blit xflip/rotate90/xint, geometric scale/rotate/aniso/xfrac, color
    brightness/contrast/lumaflip/hue/saturation). Keyword arguments override any op's multiplier (op fires with
    probability ``p * multiplier``) or any strength (ADA defaults: scale_std=0.2, rotate_max=1, aniso_std=0.2,
    xfrac_std=0.125, xint_max=0.125, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1).
    The rules are ADA's. For example, rotate is tried before and after aniso with 1 - sqrt(1 - p), and color ops act
    on the [-1, 1] values about 0, with lumaflip, hue and saturation about the luma axis (1, 1, 1)/sqrt(3).

    Geometry: one 3x3 inverse matrix per sample (output pixel -> input pixel, centred coordinates).
    Samples whose matrix maps pixel centres to pixel centres are copied exactly by an index gather. This covers
    identity, xflip, rotate90 on square images and xint. All others go through one ``grid_sample`` call
    (``interpolation``, default ``"bicubic"``, or ``"bilinear"``) with ``padding_mode="reflection"``. ADA
    instead reflect-pads, upsamples 2x with a sym6 wavelet filter, samples bilinearly and downsamples. Bicubic
    at 1x is our simpler stand-in of similar sharpness. Both paths reflect symmetrically about the image edge.

    Color: one 4x4 matrix per sample. For C=1, ADA's rule applies: brightness, contrast and lumaflip
    (lumaflip negates a gray image) act, and hue and saturation are skipped. Only C in {1, 3} is supported
    when a color op is enabled.

    Cutout (``cutout`` > 0, last): ``cutout_mode="ada"`` zeroes a ``cutout_size`` box (a fraction of the image)
    around a uniform centre with probability ``p * cutout``, as ADA does. ``cutout_mode="always"`` applies
    DiffAugment's cutout (ratio ``cutout_size``) to every sample regardless of ``p``. vision-aided-gan does this
    after the ADA pipe of its heads.

    ``forward(x, keys, p=None)``: returns ``x`` itself when p == 0 and no always-cutout is on.
    Differentiable w.r.t. ``x``. Reads ``p`` on the host (one sync per call when it lives on a GPU).
    """

    def __init__(self, preset: str = "bgc", p: float = 0.0, *, cutout: float = 0.0, cutout_size: float = 0.5,
                 cutout_mode: str = "ada", interpolation: str = "bicubic", **overrides: float):
        super().__init__()
        if preset not in ADA_PRESETS:
            raise ValueError(f"AdaptiveAugment: unknown preset={preset!r}; valid presets are {sorted(ADA_PRESETS)} "
                             "(set single ops with keyword multipliers, e.g. preset='none', xflip=1)")
        unknown = sorted(set(overrides) - set(_ADA_OPS) - set(_ADA_STRENGTHS))
        if unknown:
            raise TypeError(f"AdaptiveAugment: unknown keyword(s) {unknown}; op multipliers are {list(_ADA_OPS)}, "
                            f"strengths are {list(_ADA_STRENGTHS)}")
        if cutout_mode not in ("ada", "always"):
            raise ValueError(f"AdaptiveAugment: cutout_mode must be 'ada' or 'always', got {cutout_mode!r}")
        if interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"AdaptiveAugment: interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
        self.mult: Dict[str, float] = {op: float(op in ADA_PRESETS[preset]) for op in _ADA_OPS}
        self.strength: Dict[str, float] = dict(_ADA_STRENGTHS)
        for k, v in overrides.items():
            (self.mult if k in self.mult else self.strength)[k] = float(v)
        for k, v in list(self.mult.items()) + list(self.strength.items()) + [("cutout", cutout),
                                                                               ("cutout_size", cutout_size)]:
            if not (float(v) >= 0 and math.isfinite(float(v))):
                raise ValueError(f"AdaptiveAugment: {k} must be finite and >= 0, got {v}")
        self.preset = preset
        self.cutout = float(cutout)
        self.cutout_size = float(cutout_size)
        self.cutout_mode = cutout_mode
        self.interpolation = interpolation
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float32))

    def extra_repr(self) -> str:
        on = [k if v == 1 else f"{k}={v:g}" for k, v in self.mult.items() if v > 0]
        cut = f", cutout={self.cutout:g} ({self.cutout_mode}, size {self.cutout_size:g})" if self.cutout > 0 else ""
        return f"p={float(self.p):.4f}, ops=[{', '.join(on)}]{cut}, interpolation={self.interpolation}"

    # -- random helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _gate(keys: Tensor, prob: float, stream: int) -> Tensor:
        return rng.uniform(keys, (), stream) < prob

    # -- geometry ------------------------------------------------------------------------------------------
    def _geometric_matrix(self, keys: Tensor, p: float, w: int, h: int) -> Optional[Tensor]:
        """(N, 3, 3) float64 inverse transform in centred pixel coordinates, or None if no geometric op is on."""
        m, st, sid = self.mult, self.strength, _ADA_SID
        n, dev = keys.shape[0], keys.device
        if not any(m[k] > 0 for k in _ADA_BLIT + _ADA_GEOM):
            return None
        f64 = torch.float64
        eye = _eye(3, n, dev)
        g = eye

        def compose(gate: Tensor, mat: Tensor) -> None:
            nonlocal g
            g = _matmul(g, _where_rows(gate, mat, eye))

        if m["xflip"] > 0:
            i = rng.randint(keys, 2, (), sid["xflip"] + 1).to(f64)
            compose(self._gate(keys, m["xflip"] * p, sid["xflip"]), _scale2d(1 - 2 * i, torch.ones_like(i)))
        if m["rotate90"] > 0:
            i = rng.randint(keys, 4, (), sid["rotate90"] + 1)
            cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=f64, device=dev)[i]  # exact multiples of 90 degrees
            sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=f64, device=dev)[i]
            compose(self._gate(keys, m["rotate90"] * p, sid["rotate90"]), _rotate2d_cs(cos, sin))
        if m["xint"] > 0:
            t = (rng.uniform(keys, 2, sid["xint"] + 1).to(f64) * 2 - 1) * st["xint_max"]
            compose(self._gate(keys, m["xint"] * p, sid["xint"]),
                    _translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h)))
        if m["scale"] > 0:
            s = torch.exp2(rng.normal(keys, (), sid["scale"] + 1).to(f64) * st["scale_std"])
            compose(self._gate(keys, m["scale"] * p, sid["scale"]), _scale2d(1 / s, 1 / s))
        p_rot = 1 - math.sqrt(min(max(1 - m["rotate"] * p, 0.0), 1.0))  # P(pre or post) = rotate * p
        if m["rotate"] > 0:
            th = (rng.uniform(keys, (), sid["rotate"] + 1).to(f64) * 2 - 1) * math.pi * st["rotate_max"]
            compose(self._gate(keys, p_rot, sid["rotate"]), _rotate2d_cs(torch.cos(th), torch.sin(th)))
        if m["aniso"] > 0:
            s = torch.exp2(rng.normal(keys, (), sid["aniso"] + 1).to(f64) * st["aniso_std"])
            compose(self._gate(keys, m["aniso"] * p, sid["aniso"]), _scale2d(1 / s, s))
        if m["rotate"] > 0:
            th = (rng.uniform(keys, (), sid["rotate_post"] + 1).to(f64) * 2 - 1) * math.pi * st["rotate_max"]
            compose(self._gate(keys, p_rot, sid["rotate_post"]), _rotate2d_cs(torch.cos(th), torch.sin(th)))
        if m["xfrac"] > 0:
            t = rng.normal(keys, 2, sid["xfrac"] + 1).to(f64) * st["xfrac_std"]
            compose(self._gate(keys, m["xfrac"] * p, sid["xfrac"]), _translate2d(-t[:, 0] * w, -t[:, 1] * h))
        return g

    def _geometric(self, x: Tensor, keys: Tensor, p: float) -> Tensor:
        n, c, h, w = x.shape
        g = self._geometric_matrix(keys, p, w, h)
        if g is None:
            return x
        cx, cy = (w - 1) / 2, (h - 1) / 2
        # Same map in pixel-index coordinates: src = A @ (dst - c) + t + c.
        a = g[:, :2, :2]
        t_idx = g[:, :2, 2] + torch.tensor([cx, cy], dtype=torch.float64, device=g.device) \
            - a[:, :, 0] * cx - a[:, :, 1] * cy
        m_idx = torch.cat([a, t_idx.unsqueeze(2)], dim=2)  # (n, 2, 3)
        is_int = (m_idx - m_idx.round()).abs().amax(dim=(1, 2)) < 1e-6
        eye23 = torch.eye(3, dtype=torch.float64, device=g.device)[:2]
        if bool((m_idx == eye23).all()):
            return x
        if bool(is_int.all()):
            return self._blit(x, m_idx.round().long())
        if not bool(is_int.any()):
            return self._resample(x, g)
        bi = is_int.nonzero().squeeze(1)
        ri = (~is_int).nonzero().squeeze(1)
        out = torch.index_copy(torch.zeros_like(x), 0, bi, self._blit(x[bi], m_idx[bi].round().long()))
        return torch.index_copy(out, 0, ri, self._resample(x[ri], g[ri]))

    @staticmethod
    def _blit(x: Tensor, m: Tensor) -> Tensor:
        """Exact integer remap: out[y, x] = in[reflect(m @ (x, y, 1))] with an int64 (n, 2, 3) matrix."""
        n, c, h, w = x.shape
        jx = torch.arange(w, device=x.device).view(1, 1, w)
        iy = torch.arange(h, device=x.device).view(1, h, 1)
        sx = m[:, 0, 0].view(n, 1, 1) * jx + m[:, 0, 1].view(n, 1, 1) * iy + m[:, 0, 2].view(n, 1, 1)
        sy = m[:, 1, 0].view(n, 1, 1) * jx + m[:, 1, 1].view(n, 1, 1) * iy + m[:, 1, 2].view(n, 1, 1)
        idx = _reflect_index(sy, h) * w + _reflect_index(sx, w)
        idx = idx.reshape(n, 1, h * w).expand(n, c, h * w)
        return x.reshape(n, c, h * w).gather(2, idx).view(n, c, h, w)

    def _resample(self, x: Tensor, g: Tensor) -> Tensor:
        n, c, h, w = x.shape
        u = (torch.arange(w, dtype=torch.float64, device=x.device) - (w - 1) / 2).view(1, 1, w)
        v = (torch.arange(h, dtype=torch.float64, device=x.device) - (h - 1) / 2).view(1, h, 1)
        col = [g[:, r, k].view(n, 1, 1) for r in range(2) for k in range(3)]
        su = col[0] * u + col[1] * v + col[2]
        sv = col[3] * u + col[4] * v + col[5]
        # align_corners=False: normalised coordinate = centred pixel coordinate * 2 / size.
        grid = torch.stack([su * (2.0 / w), sv * (2.0 / h)], dim=-1).to(x.dtype)
        return F.grid_sample(x, grid, mode=self.interpolation, padding_mode="reflection", align_corners=False)

    # -- color ---------------------------------------------------------------------------------------------
    def _color_matrix(self, keys: Tensor, p: float, channels: int) -> Optional[Tensor]:
        m, st, sid = self.mult, self.strength, _ADA_SID
        if not any(m[k] > 0 for k in _ADA_COLOR):
            return None
        if channels not in (1, 3):
            raise ValueError(f"AdaptiveAugment: color ops need C=1 or C=3 channels, got C={channels}; "
                             "disable them with brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0")
        n, dev, f64 = keys.shape[0], keys.device, torch.float64
        eye = _eye(4, n, dev)
        cm = eye
        vvec = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=f64, device=dev) / math.sqrt(3)  # luma axis
        vv = torch.outer(vvec, vvec).expand(n, 4, 4)

        def compose(gate: Tensor, mat: Tensor) -> None:
            nonlocal cm
            cm = _matmul(_where_rows(gate, mat, eye), cm)

        if m["brightness"] > 0:
            b = rng.normal(keys, (), sid["brightness"] + 1).to(f64) * st["brightness_std"]
            mat = eye.clone()
            mat[:, :3, 3] = b.view(n, 1)
            compose(self._gate(keys, m["brightness"] * p, sid["brightness"]), mat)
        if m["contrast"] > 0:
            s = torch.exp2(rng.normal(keys, (), sid["contrast"] + 1).to(f64) * st["contrast_std"])
            mat = eye.clone()
            mat[:, [0, 1, 2], [0, 1, 2]] = s.view(n, 1)
            compose(self._gate(keys, m["contrast"] * p, sid["contrast"]), mat)
        if m["lumaflip"] > 0:
            compose(self._gate(keys, m["lumaflip"] * p, sid["lumaflip"]) &
                    (rng.randint(keys, 2, (), sid["lumaflip"] + 1) == 1), eye - 2 * vv)  # Householder reflection
        if m["hue"] > 0 and channels > 1:
            th = (rng.uniform(keys, (), sid["hue"] + 1).to(f64) * 2 - 1) * math.pi * st["hue_max"]
            compose(self._gate(keys, m["hue"] * p, sid["hue"]), self._rotate_luma(th, vvec))
        if m["saturation"] > 0 and channels > 1:
            s = torch.exp2(rng.normal(keys, (), sid["saturation"] + 1).to(f64) * st["saturation_std"])
            compose(self._gate(keys, m["saturation"] * p, sid["saturation"]), vv + (eye - vv) * s.view(n, 1, 1))
        return cm

    @staticmethod
    def _rotate_luma(theta: Tensor, v: Tensor) -> Tensor:
        """Rodrigues rotation by ``theta`` about the unit axis ``v[:3]``, as a (N, 4, 4) matrix."""
        n = theta.shape[0]
        c, s = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
        a = v[:3]
        k = torch.zeros(3, 3, dtype=theta.dtype, device=theta.device)  # cross-product matrix [a]_x
        k[0, 1], k[0, 2], k[1, 0], k[1, 2], k[2, 0], k[2, 1] = -a[2], a[1], a[2], -a[0], -a[1], a[0]
        r3 = c * torch.eye(3, dtype=theta.dtype, device=theta.device) + s * k + (1 - c) * torch.outer(a, a)
        out = _eye(4, n, theta.device)
        out[:, :3, :3] = r3
        return out

    def _color(self, x: Tensor, keys: Tensor, p: float) -> Tensor:
        n, c, h, w = x.shape
        cm = self._color_matrix(keys, p, c)
        if cm is None:
            return x
        ident = (cm == torch.eye(4, dtype=cm.dtype, device=cm.device)).all(dim=(1, 2))
        if bool(ident.all()):
            return x
        if c == 3:
            mat = cm[:, :3, :].to(x.dtype)
            out = mat[:, :, 3].view(n, 3, 1, 1) + mat[:, :, 0].view(n, 3, 1, 1) * x[:, 0:1]
            out = out + mat[:, :, 1].view(n, 3, 1, 1) * x[:, 1:2]
            out = out + mat[:, :, 2].view(n, 3, 1, 1) * x[:, 2:3]
        else:  # ADA's gray rule: average the RGB rows, gain = sum of the 3 linear terms
            row = cm[:, :3, :].mean(dim=1)
            out = x * row[:, :3].sum(dim=1).to(x.dtype).view(n, 1, 1, 1) + row[:, 3].to(x.dtype).view(n, 1, 1, 1)
        return _where_rows(ident, x, out)

    # -- cutout --------------------------------------------------------------------------------------------
    def _ada_cutout(self, x: Tensor, keys: Tensor, p: float) -> Tensor:
        n, c, h, w = x.shape
        sid = _ADA_SID["cutout"]
        gate = self._gate(keys, self.cutout * p, sid)
        half = torch.where(gate, self.cutout_size / 2, 0.0).to(torch.float64).view(n, 1, 1)
        ctr = rng.uniform(keys, 2, sid + 1).to(torch.float64)
        gx = ((torch.arange(w, dtype=torch.float64, device=x.device) + 0.5) / w).view(1, 1, w)
        gy = ((torch.arange(h, dtype=torch.float64, device=x.device) + 0.5) / h).view(1, h, 1)
        keep = ((gx - ctr[:, 0].view(n, 1, 1)).abs() >= half) | ((gy - ctr[:, 1].view(n, 1, 1)).abs() >= half)
        return torch.where(keep.unsqueeze(1), x, x.new_zeros(()))

    # -- forward -------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, keys: Tensor, p: Optional[float] = None) -> Tensor:
        """Augment ``x`` (N, C, H, W) with per-sample ``keys``; ``p`` overrides the buffer (e.g. one p per head)."""
        keys = _check_batch(x, keys, "AdaptiveAugment")
        p = float(self.p) if p is None else float(p)
        if not (p >= 0 and math.isfinite(p)):
            raise ValueError(f"AdaptiveAugment: p must be finite and >= 0, got {p}")
        out = x
        if p > 0:
            out = self._geometric(out, keys, p)
            out = self._color(out, keys, p)
            if self.cutout > 0 and self.cutout_mode == "ada":
                out = self._ada_cutout(out, keys, p)
        if self.cutout > 0 and self.cutout_mode == "always":
            out = _da_cutout(out, keys, _ALWAYS_CUTOUT_STREAM, ratio=self.cutout_size)
        return out


# ------------------------------------------------------------------------------------------------------------
# ADA controller


class AdaController:
    """ADA's p heuristic. Every ``interval`` steps it sets
    ``p += sign(r_t - target) * batch_size * interval / (speed_kimg * 1000)``, then clamps p to [0, 1].
    Here r_t is the mean of sign(D(real)) over all logits accumulated since the last adjustment.

    ADA itself clamps only at 0; the [0, 1] clamp is ours (p > 1 acts like 1 except in rotate's split).
    If nothing was accumulated (count 0), p is left unchanged. ADA would produce NaN.

    Single process::

        ctrl.accumulate(real_logits)          # every D step on reals
        if ctrl.tick():                       # True on every interval-th call
            pipe.p.fill_(ctrl.update(ctrl.pending()))

    Several processes: same, with ``s = ctrl.pending(); dist.all_reduce(s); ctrl.update(s, num_images)`` where
    ``num_images`` is the global number of images per interval (defaults to ``batch_size * interval``, so pass the
    global batch as ``batch_size``). ``step(logits)`` does accumulate+tick+update for one process.
    """

    def __init__(self, batch_size: int, *, target: float = 0.6, interval: int = 4, speed_kimg: float = 500.0,
                 p: float = 0.0):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"AdaController: batch_size must be a positive int (the global batch), got {batch_size!r}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"AdaController: interval must be a positive int (steps between updates), "
                             f"got {interval!r}")
        if not (speed_kimg > 0 and math.isfinite(speed_kimg)):
            raise ValueError(f"AdaController: speed_kimg must be > 0 (kimg for p to go 0 -> 1), got {speed_kimg!r}")
        if not (-1 <= target <= 1):
            raise ValueError(f"AdaController: target must be in [-1, 1] (a mean sign), got {target!r}")
        if not (0 <= p <= 1):
            raise ValueError(f"AdaController: p must be in [0, 1], got {p!r}")
        self.batch_size = batch_size
        self.target = float(target)
        self.interval = interval
        self.speed_kimg = float(speed_kimg)
        self.p = float(p)
        self.rt = float("nan")
        self._ticks = 0
        self._acc = torch.zeros(2, dtype=torch.float64)

    @property
    def step_size(self) -> float:
        """The ADA adjustment magnitude per interval, ``batch_size * interval / (speed_kimg * 1000)``."""
        return self.batch_size * self.interval / (self.speed_kimg * 1000)

    def accumulate(self, logits: Tensor) -> None:
        """Add sign(logits) (any shape, detached) to the local [sum, count] without a device sync."""
        if not isinstance(logits, Tensor):
            raise TypeError(f"AdaController.accumulate: logits must be a tensor, got {type(logits).__name__}")
        d = logits.detach()
        if self._acc.device != d.device:
            self._acc = self._acc.to(d.device)
        self._acc[0] += d.sign().sum(dtype=torch.float64)
        self._acc[1] += d.numel()

    def pending(self) -> Tensor:
        """A copy of the local (2,) float64 [sum of signs, count] since the last update (all-reduce it to merge)."""
        return self._acc.clone()

    def tick(self) -> bool:
        """Count one training step; True when this step completes an interval (then call :meth:`update`)."""
        self._ticks += 1
        if self._ticks >= self.interval:
            self._ticks = 0
            return True
        return False

    def update(self, pending: Tensor, num_images: Optional[int] = None) -> float:
        """Adjust p from a (merged) [sum, count] and clear the local accumulators; returns the new p."""
        t = torch.as_tensor(pending, dtype=torch.float64).detach().cpu().reshape(-1)
        if t.numel() != 2:
            raise ValueError(f"AdaController.update: pending must have 2 entries [sum_signs, count] as returned "
                             f"by pending(), got shape {tuple(torch.as_tensor(pending).shape)}")
        s, n = t.tolist()
        self._acc.zero_()
        if n <= 0:
            return self.p
        self.rt = s / n
        imgs = self.batch_size * self.interval if num_images is None else num_images
        direction = (self.rt > self.target) - (self.rt < self.target)  # np.sign
        self.p = min(max(self.p + direction * imgs / (self.speed_kimg * 1000), 0.0), 1.0)
        return self.p

    def step(self, logits: Optional[Tensor] = None) -> float:
        """One process: accumulate ``logits`` (if given), tick, and update on interval boundaries; returns p."""
        if logits is not None:
            self.accumulate(logits)
        if self.tick():
            self.update(self.pending())
        return self.p

    def state_dict(self) -> dict:
        s, n = self._acc.cpu().tolist()
        return {"p": self.p, "rt": self.rt, "ticks": self._ticks, "pending": [s, n], "target": self.target,
                "interval": self.interval, "speed_kimg": self.speed_kimg, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Restore p, rt, the step phase and the pending sums; the config stays as constructed."""
        missing = {"p", "rt", "ticks", "pending"} - set(state)
        if missing:
            raise KeyError(f"AdaController.load_state_dict: state is missing {sorted(missing)}")
        self.p = float(state["p"])
        self.rt = float(state["rt"])
        self._ticks = int(state["ticks"])
        self._acc = torch.tensor([float(v) for v in state["pending"]], dtype=torch.float64, device=self._acc.device)

    def __repr__(self) -> str:
        return (f"AdaController(p={self.p:.5f}, rt={self.rt:.4f}, target={self.target}, interval={self.interval}, "
                f"speed_kimg={self.speed_kimg}, batch_size={self.batch_size})")

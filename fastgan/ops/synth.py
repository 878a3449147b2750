"""Primitives-PS building blocks: counter-based random numbers, spectral noise and shape rasterisation.

``power_spectrum_noise(n, size, *, channels=3, exponent_range=(0.5, 3.5), seed, start=0, stream=0, device="cpu",
impl="auto") -> uint8 (n, channels, size, size)``
    Per image and channel: the spectrum of white Gaussian noise, times the anisotropic weight
    w[i, j] = 1 / ((f_i^a + eps) + (f_j^b + eps)) with a, b ~ U(exponent_range) (i = row frequency, j = column
    frequency, eps = 1e-6, f_k = |fftfreq(size, d=0.2)|_k with f_0 := 0.1 f_1), inverse FFT; then the image's
    channels are min-max normalised jointly to [0, 255] and truncated to uint8 (the official ``renormalize``).
    Image k's randomness depends only on (seed, start + k, stream): never on the batch split, impl or device.

``rasterize_shapes(canvas, shapes, *, texture=None, impl="auto") -> canvas'`` (the input is untouched)
    canvas (B, C, H, W) uint8 or float32, C <= 3; shapes (B, S, 10) float32 rows (other real dtypes are converted)
    ``[kind, c0, c1, c2, p0, p1, p2, p3, p4, p5]`` painted in increasing s (later shapes cover earlier ones),
    opaque, no anti-aliasing. Pixel (row i, col j) has its centre at (x=j, y=i). Kinds:
      0 none;
      1 line (x0, y0, x1, y1, thickness): distance from the pixel centre to the segment <= thickness / 2;
      2 circle (cx, cy, r): (x - cx)^2 + (y - cy)^2 <= r^2;
      3 ellipse (cx, cy, rx, ry, angle_deg): the rx axis points along (cos t, sin t) in (x, y) pixel coordinates
        (y down: positive angles turn clockwise on screen, as OpenCV); inside when (u/rx)^2 + (v/ry)^2 <= 1 in
        that rotated frame (evaluated as (u ry)^2 + (v rx)^2 <= (rx ry)^2); rx = 0 or ry = 0 paints nothing;
      4 rectangle (x0, y0, x1, y1): min(x0, x1) <= x <= max(x0, x1) and the same for y;
      kind + 8 (9..12): the same shape *textured*: channel c takes ``texture[b, c, i, j]`` where c_c != 0 and is
        left as it was where c_c == 0 (the official saliency mask is per channel); needs ``texture``.
      Any other kind paints nothing.
    Solid colours are the first C of (c0, c1, c2) in canvas units; on a uint8 canvas they are clamped to [0, 255]
    and truncated. Inside tests are evaluated in float64 by every impl, so integer-valued tables (everything
    ``fastgan.synth`` draws) give bit-identical uint8 images whatever the impl or device.

Compiled / Triton stages (the ops that ``impl`` selects): ``synth_spectral_field`` (draw the weighted half
spectrum straight from counters: no noise image, no forward FFT, no weight tensor), ``synth_minmax_quantize`` (per
image joint min-max and truncation to uint8) and ``rasterize_shapes``. The inverse real FFT between them is torch's
(pocketfft on CPU, cuFFT on CUDA).

Why the spectrum is drawn directly: the FFT of real white Gaussian noise is a Hermitian complex Gaussian field
with independent bins of equal variance (real on the self-conjugate bins), so drawing that field is the same
distribution as "white noise -> FFT" at a third of the cost, and the half spectrum with irfft2 equals the
official Re(ifft2(w * N)) because w is even in both frequencies.

Counter-based random numbers (identical integer arithmetic in every impl; all values are uint32):
    mix(x)              = x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16  (mod 2^32)
    keys(seed, k, s)    = (k0, k1) per image k and stream s, see :func:`rng_keys`
    draw(k0, k1, j)     = mix(mix(j ^ k0) + k1)           element counter j < 2^32
Spectrum bin (c, i, j) of the half spectrum (width Wh = size // 2 + 1) uses m = (c * size + i) * Wh + j and the
draws h1 = draw(2m), h2 = draw(2m + 1): u1 = ((h1 >> 8) + 1) 2^-24, u2 = (h2 >> 8) 2^-24,
r = sqrt(-2 ln u1), (re, im) = (r cos(2 pi u2), r sin(2 pi u2)). Columns j = 0 and (even sizes) j = size / 2 are
Hermitian: rows i > size - i take the conjugate of row size - i, self-conjugate bins (i = 0 or size / 2) are
(sqrt(2) re, 0). Exponents: a_c = lo + (hi - lo) (draw(2c) >> 8) 2^-24, b_c likewise with 2c + 1, on the
exponent stream 2 s + 1 (noise uses stream 2 s).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from .. import _checks
from . import _dispatch

M32 = 0xFFFFFFFF
EPS = 1e-6
FREQ_D = 0.2  # fftfreq sample spacing of the official code
MAX_SEED = 2**63 - 1
SHAPE_ROW = 10
KIND_NONE, KIND_LINE, KIND_CIRCLE, KIND_ELLIPSE, KIND_RECT = 0, 1, 2, 3, 4
TEXTURED = 8  # kind + TEXTURED: filled from the texture instead of a solid colour

# --------------------------------------------------------------------------------------------------------
# counter-based random numbers (torch int64 arithmetic; exact on every device)
# --------------------------------------------------------------------------------------------------------


def _mul32(x: Tensor, m: int) -> Tensor:
    """(x * m) mod 2^32 for 0 <= x < 2^32 without int64 overflow: split x into 16-bit halves."""
    lo = x & 0xFFFF
    hi = x >> 16
    return (((hi * m) & 0xFFFF) << 16) + lo * m & M32


def mix32(x: Tensor) -> Tensor:
    """The 32-bit integer mixer ("lowbias32") on int64 tensors holding uint32 values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def draw32(k0: Tensor, k1: Tensor, j: Tensor) -> Tensor:
    """uint32 random draw number j (broadcasting) of the stream keyed by (k0, k1)."""
    return mix32((mix32(j ^ k0) + k1) & M32)


def _check_seed(seed: int, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        try:
            import numpy as np

            if isinstance(seed, np.integer):
                seed = int(seed)
        except ImportError:  # pragma: no cover
            pass
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{name} must be an int, got {type(seed).__name__}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be in [0, 2**63 - 1], got {seed}")
    return seed


def rng_keys(seed: int, images: Tensor, stream: int) -> Tensor:
    """(n, 2) int64 keys (k0, k1) of stream ``stream`` for the image indices ``images`` (int64, >= 0).

    h = mix(mix(mix(seed_lo ^ 0x9e3779b9) ^ seed_hi) ^ stream ^ 0x85ebca6b);
    k0 = mix(mix(h ^ image_lo) ^ image_hi ^ 0xc2b2ae35); k1 = mix(k0 ^ 0x27d4eb2f).
    """
    seed = _check_seed(seed)
    if not 0 <= stream < 2**32:
        raise ValueError(f"stream must be in [0, 2**32), got {stream}")
    images = images.to(torch.int64)
    h = mix32(torch.tensor([(seed & M32) ^ 0x9E3779B9], dtype=torch.int64, device=images.device))
    h = mix32(h ^ (seed >> 32))
    h = mix32(h ^ stream ^ 0x85EBCA6B)
    k0 = mix32(h ^ (images & M32))
    k0 = mix32(k0 ^ (images >> 32) ^ 0xC2B2AE35)
    k1 = mix32(k0 ^ 0x27D4EB2F)
    return torch.stack([k0, k1], dim=-1)


def uniform24(u: Tensor) -> Tensor:
    """uint32 draws -> float64 uniforms in [0, 1) with 24 random bits (exactly representable in float32)."""
    return (u >> 8).to(torch.float64) * (2.0 ** -24)


def randint(u: Tensor, low, high) -> Tensor:
    """Uniform integers in [low, high) from uint32 draws by multiply-shift (exact; low/high broadcast)."""
    span = torch.as_tensor(high, dtype=torch.int64, device=u.device) - low
    return low + ((u * span) >> 32)


# --------------------------------------------------------------------------------------------------------
# references (they define the semantics)
# --------------------------------------------------------------------------------------------------------


def spectral_frequencies(size: int, device=None) -> Tensor:
    """float32 |fftfreq(size, d=0.2)| with the DC entry replaced by 0.1 f_1 (the official spectrum axis)."""
    k = torch.arange(size, device=device)
    kk = torch.minimum(k, size - k).to(torch.float32)
    inv = torch.tensor(5.0, dtype=torch.float32, device=device) / torch.tensor(float(size), dtype=torch.float32,
                                                                               device=device)
    f = kk * inv
    f[0] = torch.tensor(0.1, dtype=torch.float32, device=device) * inv
    return f


def _spectral_field_ref(keys: Tensor, exponents: Tensor, size: int) -> Tensor:
    """The weighted half spectrum, float32 (n, C, size, size // 2 + 1, 2) = (re, im). See the module docstring."""
    n, c = exponents.shape[:2]
    wh = size // 2 + 1
    dev = keys.device
    ci = torch.arange(c, device=dev).view(c, 1, 1)
    ii = torch.arange(size, device=dev).view(1, size, 1)
    jj = torch.arange(wh, device=dev).view(1, 1, wh)
    # Hermitian columns: rows below the middle mirror a row above it.
    herm_col = (jj == 0) | ((size % 2 == 0) & (jj == size // 2))
    mirror = ii > (size - ii) % size
    src_i = torch.where(herm_col & mirror, (size - ii) % size, ii)
    m = (ci * size + src_i) * wh + jj  # (C, size, wh)
    k0 = keys[:, 0].view(n, 1, 1, 1)
    k1 = keys[:, 1].view(n, 1, 1, 1)
    h1 = draw32(k0, k1, 2 * m)
    h2 = draw32(k0, k1, 2 * m + 1)
    u1 = ((h1 >> 8) + 1).to(torch.float32) * (2.0 ** -24)
    u2 = (h2 >> 8).to(torch.float32) * (2.0 ** -24)
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = u2 * torch.tensor(2 * math.pi, dtype=torch.float32)
    re = r * torch.cos(theta)
    im = r * torch.sin(theta)
    self_conj = herm_col & ((ii == 0) | ((size % 2 == 0) & (ii == size // 2)))
    re = torch.where(self_conj, re * torch.tensor(math.sqrt(2.0), dtype=torch.float32), re)
    im = torch.where(self_conj, torch.zeros_like(im), torch.where(herm_col & mirror, -im, im))
    f = spectral_frequencies(size, dev)
    a = exponents[..., 0].view(n, c, 1, 1)
    b = exponents[..., 1].view(n, c, 1, 1)
    w = 1.0 / ((torch.pow(f.view(1, 1, size, 1), a) + EPS) + (torch.pow(f[:wh].view(1, 1, 1, wh), b) + EPS))
    return torch.stack([re * w, im * w], dim=-1)


def _minmax_quantize_ref(x: Tensor) -> Tensor:
    """Per image (dim 0) joint min-max over every other dim, then floor((x - min) / (max - min) * 255) as uint8.

    float32 arithmetic in that order (divide, then multiply); a constant image gives zeros.
    """
    flat = x.reshape(x.shape[0], -1).to(torch.float32)
    mn = flat.amin(dim=1, keepdim=True)
    mx = flat.amax(dim=1, keepdim=True)
    rng = mx - mn
    t = (flat - mn) / torch.where(rng > 0, rng, torch.ones_like(rng))
    q = torch.floor(t * 255.0).clamp_(0, 255)
    q = torch.where(rng > 0, q, torch.zeros_like(q))
    return q.to(torch.uint8).reshape(x.shape)


def _inside(kind: Tensor, p: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Coverage of pixel centres (x, y) (float64, broadcast (1, H, W)) by one shape per image (kind (B,1,1), p (B,6))."""
    p = p.to(torch.float64)
    p0, p1, p2, p3, p4 = (p[:, k].view(-1, 1, 1) for k in range(5))
    base = torch.where(kind > TEXTURED, kind - TEXTURED, kind)
    # line: capsule of half-width t/2 around the segment, division-free
    dx, dy = p2 - p0, p3 - p1
    wx, wy = x - p0, y - p1
    ll = dx * dx + dy * dy
    dot = wx * dx + wy * dy
    h2 = (p4 * 0.5) * (p4 * 0.5)
    d0 = wx * wx + wy * wy
    ex, ey = x - p2, y - p3
    d1 = ex * ex + ey * ey
    cross = wx * dy - wy * dx
    line = torch.where(dot <= 0, d0 <= h2, torch.where(dot >= ll, d1 <= h2, cross * cross <= h2 * ll))
    # circle
    cx, cy = x - p0, y - p1
    circle = cx * cx + cy * cy <= p2 * p2
    # ellipse
    th = p4 * (math.pi / 180.0)
    c, s = torch.cos(th), torch.sin(th)
    u = cx * c + cy * s
    v = cy * c - cx * s
    ur, vr, rr = u * p3, v * p2, p2 * p3
    ellipse = (ur * ur + vr * vr <= rr * rr) & (rr != 0)  # a zero radius: no area, nothing painted
    # rectangle
    rect = (x >= torch.minimum(p0, p2)) & (x <= torch.maximum(p0, p2)) & (y >= torch.minimum(p1, p3)) & (
        y <= torch.maximum(p1, p3))
    return torch.where(base == KIND_LINE, line, torch.where(base == KIND_CIRCLE, circle, torch.where(
        base == KIND_ELLIPSE, ellipse, torch.where(base == KIND_RECT, rect, torch.zeros_like(rect)))))


def _rasterize_shapes_ref(canvas: Tensor, shapes: Tensor, texture: Optional[Tensor] = None) -> Tensor:
    """Paint the shapes in table order (painter's algorithm), one (B, H, W) coverage mask per shape."""
    b, c, h, w = canvas.shape
    out = canvas.clone()
    dev = canvas.device
    y = torch.arange(h, device=dev, dtype=torch.float64).view(1, h, 1)
    x = torch.arange(w, device=dev, dtype=torch.float64).view(1, 1, w)
    kinds = shapes[..., 0]
    valid = ((kinds >= 1) & (kinds <= 4)) | ((kinds >= 9) & (kinds <= 12))
    kinds = torch.where(valid & (kinds == torch.round(kinds)), kinds, torch.zeros_like(kinds)).to(torch.int64)
    for s in range(shapes.shape[1]):
        kind = kinds[:, s].view(b, 1, 1)
        inside = _inside(kind, shapes[:, s, 4:], x, y)  # (B, H, W)
        textured = kind > TEXTURED
        for ch in range(c):
            cval = shapes[:, s, 1 + ch]
            if canvas.dtype == torch.uint8:
                solid = cval.clamp(0, 255).to(torch.uint8)
            else:
                solid = cval.to(canvas.dtype)
            solid = solid.view(b, 1, 1).expand(b, h, w)
            if texture is not None:
                fill = torch.where(textured, texture[:, ch], solid)
                paint = inside & (~textured | (cval != 0).view(b, 1, 1))
            else:
                fill = solid
                paint = inside & ~textured
            out[:, ch] = torch.where(paint, fill, out[:, ch])
    return out


# --------------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------------


def _check_shapes_args(canvas: Tensor, shapes: Tensor, texture: Optional[Tensor]) -> None:
    if not isinstance(canvas, Tensor):
        raise TypeError(f"canvas must be a torch.Tensor, got {type(canvas).__name__}")
    if not isinstance(shapes, Tensor):
        raise TypeError(f"shapes must be a torch.Tensor, got {type(shapes).__name__}")
    if canvas.dim() != 4:
        raise ValueError(f"canvas must have shape (B, C, H, W), got {tuple(canvas.shape)}")
    if canvas.dtype not in (torch.uint8, torch.float32):
        raise TypeError(f"canvas must be uint8 or float32, got {canvas.dtype}")
    b, c, h, w = canvas.shape
    if not 1 <= c <= 3:
        raise ValueError(f"canvas must have 1 to 3 channels (colours come from c0..c2), got {c}")
    if shapes.dim() != 3 or shapes.shape[0] != b or shapes.shape[2] != SHAPE_ROW:
        raise ValueError(f"shapes must have shape (B, S, {SHAPE_ROW}) = ({b}, S, {SHAPE_ROW}) for this canvas, "
                         f"got {tuple(shapes.shape)}")
    if shapes.is_complex() or shapes.dtype == torch.bool:
        raise TypeError(f"shapes must be a real (float32, or convertible) tensor, got {shapes.dtype}")
    if shapes.device != canvas.device:
        raise ValueError(f"shapes is on {shapes.device} but canvas is on {canvas.device}")
    if texture is not None:
        if not isinstance(texture, Tensor):
            raise TypeError(f"texture must be a torch.Tensor or None, got {type(texture).__name__}")
        if tuple(texture.shape) != tuple(canvas.shape) or texture.dtype != canvas.dtype:
            raise ValueError(f"texture must match the canvas ({tuple(canvas.shape)}, {canvas.dtype}), got "
                             f"{tuple(texture.shape)}, {texture.dtype}")
        if texture.device != canvas.device:
            raise ValueError(f"texture is on {texture.device} but canvas is on {canvas.device}")
    if h * w >= 2**31:
        raise ValueError(f"canvas planes of {h}x{w} pixels are too large")


def _check_noise_args(n: int, size: int, channels: int, exponent_range: Sequence[float], start: int,
                      stream: int) -> tuple[float, float]:
    _checks.require_ints(n=n, size=size, channels=channels, start=start, stream=stream)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if size < 2:
        raise ValueError(f"size must be at least 2, got {size}")
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    if 2 * channels * size * (size // 2 + 1) > 2**32:
        raise ValueError(f"size {size} with {channels} channels exceeds the 2^32 random draws per image")
    if start < 0 or start + n - 1 > MAX_SEED:
        raise ValueError(f"image indices start..start+n-1 must lie in [0, 2**63 - 1], got start={start}, n={n}")
    if not 0 <= stream < 2**31:
        raise ValueError(f"stream must be in [0, 2**31), got {stream}")
    try:
        lo, hi = (float(v) for v in exponent_range)
    except (TypeError, ValueError):
        raise ValueError(f"exponent_range must be a pair of numbers, got {exponent_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        raise ValueError(f"exponent_range must satisfy 0 <= low <= high (finite), got {exponent_range!r}")
    return lo, hi


# --------------------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------------------


def spectral_exponents(n: int, *, channels: int = 3, exponent_range: Sequence[float] = (0.5, 3.5), seed: int,
                       start: int = 0, stream: int = 0, device="cpu") -> Tensor:
    """float32 (n, channels, 2) exponents (a = rows, b = columns) that :func:`power_spectrum_noise` uses."""
    lo, hi = _check_noise_args(n, 2, channels, exponent_range, start, stream)
    _check_seed(seed)
    images = torch.arange(start, start + n, dtype=torch.int64, device=device)
    keys = rng_keys(seed, images, 2 * stream + 1)
    j = torch.arange(2 * channels, dtype=torch.int64, device=device)
    u = uniform24(draw32(keys[:, :1], keys[:, 1:], j))  # (n, 2C) float64
    return (lo + (hi - lo) * u).to(torch.float32).view(n, channels, 2)


def _irfft2(spectrum: Tensor, size: int) -> Tensor:
    """irfft2 over the last two dims. On the CPU, large planes go one image at a time: torch's batched CPU c2r
    permutes and copies the whole batch twice, which costs more than the transform itself at 128 px and up (each
    image's values are the same either way: every plane is transformed on its own)."""
    if spectrum.device.type != "cpu" or size < 128 or spectrum.dim() < 3 or spectrum.shape[0] == 1:
        return torch.fft.irfft2(spectrum, s=(size, size))
    out = torch.empty(spectrum.shape[:-1] + (size,), dtype=torch.float32)
    for k in range(spectrum.shape[0]):
        torch.fft.irfft2(spectrum[k], s=(size, size), out=out[k])
    return out


def power_spectrum_noise(n: int, size: int, *, channels: int = 3, exponent_range: Sequence[float] = (0.5, 3.5),
                         seed: int, start: int = 0, stream: int = 0, device="cpu", impl: str = "auto") -> Tensor:
    """uint8 (n, channels, size, size) power-spectrum noise images. See the module docstring."""
    lo, hi = _check_noise_args(n, size, channels, exponent_range, start, stream)
    _check_seed(seed)
    device = torch.device(device)
    exps = spectral_exponents(n, channels=channels, exponent_range=(lo, hi), seed=seed, start=start, stream=stream,
                              device=device)
    images = torch.arange(start, start + n, dtype=torch.int64, device=device)
    keys = rng_keys(seed, images, 2 * stream)
    _, field_fn = _dispatch.resolve("synth_spectral_field", impl, exps)
    field = field_fn(keys, exps, size)
    img = _irfft2(torch.view_as_complex(field), size)
    _, quant_fn = _dispatch.resolve("synth_minmax_quantize", impl, img)
    return quant_fn(img)


def minmax_quantize(x: Tensor, *, impl: str = "auto") -> Tensor:
    """Per image (dim 0) joint min-max of a float tensor to [0, 255], truncated to uint8 (official renormalize)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] < 1 or x.numel() == 0:
        raise ValueError(f"x must have a non-empty leading image dimension, got shape {tuple(x.shape)}")
    if x.dtype != torch.float32:
        raise TypeError(f"x must be float32, got {x.dtype}")
    _, fn = _dispatch.resolve("synth_minmax_quantize", impl, x)
    return fn(x)


def rasterize_shapes(canvas: Tensor, shapes: Tensor, *, texture: Optional[Tensor] = None,
                     impl: str = "auto") -> Tensor:
    """Paint a (B, S, 10) shape table onto a copy of ``canvas``. See the module docstring for the pixel rule."""
    _check_shapes_args(canvas, shapes, texture)
    if shapes.dtype != torch.float32:  # integer or float64 tables are converted (exact for |values| < 2^24)
        shapes = shapes.to(torch.float32)
    if texture is None and shapes.numel() and not torch.compiler.is_compiling() and bool(((shapes[..., 0] >= 9) & (shapes[..., 0] <= 12)).any()):
        raise ValueError("shapes has textured rows (kind 9..12) but no texture was given")
    _, fn = _dispatch.resolve("rasterize_shapes", impl, canvas)
    return fn(canvas, shapes, texture)


# --------------------------------------------------------------------------------------------------------
# op registration
# --------------------------------------------------------------------------------------------------------


def _field_fake(keys, exponents, size):
    return exponents.new_empty((exponents.shape[0], exponents.shape[1], size, size // 2 + 1, 2))


def _quant_fake(x):
    return x.new_empty(x.shape, dtype=torch.uint8)


def _raster_fake(canvas, shapes, texture):
    return torch.empty_like(canvas)


@torch.library.custom_op("fastgan::synth_spectral_field_triton", mutates_args=())
def _field_triton(keys: Tensor, exponents: Tensor, size: int) -> Tensor:
    from fastgan.kernels import synth as k

    return k.spectral_field(keys, exponents, size)


@torch.library.custom_op("fastgan::synth_minmax_quantize_triton", mutates_args=())
def _quant_triton(x: Tensor) -> Tensor:
    from fastgan.kernels import synth as k

    return k.minmax_quantize(x)


@torch.library.custom_op("fastgan::rasterize_shapes_triton", mutates_args=())
def _raster_triton(canvas: Tensor, shapes: Tensor, texture: Optional[Tensor]) -> Tensor:
    from fastgan.kernels import synth as k

    return k.rasterize_shapes(canvas, shapes, texture)


_field_triton.register_fake(_field_fake)
_quant_triton.register_fake(_quant_fake)
_raster_triton.register_fake(_raster_fake)


def _ext_ops() -> bool:
    import fastgan

    if not fastgan.HAS_EXT or not hasattr(torch.ops.fastgan, "rasterize_shapes"):
        return False
    for name, fake in (("synth_spectral_field", _field_fake), ("synth_minmax_quantize", _quant_fake),
                       ("rasterize_shapes", _raster_fake)):
        torch.library.register_fake(f"fastgan::{name}")(fake)
    return True


_HAS_EXT_OPS = _ext_ops()


def _ext_fn(name: str):
    def call(*args):
        return getattr(torch.ops.fastgan, name)(*args)

    call.__name__ = f"{name}_ext"
    return call


def _register(op: str, ref, triton_fn) -> None:
    _dispatch.register_op(op, {"cpu": ("cpp", "ref"), "cuda": ("cuda", "triton", "ref"), "*": ("ref",)})
    _dispatch.register_impl(op, "ref", ref, devices=("cpu", "cuda", "mps", "xpu", "meta"))
    ext = _ext_fn(op)
    _dispatch.register_impl(op, "cpp", ext, devices=("cpu",),
                            available=lambda d: _dispatch.ext_unavailable("synth", d))
    _dispatch.register_impl(op, "cuda", ext, devices=("cuda",),
                            available=lambda d: _dispatch.ext_unavailable("synth", d))
    _dispatch.register_impl(op, "triton", triton_fn, devices=("cpu", "cuda"), available=_dispatch.triton_unavailable)


_register("synth_spectral_field", _spectral_field_ref, _field_triton)
_register("synth_minmax_quantize", _minmax_quantize_ref, _quant_triton)
_register("rasterize_shapes", _rasterize_shapes_ref, _raster_triton)

__all__ = ["power_spectrum_noise", "rasterize_shapes", "minmax_quantize", "spectral_exponents", "rng_keys",
           "mix32", "draw32", "spectral_frequencies"]

"""Shape parameters of Primitives-PS, drawn on the device, vectorised over (image, shape).

Every draw is counter-based (``fastgan.ops.synth.draw32``): shape s of image k uses the draws
``s * 16 + slot`` of the stream keyed by (seed, k), so image k depends only on (seed, k), whatever the batch,
device or impl. All parameters are integers computed with exact integer arithmetic, so the tables are
bit-identical on every device.

Two parameterisations (``compat``):

``"official"``  the constants and quirks of the official generator (METHODS.md section 1.2): line endpoints and
    rectangle corners hard-wired for 256 pixels (randint(0, 255), randint(0, 255 - max_size)), line endpoints
    sorted per axis (every line runs top-left to bottom-right), colours in [0, 254], the salient rectangle
    ignores the drawn centre, the salient mask is per channel (a zero colour channel leaves that channel
    unmasked), and the flat background of the shapes-only variants is grey (one value for all channels).
``"fastgan"``   every constant scales with the resolution and the quirks are fixed: endpoints anywhere on the
    canvas in any orientation, rectangles placed so they fit the canvas, colours in [0, 255], a centred salient
    rectangle, a full salient mask and independent background channels.

Both share the shape-kind distribution (line 1/7, circle / ellipse / rectangle 2/7 each), the linear
coarse-to-fine size schedule max_size(s) = round(R // 5 * (N - s) / N + 2) (numpy rounding, half to even), sizes
in [1, max_size - 1], ellipse angles in [0, 180) degrees, and the salient object's ranges (centre in
[R/2 - R/10, R/2 + R/10), radii in [R/4, 3R/8), rectangle sides in [3R/8, 3R/4)).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from fastgan.ops.synth import KIND_CIRCLE, KIND_ELLIPSE, KIND_LINE, KIND_RECT, SHAPE_ROW, TEXTURED, draw32, \
    randint, rng_keys

COMPATS = ("fastgan", "official")
STREAM_SHAPES = 16
STREAM_SALIENT = 17
STREAM_FLAT = 18
SLOTS = 16  # draws reserved per shape
# index -> kind of the official list [line, circle, circle, ellipse, ellipse, rectangle, rectangle]
_KIND_OF_INDEX = (KIND_LINE, KIND_CIRCLE, KIND_CIRCLE, KIND_ELLIPSE, KIND_ELLIPSE, KIND_RECT, KIND_RECT)


def max_sizes(resolution: int, num_shapes: int) -> list[int]:
    """The size cap of each shape index: round(R // 5 * (N - s) / N + 2), rounded like numpy (half to even)."""
    return [int(round(resolution // 5 * (num_shapes - s) / num_shapes + 2)) for s in range(num_shapes)]


def _draws(seed: int, images: Tensor, stream: int, count: int) -> Tensor:
    """(n, count, SLOTS) uint32 draws (as int64) for ``count`` shapes of each image."""
    keys = rng_keys(seed, images, stream)
    j = torch.arange(count * SLOTS, dtype=torch.int64, device=images.device).view(1, count, SLOTS)
    return draw32(keys[:, 0].view(-1, 1, 1), keys[:, 1].view(-1, 1, 1), j)


def _check(resolution: int, compat: str) -> None:
    if compat not in COMPATS:
        raise ValueError(f"compat must be one of {COMPATS}, got {compat!r}")
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8, got {resolution}")


def shape_table(seed: int, images: Tensor, resolution: int, num_shapes: int, compat: str = "fastgan") -> Tensor:
    """float32 (n, num_shapes, 10) rows ``[kind, c0, c1, c2, p0..p5]`` for the image indices ``images``."""
    _check(resolution, compat)
    n = images.shape[0]
    dev = images.device
    out = torch.zeros(n, num_shapes, SHAPE_ROW, dtype=torch.float32, device=dev)
    if num_shapes == 0:
        return out
    u = _draws(seed, images, STREAM_SHAPES, num_shapes)
    r = resolution
    official = compat == "official"
    cap = torch.tensor(max_sizes(r, num_shapes), dtype=torch.int64, device=dev).view(1, num_shapes)
    kind_lut = torch.tensor(_KIND_OF_INDEX, dtype=torch.int64, device=dev)
    kind = kind_lut[randint(u[..., 0], 0, 7)]
    colour = randint(u[..., 1:4], 0, 255 if official else 256)
    size_a = randint(u[..., 8], 1, cap)
    size_b = randint(u[..., 9], 1, cap)
    # line
    if official:
        xa, xb, ya, yb = (randint(u[..., k], 0, 255) for k in (4, 5, 6, 7))
        x0, x1 = torch.minimum(xa, xb), torch.maximum(xa, xb)
        y0, y1 = torch.minimum(ya, yb), torch.maximum(ya, yb)
    else:
        x0, x1, y0, y1 = (randint(u[..., k], 0, r) for k in (4, 5, 6, 7))
    thickness = randint(u[..., 11], 1, cap)
    line = torch.stack([x0, y0, x1, y1, thickness, torch.zeros_like(x0)], dim=-1)
    # circle / ellipse: centre anywhere on the canvas
    cx, cy = randint(u[..., 4], 0, r), randint(u[..., 5], 0, r)
    angle = randint(u[..., 10], 0, 180)
    zero = torch.zeros_like(cx)
    circle = torch.stack([cx, cy, size_a, zero, zero, zero], dim=-1)
    ellipse = torch.stack([cx, cy, size_a, size_b, angle, zero], dim=-1)
    # rectangle: top-left corner, then the two extents
    high = torch.clamp(255 - cap, min=1) if official else r - cap + 1
    rx, ry = randint(u[..., 4], 0, high), randint(u[..., 5], 0, high)
    rect = torch.stack([rx, ry, rx + size_a, ry + size_b, zero, zero], dim=-1)
    k = kind.unsqueeze(-1)
    geom = torch.where(k == KIND_LINE, line, torch.where(k == KIND_CIRCLE, circle,
                                                         torch.where(k == KIND_ELLIPSE, ellipse, rect)))
    out[..., 0] = kind.to(torch.float32)
    out[..., 1:4] = colour.to(torch.float32)
    out[..., 4:] = geom.to(torch.float32)
    return out


def salient_row(seed: int, images: Tensor, resolution: int, compat: str = "fastgan", fill: str = "texture") -> Tensor:
    """float32 (n, 1, 10): the large central object, textured (``fill="texture"``) or in a solid colour."""
    _check(resolution, compat)
    if fill not in ("texture", "solid"):
        raise ValueError(f"fill must be 'texture' or 'solid', got {fill!r}")
    r = resolution
    official = compat == "official"
    u = _draws(seed, images, STREAM_SALIENT, 1)[:, 0]  # (n, SLOTS)
    dev = images.device
    kind_lut = torch.tensor(_KIND_OF_INDEX, dtype=torch.int64, device=dev)
    kind = kind_lut[randint(u[:, 0], 1, 7)]  # never a line
    colour = randint(u[:, 1:4], 0, 255 if official else 256)
    if fill == "texture":
        # the official mask is (drawn colour > 0) per channel; fastgan masks every channel
        colour = (colour > 0).to(torch.int64) if official else torch.ones_like(colour)
        kind = kind + TEXTURED
    lo, hi = r // 2 - r // 10, max(r // 2 + r // 10, r // 2 - r // 10 + 1)
    cx, cy = randint(u[:, 4], lo, hi), randint(u[:, 5], lo, hi)
    rlo, rhi = r // 4, max(3 * r // 8, r // 4 + 1)
    ra, rb = randint(u[:, 8], rlo, rhi), randint(u[:, 9], rlo, rhi)
    zero = torch.zeros_like(cx)
    circle = torch.stack([cx, cy, ra, zero, zero, zero], dim=-1)
    ellipse = torch.stack([cx, cy, ra, rb, zero, zero], dim=-1)  # axis-aligned
    slo, shi = 3 * r // 8, 3 * r // 4
    sa, sb = randint(u[:, 12], slo, shi), randint(u[:, 13], slo, shi)
    if official:  # top-left corner in [R/8, R/2), ignoring the centre
        tx, ty = randint(u[:, 6], r // 8, r // 2), randint(u[:, 7], r // 8, r // 2)
    else:  # centred on the drawn centre
        tx, ty = cx - sa // 2, cy - sb // 2
    rect = torch.stack([tx, ty, tx + sa, ty + sb, zero, zero], dim=-1)
    base = (kind % TEXTURED).unsqueeze(-1)
    geom = torch.where(base == KIND_CIRCLE, circle, torch.where(base == KIND_ELLIPSE, ellipse, rect))
    row = torch.cat([kind.unsqueeze(-1), colour, geom], dim=-1).to(torch.float32)
    return row.unsqueeze(1)


def flat_colours(seed: int, images: Tensor, compat: str = "fastgan", channels: int = 3) -> Tensor:
    """uint8 (n, channels) background colours of the shapes-only variants (grey in official compat)."""
    if compat not in COMPATS:
        raise ValueError(f"compat must be one of {COMPATS}, got {compat!r}")
    u = _draws(seed, images, STREAM_FLAT, 1)[:, 0, :channels]
    if compat == "official":
        return randint(u[:, :1], 0, 255).expand(-1, channels).to(torch.uint8)
    return randint(u, 0, 256).to(torch.uint8)


def describe(table: Tensor) -> dict[str, Sequence]:
    """Counts of each kind in a table (for logs and tests)."""
    k = table[..., 0].to(torch.int64) % TEXTURED
    names = {KIND_LINE: "line", KIND_CIRCLE: "circle", KIND_ELLIPSE: "ellipse", KIND_RECT: "rectangle"}
    return {v: int((k == kk).sum()) for kk, v in names.items()}

"""``PrimitivesPS``: the Primitives-PS synthesizer as a batched, deterministic, device-side pipeline.

Per batch: spectral background (``power_spectrum_noise``, stream 0) or a flat colour; the shape table and the
salient object drawn on the device (``fastgan.synth.params``); a second, independent spectral texture (stream 1)
for the textured salient object; one ``rasterize_shapes`` pass that paints the shapes and composites the texture
inside the salient object (the salient row is the last, topmost row of the table, so the kernels, which walk
shapes from last to first, test it first).
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

import fastgan
from fastgan._checks import require_ints
from fastgan.ops.synth import _check_seed, power_spectrum_noise, rasterize_shapes

from . import params as P

# name -> (background, shapes on, salient object)
VARIANTS = {
    "pinknoise": ("spectrum", False, None),  # spectrum only
    "primitives": ("flat", True, None),  # shapes on a flat background
    "primitives-s": ("flat", True, "solid"),  # shapes + a solid salient object
    "primitives-ps": ("spectrum", True, "texture"),  # all of it: Primitives-PS
}
ALIASES = {"spectrum": "pinknoise", "shapes": "primitives", "shapes+saliency": "primitives-s",
           "all": "primitives-ps", "primitives_ps": "primitives-ps", "primitives_s": "primitives-s"}


def resolve_variant(name: str) -> str:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)} "
                         f"(aliases: {', '.join(ALIASES)})")
    return key


class PrimitivesPS:
    """Primitives-PS images, deterministic per index: image k depends only on (seed, k) and the settings.

    Args:
        resolution: image side R (>= 8).
        num_shapes: shapes per image (the official 100).
        saliency: True or "texture" = a salient object filled with an independent spectral texture (Primitives-PS);
            "solid" = a solid-colour salient object (Primitives-S); False / None = none.
        compat: "fastgan" (constants scale with R, quirks fixed) or "official" (see ``fastgan.synth.params``).
        seed: 0 <= seed < 2**63.
        device: where the images are made.
        impl: kernel choice for the ops (``"auto"``, ``"ref"``, ``"cpp"``, ``"cuda"``, ``"triton"``).
        background: "spectrum" (power-spectrum noise) or "flat" (one colour per image).
        exponent_range: range of the spectral exponents a, b.

    ``PrimitivesPS.variant(name, ...)`` builds the paper's variants: pinknoise (spectrum only), primitives
    (shapes), primitives-s (shapes + saliency) and primitives-ps (all).
    """

    def __init__(self, resolution: int = 256, num_shapes: int = 100, saliency: Union[bool, str, None] = True,
                 compat: str = "fastgan", seed: int = 0, device: Union[str, torch.device] = "cpu",
                 impl: str = "auto", *, background: str = "spectrum",
                 exponent_range: Sequence[float] = (0.5, 3.5)):
        require_ints(resolution=resolution, num_shapes=num_shapes)
        if resolution < 8:
            raise ValueError(f"resolution must be at least 8, got {resolution}")
        if num_shapes < 0:
            raise ValueError(f"num_shapes must be >= 0, got {num_shapes}")
        if compat not in P.COMPATS:
            raise ValueError(f"compat must be one of {P.COMPATS}, got {compat!r}")
        if saliency is True:
            saliency = "texture"
        elif saliency is False:
            saliency = None
        if saliency not in (None, "texture", "solid"):
            raise ValueError(f"saliency must be True/False or 'texture'/'solid', got {saliency!r}")
        if background not in ("spectrum", "flat"):
            raise ValueError(f"background must be 'spectrum' or 'flat', got {background!r}")
        self.resolution = resolution
        self.num_shapes = num_shapes
        self.saliency = saliency
        self.compat = compat
        self.seed = _check_seed(seed)
        self.device = torch.device(device)
        self.impl = impl
        self.background = background
        self.exponent_range = (float(exponent_range[0]), float(exponent_range[1]))
        self.channels = 3
        self._sizes = P.max_sizes(resolution, num_shapes) if num_shapes else []

    @classmethod
    def variant(cls, name: str, resolution: int = 256, *, num_shapes: int = 100, **kwargs) -> "PrimitivesPS":
        background, shapes, saliency = VARIANTS[resolve_variant(name)]
        return cls(resolution, num_shapes if shapes else 0, saliency, background=background, **kwargs)

    @property
    def variant_name(self) -> str:
        for name, (bg, shapes, sal) in VARIANTS.items():
            if bg == self.background and shapes == (self.num_shapes > 0) and sal == self.saliency:
                return name
        return "custom"

    def config(self) -> dict:
        """Every generator parameter (recorded in dataset.json; ``PrimitivesPS(**config)`` rebuilds it)."""
        return {
            "generator": "fastgan.synth.PrimitivesPS",
            "variant": self.variant_name,
            "resolution": self.resolution,
            "num_shapes": self.num_shapes,
            "saliency": self.saliency,
            "background": self.background,
            "compat": self.compat,
            "seed": self.seed,
            "exponent_range": list(self.exponent_range),
            "channels": self.channels,
            "rng": "lowbias32 counter hash v1",
            "fastgan_version": fastgan.__version__,
        }

    def __repr__(self) -> str:
        return (f"PrimitivesPS(variant={self.variant_name!r}, resolution={self.resolution}, "
                f"num_shapes={self.num_shapes}, saliency={self.saliency!r}, compat={self.compat!r}, "
                f"seed={self.seed}, device='{self.device}', impl={self.impl!r})")

    # ---- generation ---------------------------------------------------------------------------------------
    def _indices(self, start: int, count: int) -> Tensor:
        require_ints(start=start, count=count)
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if start < 0 or start + count - 1 > 2**63 - 1:
            raise ValueError(f"image indices must lie in [0, 2**63 - 1], got start={start}, count={count}")
        return torch.arange(start, start + count, dtype=torch.int64, device=self.device)

    def shape_table(self, start: int, count: int) -> Tensor:
        """float32 (count, num_shapes [+ 1 salient], 10) table of images start .. start + count - 1."""
        idx = self._indices(start, count)
        rows = [P.shape_table(self.seed, idx, self.resolution, self.num_shapes, self.compat)]
        if self.saliency is not None:
            rows.append(P.salient_row(self.seed, idx, self.resolution, self.compat, self.saliency))
        return torch.cat(rows, dim=1)

    def _noise(self, start: int, count: int, stream: int) -> Tensor:
        return power_spectrum_noise(count, self.resolution, channels=self.channels,
                                    exponent_range=self.exponent_range, seed=self.seed, start=start, stream=stream,
                                    device=self.device, impl=self.impl)

    def images(self, start: int, count: int) -> Tensor:
        """uint8 (count, 3, R, R) images start .. start + count - 1, on ``self.device``."""
        idx = self._indices(start, count)
        r = self.resolution
        if self.background == "spectrum":
            canvas = self._noise(start, count, stream=0)
        else:
            col = P.flat_colours(self.seed, idx, self.compat, self.channels)
            canvas = col.view(count, self.channels, 1, 1).expand(count, self.channels, r, r).contiguous()
        table = self.shape_table(start, count)
        if table.shape[1] == 0:
            return canvas
        texture = self._noise(start, count, stream=1) if self.saliency == "texture" else None
        return rasterize_shapes(canvas, table, texture=texture, impl=self.impl)

    def batch(self, start: int, count: int, dtype: torch.dtype = torch.float32,
              channels_last: bool = False) -> Tensor:
        """Images start .. start + count - 1 as ``dtype`` in [-1, 1] (x / 127.5 - 1), ready for a training batch."""
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        x = self.images(start, count).to(dtype).div_(127.5).sub_(1.0)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def iter_batches(self, batch_size: int, *, start: int = 0, rank: int = 0, world_size: int = 1,
                     dtype: torch.dtype = torch.float32, channels_last: bool = False,
                     num_batches: Optional[int] = None) -> Iterator[Tensor]:
        """Endless (or ``num_batches``-long) stream of float batches for training, no files written.

        Global batch t covers images start + t * batch_size * world_size + [0, batch_size * world_size); rank r
        takes its r-th slice, so ranks never overlap and the data is the same whatever the number of ranks.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        t = 0
        while num_batches is None or t < num_batches:
            first = start + (t * world_size + rank) * batch_size
            yield self.batch(first, batch_size, dtype=dtype, channels_last=channels_last)
            t += 1

    def __iter__(self) -> Iterator[Tensor]:
        """Single images (uint8, 3 x R x R) in index order from 0, made 64 at a time."""
        k = 0
        while True:
            for img in self.images(k, 64):
                yield img
            k += 64

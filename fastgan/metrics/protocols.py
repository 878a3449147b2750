"""Named preprocessing protocols: how images become the input of a feature extractor (METRICS.md section 5.2).

An FID number is only comparable with numbers computed under the same protocol, so every protocol is named and
recorded with the statistics. Each one is three steps on a batch (N, 3, H, W):

    quantise   float generator output in [-1, 1] -> uint8 (uint8 input is taken as it is)
    resize     to size x size (299 for Inception)
    normalise  to the extractor's input range

| protocol      | quantise (float input)            | resize                                   | normalise        |
|---------------|-----------------------------------|------------------------------------------|------------------|
| nvlabs        | (x * 127.5 + 128).clamp.to(uint8) | TF1 bilinear (src = dst * in / out)      | (x - 128) / 128  |
| tf1           | same                              | same                                     | same             |
| clean         | same                              | bicubic with antialias on float (= PIL)  | same             |
| pytorch-fid   | same                              | torch bilinear, no antialias             | 2 (x / 255) - 1  |
| torchmetrics18| (x + 1) / 2 * 255, truncated      | torch bilinear with antialias            | (x - 128) / 128  |

``nvlabs`` and ``tf1`` differ only in the covariance normalisation the statistics record (1/N vs 1/(N - 1)):
``PROTOCOLS[name].cov_norm``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Protocol:
    name: str
    quantise: str   # "nvlabs" (round half up) or "truncate"
    resize: str     # "tf1-bilinear", "bicubic-aa", "bilinear", "bilinear-aa"
    normalise: str  # "centre128" or "unit"
    cov_norm: str   # "biased" (1/N) or "unbiased" (1/(N - 1))


PROTOCOLS = {
    "nvlabs": Protocol("nvlabs", "nvlabs", "tf1-bilinear", "centre128", "biased"),
    "tf1": Protocol("tf1", "nvlabs", "tf1-bilinear", "centre128", "unbiased"),
    "clean": Protocol("clean", "nvlabs", "bicubic-aa", "centre128", "unbiased"),
    "pytorch-fid": Protocol("pytorch-fid", "nvlabs", "bilinear", "unit", "unbiased"),
    "torchmetrics18": Protocol("torchmetrics18", "truncate", "bilinear-aa", "centre128", "unbiased"),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def quantise(images: Tensor, how: str = "nvlabs") -> Tensor:
    """uint8 images from uint8 (unchanged) or float images in [-1, 1]."""
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or float in [-1, 1], got {images.dtype}")
    if how == "nvlabs":  # stylegan2-ada-pytorch: round half up
        return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    if how == "truncate":  # torchmetrics normalize=True: (x * 255).byte() of x in [0, 1]
        return ((images + 1) * 0.5 * 255).clamp(0, 255).to(torch.uint8)
    raise ValueError(f"unknown quantisation {how!r}")


def tf1_bilinear(x: Tensor, size: int) -> Tensor:
    """TensorFlow 1 ``resize_bilinear(align_corners=False)``: output pixel i samples the input at i * in / out
    (no half-pixel offset), clamped at the last row / column. float32 in, float32 out."""
    n, c, h, w = x.shape

    def axis(n_in: int) -> tuple[Tensor, Tensor, Tensor]:
        src = torch.arange(size, dtype=torch.float64, device=x.device) * (n_in / size)
        lo = src.floor().clamp(max=n_in - 1)
        frac = (src - lo).to(torch.float32)
        lo = lo.to(torch.int64)
        hi = (lo + 1).clamp(max=n_in - 1)
        return lo, hi, frac

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    top = x[:, :, y0, :]
    bot = x[:, :, y1, :]
    rows = top + (bot - top) * fy.view(1, 1, -1, 1)
    left = rows[:, :, :, x0]
    right = rows[:, :, :, x1]
    return left + (right - left) * fx.view(1, 1, 1, -1)


def resize(x: Tensor, size: int, how: str) -> Tensor:
    """Resize float images (N, C, H, W) on the 0-255 scale to size x size."""
    if x.shape[-2:] == (size, size):
        return x
    if how == "tf1-bilinear":
        return tf1_bilinear(x, size)
    if how == "bicubic-aa":  # PIL bicubic on float ('F' mode) within ~1e-3 of 255; no re-quantisation
        return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 255)
    if how == "bilinear":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if how == "bilinear-aa":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    raise ValueError(f"unknown resize {how!r}")


def normalise(x: Tensor, how: str) -> Tensor:
    if how == "centre128":
        return (x - 128.0) / 128.0
    if how == "unit":
        return x / 255.0 * 2.0 - 1.0
    raise ValueError(f"unknown normalisation {how!r}")


def preprocess(images: Tensor, protocol: str, size: int) -> Tensor:
    """float32 (N, 3, size, size) extractor input from uint8 or [-1, 1] float images (N, 1 or 3, H, W)."""
    p = get_protocol(protocol)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    x = quantise(images, p.quantise)
    if x.shape[1] == 1:  # grey images are repeated to 3 channels (NVlabs)
        x = x.expand(-1, 3, -1, -1)
    x = resize(x.to(torch.float32), size, p.resize)
    return normalise(x, p.normalise)

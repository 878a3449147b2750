"""The 2-D distributions of the When/Why/Which playground (METHODS.md §4.2), all at scale 20.

- **Source-I** ``FatCircle(radius=20, sigma=4)``: a uniform angle θ, direction u = (sin θ, cos θ), and the point
  (20 + 4·ε)·u with ε ~ N(0, 1), i.e. Gaussian jitter along the radius only.
- **Source-II** ``GaussianMixture`` with σ = 0.5 on 3 adjacent centres of the 10-gon: the centres at 180°, 144° and
  216° (-144°), which are the first three roots of z^10 = 1 in the order ``numpy.roots`` returns them, as the
  original notebook takes ``centers[:3]``.
- **Target** ``GaussianMixture`` with σ = 0.25 on all 10 centres 20·(cos 36°k, sin 36°k), uniform weights.

Every sampler takes an explicit ``torch.Generator`` so that each model of a batched training draws from its own
stream (results of one model do not depend on which others run beside it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

SCALE = 20.0
NUM_MODES = 10


def _check_count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    return n


def circle_centres(num: int = NUM_MODES, radius: float = SCALE) -> Tensor:
    """float32 (num, 2) centres ``radius * (cos 2πk/num, sin 2πk/num)``, k = 0..num-1."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be an int >= 1, got {num!r}")
    k = torch.arange(num, dtype=torch.float64) * (2.0 * math.pi / num)
    return (radius * torch.stack([torch.cos(k), torch.sin(k)], dim=1)).to(torch.float32)


@dataclass(frozen=True)
class FatCircle:
    """A ring of the given radius with radial Gaussian jitter of std ``sigma``."""

    radius: float
    sigma: float

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """float32 (n, 2) points; draws n uniforms (angles) then n normals (radial offsets) from ``generator``."""
        n = _check_count(n)
        angle = torch.rand(n, generator=generator) * (2.0 * math.pi)
        offset = torch.randn(n, generator=generator)
        direction = torch.stack([torch.sin(angle), torch.cos(angle)], dim=1)
        return (self.radius + self.sigma * offset)[:, None] * direction


@dataclass(frozen=True)
class GaussianMixture:
    """A uniform mixture of isotropic Gaussians of std ``sigma`` at ``centres`` (K, 2)."""

    centres: Tensor
    sigma: float

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """float32 (n, 2) points; draws n mode indices then (n, 2) normals from ``generator``."""
        n = _check_count(n)
        idx = torch.randint(0, self.centres.shape[0], (n,), generator=generator)
        return self.centres[idx] + self.sigma * torch.randn(n, 2, generator=generator)


def source_1() -> FatCircle:
    """Source-I: the fat circle of radius 20 and radial std 4."""
    return FatCircle(radius=SCALE, sigma=4.0)


def source_2() -> GaussianMixture:
    """Source-II: σ = 0.5 Gaussians on the three target centres at 180°, 144° and 216°."""
    return GaussianMixture(centres=circle_centres()[[5, 4, 6]], sigma=0.5)


def target() -> GaussianMixture:
    """The 10-mode target: σ = 0.25 Gaussians on the 10 centres of radius 20."""
    return GaussianMixture(centres=circle_centres(), sigma=0.25)


DISTRIBUTIONS = {"source-1": source_1, "source-2": source_2, "target": target}


def get_distribution(name: str):
    """The distribution called ``name`` (source-1, source-2 or target)."""
    try:
        return DISTRIBUTIONS[name]()
    except KeyError:
        raise ValueError(f"unknown distribution {name!r}; choose from {sorted(DISTRIBUTIONS)}") from None


__all__ = ["SCALE", "NUM_MODES", "circle_centres", "FatCircle", "GaussianMixture", "source_1", "source_2", "target",
           "DISTRIBUTIONS", "get_distribution"]

"""Sampling from trained generators: per-seed image generation and MaGNET (volume-weighted) sampling.

* :func:`generate_images` / :func:`write_images`: one image per seed (naive sampling).
* :func:`jacobian_log_singular_values`: the top log singular values of a generator's projected Jacobian.
* :class:`MagnetPool` / :func:`compute_pool`: candidate latents with their singular values (npz, the released
  MaGNET layout), computed resumably.
* :class:`MagnetSampler`: draws pool entries ∝ vol^ρ (polarity ρ; MaGNET at ρ = 1).
"""
from .generate import generate_images, parse_seeds, write_images
from .magnet import jacobian_log_singular_values
from .pool import MagnetPool, compute_pool, pool_latents
from .sampler import MagnetSampler

__all__ = ["generate_images", "parse_seeds", "write_images", "jacobian_log_singular_values", "MagnetPool",
           "compute_pool", "pool_latents", "MagnetSampler"]

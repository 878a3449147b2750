"""Sampling from trained generators: per-seed image generation (MaGNET samplers build on it)."""
from .generate import generate_images, parse_seeds, write_images

__all__ = ["generate_images", "parse_seeds", "write_images"]

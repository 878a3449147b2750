"""Images from a generator snapshot, one PNG per seed, independent of batch size and device.

Seed ``s`` gives ``z = numpy.random.RandomState(s).randn(z_dim)`` (StyleGAN's convention, so an imported
StyleGAN2-ADA pickle reproduces its own ``generate.py`` latents) and, with ``noise_mode="random"``, per-pixel noise
keyed by ``s``; batches only change how many images run at once.
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .._io import atomic_path
from ..train import rng

PathLike = Union[str, os.PathLike]


def parse_seeds(text: str) -> list[int]:
    """``"0-3,7,10-11"`` -> [0, 1, 2, 3, 7, 10, 11] (ranges inclusive, order kept, duplicates refused)."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"--seeds: {part!r} is not a seed or an A-B range (e.g. 0-63,100)")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise ValueError(f"--seeds: range {part!r} runs backwards")
        if a >= 2 ** 32 or b >= 2 ** 32:
            raise ValueError(f"--seeds: seeds must be below 2**32, got {part!r}")
        out.extend(range(a, b + 1))
    if len(set(out)) != len(out):
        raise ValueError("--seeds lists a seed twice")
    if not out:
        raise ValueError("--seeds is empty")
    return out


def seed_latents(seeds: Sequence[int], z_dim: int) -> Tensor:
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])).float()


def to_uint8(img: Tensor) -> np.ndarray:
    """[-1, 1] float (N, C, H, W) -> uint8 (N, H, W, C)."""
    return ((img.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate_images(G, seeds: Sequence[int], *, truncation_psi: float = 1.0,
                    class_idx: Union[int, Sequence[int], None] = None, noise_mode: str = "const",
                    batch_size: int = 16) -> Iterable[tuple[int, np.ndarray]]:
    """Yield (seed, uint8 HxWxC image) for every seed. ``class_idx``: one class for all seeds, or one per seed."""
    device = next(G.parameters()).device
    seeds = list(seeds)
    classes = None
    if G.c_dim > 0:
        if class_idx is None:
            raise ValueError(f"the generator is conditional ({G.c_dim} classes): pass --class")
        classes = [class_idx] * len(seeds) if isinstance(class_idx, int) else list(class_idx)
        if len(classes) != len(seeds):
            raise ValueError(f"got {len(classes)} classes for {len(seeds)} seeds")
        bad = [c for c in classes if not 0 <= c < G.c_dim]
        if bad:
            raise ValueError(f"--class must be in [0, {G.c_dim}), got {bad[0]}")
    elif class_idx is not None:
        raise ValueError("--class given, but the generator is unconditional")
    for i in range(0, len(seeds), batch_size):
        chunk = seeds[i: i + batch_size]
        z = seed_latents(chunk, G.z_dim).to(device)
        c = None
        if classes is not None:
            c = torch.nn.functional.one_hot(torch.tensor(classes[i: i + batch_size], device=device),
                                            G.c_dim).float()
        keys = rng.sample_keys(rng.derive(0x5EED), torch.tensor(chunk, dtype=torch.int64, device=device))
        img = G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode, noise_keys=keys)
        yield from zip(chunk, to_uint8(img))


def write_images(network: PathLike, seeds: Sequence[int], outdir: PathLike, *, truncation_psi: float = 1.0,
                 class_idx: Optional[int] = None, noise_mode: str = "const", batch_size: int = 16,
                 device: str = "cpu", log=print) -> list[pathlib.Path]:
    """``seed<NNNN>.png`` for every seed in ``outdir`` (each written atomically); returns the paths."""
    from PIL import Image

    from ..nn.checkpoint import load_network

    G = load_network(network, "G_ema", device=device)
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, img in generate_images(G, seeds, truncation_psi=truncation_psi, class_idx=class_idx,
                                     noise_mode=noise_mode, batch_size=batch_size):
        path = outdir / f"seed{seed:04d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(tmp, format="png")
        paths.append(path)
    log(f"wrote {len(paths)} images to {outdir}")
    return paths

"""Images from a generator snapshot, one PNG per seed, independent of batch size and device.

Seed ``s`` gives ``z = numpy.random.RandomState(s).randn(z_dim)`` (StyleGAN's convention, so an imported
StyleGAN2-ADA pickle reproduces its own ``generate.py`` latents) and, with ``noise_mode="random"``, per-pixel noise
keyed by ``s``; batches only change how many images run at once.

:func:`generate_from_latents` renders given latents (e.g. drawn from a MaGNET pool) and
:func:`write_magnet_images` is ``fastgan generate --sampler magnet``: it draws pool entries with
:class:`~fastgan.sampling.MagnetSampler` and writes them under the seeds' file names (see its docstring).
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


@torch.no_grad()
def generate_from_latents(G, latents: Tensor, labels: Optional[Tensor] = None, *, noise_seeds: Sequence[int],
                          truncation_psi: float = 1.0, noise_mode: str = "const",
                          batch_size: int = 16) -> Iterable[np.ndarray]:
    """Yield one uint8 HxWxC image per row of ``latents`` (N, z_dim), with ``labels`` (N, c_dim) for conditional
    generators; ``noise_seeds`` (N) key the per-pixel noise of ``noise_mode="random"`` as seeds do in
    :func:`generate_images`."""
    device = next(G.parameters()).device
    if latents.dim() != 2 or latents.shape[1] != G.z_dim:
        raise ValueError(f"latents must have shape (N, {G.z_dim}), got {tuple(latents.shape)}")
    if len(noise_seeds) != latents.shape[0]:
        raise ValueError(f"got {len(noise_seeds)} noise seeds for {latents.shape[0]} latents")
    if G.c_dim > 0 and (labels is None or tuple(labels.shape) != (latents.shape[0], G.c_dim)):
        raise ValueError(f"the generator is conditional: labels must have shape ({latents.shape[0]}, {G.c_dim}), "
                         f"got {None if labels is None else tuple(labels.shape)}")
    if G.c_dim == 0 and labels is not None:
        raise ValueError("labels given, but the generator is unconditional")
    for i in range(0, latents.shape[0], batch_size):
        z = latents[i: i + batch_size].to(device, torch.float32)
        c = None if labels is None else labels[i: i + batch_size].to(device, torch.float32)
        keys = rng.sample_keys(rng.derive(0x5EED), torch.tensor(list(noise_seeds[i: i + batch_size]),
                                                                dtype=torch.int64, device=device))
        yield from to_uint8(G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode, noise_keys=keys))


def _save_png(path: pathlib.Path, img: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(tmp, format="png")


def write_magnet_images(network: PathLike, pool: PathLike, seeds: Sequence[int], outdir: PathLike, *,
                        rho: float = 1.0, top_k: int = 30, weights: str = "official", mix: float = 1.0,
                        replace: bool = False, class_idx: Optional[int] = None, truncation_psi: float = 1.0,
                        noise_mode: str = "const", batch_size: int = 16, device: str = "cpu",
                        log=print) -> list[pathlib.Path]:
    """MaGNET sampling from a pool: ``len(seeds)`` images drawn with :class:`~fastgan.sampling.MagnetSampler`.

    The draw uses a ``torch.Generator`` seeded with the first seed of ``seeds``; the k-th drawn pool entry is
    written as ``seed<NNNN>.png`` for the k-th seed of the list (the seed only names the file and keys the
    ``noise_mode="random"`` noise; the latent is the pool's). So the same ``seeds`` list (same order) and pool
    give the same files, and ``magnet-samples.json`` in ``outdir`` records, per file, the pool index, whether the
    entry was MaGNET-weighted or naive (``mix``), its class, and the sampler settings.
    """
    import json

    from ..nn.checkpoint import load_network
    from .pool import MagnetPool
    from .sampler import MagnetSampler

    seeds = list(seeds)
    if not seeds:
        raise ValueError("--seeds is empty")
    pool_obj = MagnetPool.load(pool)
    G = load_network(network, "G_ema", device=device)
    if pool_obj.latents.shape[1] != G.z_dim:
        raise ValueError(f"--pool {str(pool)!r} holds {pool_obj.latents.shape[1]}-d latents but the network's z_dim "
                         f"is {G.z_dim}")
    if pool_obj.num_classes != G.c_dim:
        raise ValueError(f"--pool {str(pool)!r} has {pool_obj.num_classes} classes but the network has "
                         f"c_dim={G.c_dim}")
    if class_idx is not None and G.c_dim == 0:
        raise ValueError("--class given, but the generator is unconditional")
    meta = pool_obj.meta
    notes = []
    if meta.get("network_sha256") and pathlib.Path(network).is_file():
        from .._io import sha256_file

        if sha256_file(network).hexdigest() != meta["network_sha256"]:
            notes.append(f"the pool was computed for another network ({meta.get('network')})")
    if "truncation_psi" in meta and float(meta["truncation_psi"]) != float(truncation_psi):
        notes.append(f"the pool's volumes were computed at truncation {meta['truncation_psi']}, images use "
                     f"{truncation_psi}")
    for note in notes:
        log(f"warning: {note}")
    sampler = MagnetSampler(pool_obj, rho=rho, top_k=top_k, weights=weights, mix=mix)
    gen = torch.Generator().manual_seed(seeds[0])
    idx = sampler.sample_indices(len(seeds), replace=replace, generator=gen, class_idx=class_idx)
    groups = [len(seeds)] if (class_idx is not None or not sampler.num_classes) else \
        [len(seeds) // sampler.num_classes + (k < len(seeds) % sampler.num_classes)
         for k in range(sampler.num_classes)]
    kinds = []
    for g in groups:
        m = int(round(sampler.mix * g))
        kinds += ["magnet"] * m + ["naive"] * (g - m)
    latents = pool_obj.latents[idx]
    labels = None if pool_obj.labels is None else pool_obj.labels[idx]
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths, records = [], []
    classes = None if pool_obj.labels is None else pool_obj.classes[idx].tolist()
    for k, img in enumerate(generate_from_latents(G, latents, labels, noise_seeds=seeds,
                                                  truncation_psi=truncation_psi, noise_mode=noise_mode,
                                                  batch_size=batch_size)):
        path = outdir / f"seed{seeds[k]:04d}.png"
        _save_png(path, img)
        paths.append(path)
        records.append({"file": path.name, "seed": seeds[k], "pool_index": int(idx[k]), "kind": kinds[k],
                        "class": None if classes is None else int(classes[k])})
    summary = {"network": str(network), "pool": str(pool), "rho": float(rho), "top_k": top_k, "weights": weights,
               "mix": float(mix), "replace": bool(replace), "class": class_idx, "generator_seed": seeds[0],
               "truncation_psi": float(truncation_psi), "noise_mode": noise_mode, "samples": records}
    with atomic_path(outdir / "magnet-samples.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    log(f"wrote {len(paths)} MaGNET images (rho={rho}, top_k={top_k}, {weights} weights) to {outdir}")
    return paths


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

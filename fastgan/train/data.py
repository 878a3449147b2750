"""Training data streams whose order is a pure function of (seed, global sample position).

Step ``s`` of a run with total batch ``B`` consumes global positions ``[s*B, (s+1)*B)``; process ``r`` of ``W``
takes the ``r``-th contiguous slice and splits it into ``batch_gpu`` rounds. A dataset is visited in a fresh
seeded permutation per epoch (``--mirror`` doubles it with x-flipped copies); Primitives-PS images are
synthesised straight from their position. A resumed run restarts the stream at ``s*B`` and sees exactly the
images an uninterrupted run would have seen, for any number of processes.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from . import rng

SYNTH_PREFIX = "synth:"


class PositionOrder:
    """Maps a global position to a dataset index (and a mirror flag): seeded permutation per epoch."""

    def __init__(self, num_images: int, seed: int, mirror: bool):
        if num_images < 1:
            raise ValueError("the dataset holds no images")
        self.num_images, self.seed, self.mirror = num_images, seed, mirror
        self.size = num_images * (2 if mirror else 1)
        self._epoch, self._perm = -1, None

    def __call__(self, pos: int) -> tuple[int, bool]:
        epoch, off = divmod(pos, self.size)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(rng.derive(self.seed, 0xDA7A, epoch) & ((1 << 63) - 1))
            self._perm, self._epoch = torch.randperm(self.size, generator=g).numpy(), epoch
        j = int(self._perm[off])
        return j % self.num_images, j >= self.num_images


class _RankSampler(torch.utils.data.Sampler):
    """Yields (dataset index, flip) for this process's share of every step, from ``start_step`` on, forever."""

    def __init__(self, order: PositionOrder, batch: int, rank: int, world_size: int, start_step: int):
        self.order, self.batch, self.rank, self.world, self.start = order, batch, rank, world_size, start_step

    def __iter__(self):
        per = self.batch // self.world
        step = self.start
        while True:
            base = step * self.batch + self.rank * per
            for pos in range(base, base + per):
                yield self.order(pos)
            step += 1


class _Images(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, flip = item
        img, label = self.dataset[index]
        img = torch.as_tensor(img)
        if flip:
            img = img.flip(-1)
        return img, torch.as_tensor(label, dtype=torch.float32)


class DatasetStream:
    """Real images from a dataset zip or folder (:class:`fastgan.data.ImageDataset`)."""

    def __init__(self, path: str, *, seed: int, mirror: bool = False, use_labels: bool = False):
        from ..data import ImageDataset

        self.dataset = ImageDataset(path, use_labels=use_labels)
        self.name = self.dataset.name
        self.resolution = self.dataset.resolution
        self.channels = self.dataset.channels
        self.label_dim = self.dataset.label_dim if use_labels else 0
        self.labels = np.asarray(self.dataset.labels, dtype=np.float32) if self.label_dim else None
        self.order = PositionOrder(len(self.dataset), seed, mirror)
        self.mirror = mirror

    def describe(self) -> dict:
        d = dict(self.dataset.describe())
        d.update(kind="dataset", mirror=self.mirror, label_dim=self.label_dim)
        return d

    def batches(self, *, batch: int, batch_gpu: int, rank: int, world_size: int, start_step: int, workers: int,
                device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
        sampler = _RankSampler(self.order, batch, rank, world_size, start_step)
        loader = torch.utils.data.DataLoader(
            _Images(self.dataset), sampler=sampler, batch_size=batch_gpu, num_workers=workers,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=2 if workers > 0 else None,
            generator=torch.Generator().manual_seed(start_step))  # leaves the global RNG alone (exact resume)
        for img, label in loader:
            yield img.to(device, non_blocking=True), label.to(device, non_blocking=True)

    def gen_labels(self, keys: Tensor) -> Optional[Tensor]:
        """Labels for generated samples: the label of a dataset image drawn from each key (None if unconditional)."""
        if self.labels is None:
            return None
        idx = rng.randint(keys, len(self.labels), stream=77).cpu().numpy()
        return torch.from_numpy(self.labels[idx]).to(keys.device)

    def grid_reals(self, count: int) -> Tensor:
        return torch.stack([torch.as_tensor(self.dataset[i % len(self.dataset)][0]) for i in range(count)])


class SynthStream:
    """Primitives-PS images synthesised on the training device: image k is position k (no epochs, no files)."""

    def __init__(self, spec: str, *, resolution: Optional[int], seed: int, device: torch.device):
        from ..synth import PrimitivesPS

        variant = spec[len(SYNTH_PREFIX):] or "primitives-ps"
        if resolution is None:
            raise ValueError(f"--data {spec} synthesises images: give --resolution")
        self.gen = PrimitivesPS.variant(variant, resolution, seed=seed, device=device)
        self.name = variant
        self.resolution = resolution
        self.channels = 3
        self.label_dim = 0
        self.spec = spec

    def describe(self) -> dict:
        return {"kind": "synth", "spec": self.spec, "name": self.name, "resolution": self.resolution,
                "channels": 3, "label_dim": 0, "generator": self.gen.config}

    def batches(self, *, batch: int, batch_gpu: int, rank: int, world_size: int, start_step: int, workers: int,
                device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
        per = batch // world_size
        step = start_step
        empty = torch.zeros(batch_gpu, 0, device=device)
        while True:
            base = step * batch + rank * per
            for r in range(per // batch_gpu):
                img = self.gen.images(base + r * batch_gpu, batch_gpu)
                yield img.to(device), empty
            step += 1

    def gen_labels(self, keys: Tensor) -> None:
        return None

    def grid_reals(self, count: int) -> Tensor:
        return self.gen.images(0, count).cpu()


def open_stream(data: str, *, resolution: Optional[int], seed: int, mirror: bool, cond: bool,
                device: torch.device):
    """The training stream named by ``--data``: a dataset path, or ``synth:<variant>`` for Primitives-PS."""
    if not data:
        raise ValueError("--data is required: a dataset zip or folder, or synth:primitives-ps")
    if data.startswith(SYNTH_PREFIX):
        if cond:
            raise ValueError("--cond needs labelled data; synthetic Primitives-PS data has no labels")
        return SynthStream(data, resolution=resolution, seed=seed, device=device)
    return DatasetStream(data, seed=seed, mirror=mirror, use_labels=cond)

"""Inputs shared by the transfer tests (single process, command line, two processes): a small 16 px target
dataset and a random-weight source snapshot of the tiny preset. Each test file draws its own seeds."""
from __future__ import annotations

import pathlib
from typing import Optional

import numpy as np
import torch

from fastgan.nn import save_snapshot
from fastgan.train.loop import _build
from fastgan.train.options import TrainOptions, resolve


def target_zip(tmp_path_factory, name: str, *, seed: int, count: int, base: Optional[int] = None,
               noise: int = 256) -> pathlib.Path:
    """A dataset zip ``name`` of ``count`` 16 x 16 RGB images from ``RandomState(seed)``: uniform noise in
    [0, noise), added to one colour channel set to ``base`` (cycling through the channels) when ``base`` is given."""
    from PIL import Image

    from fastgan.data import make_dataset

    src = tmp_path_factory.mktemp(f"{pathlib.Path(name).stem}-src")
    r = np.random.RandomState(seed)
    for i in range(count):
        if base is None:
            img = r.randint(0, noise, size=(16, 16, 3)).astype(np.uint8)
        else:
            img = np.zeros((16, 16, 3), np.uint8)
            img[..., i % 3] = base
            img += r.randint(0, noise, size=img.shape).astype(np.uint8)
        Image.fromarray(img).save(src / f"im{i:02d}.png")
    dest = tmp_path_factory.mktemp(f"{pathlib.Path(name).stem}-data") / name
    make_dataset(src, dest, log=lambda s: None, progress=False)
    return dest


def source_snapshot(data: pathlib.Path, tmp_path_factory, *, seed: int) -> pathlib.Path:
    """A snapshot of the tiny preset's 16 px G (also as G_ema) and D with random weights from ``seed``."""
    o = resolve(TrainOptions(data=str(data), outdir="x", cfg="tiny", batch=8), data_resolution=16, world_size=1)
    torch.manual_seed(seed)
    G, D = _build(o, 3, 0)
    path = tmp_path_factory.mktemp("source") / "network-snapshot-src.pt"
    save_snapshot(path, {"G": G, "G_ema": G, "D": D})
    return path


def assert_bit_equal(a, b, path: str = "", skip: tuple = ()) -> None:
    """Bit-exact comparison of nested dicts / lists / tensors / scalars (NaN equals NaN), leaving out the dict keys
    in ``skip`` at every level; the message names the path of the first difference."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            if k not in skip:
                assert_bit_equal(a[k], b[k], f"{path}/{k}", skip)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bit_equal(x, y, f"{path}[{i}]", skip)
    elif torch.is_tensor(a):
        assert torch.equal(a, b), f"{path}: max diff {(a.double() - b.double()).abs().max()}"
    else:
        assert a == b or (a != a and b != b), f"{path}: {a!r} != {b!r}"

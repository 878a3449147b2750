"""Write Primitives-PS datasets: the zip layout training reads (StyleGAN2-ADA's), atomically, in shards.

Layout: ``NNNNN/imgNNNNNNNN.png`` (folder = global index // 1000) plus ``dataset.json`` with ``"labels": null``
and a ``"fastgan"`` entry recording every generator parameter, the index range and the shard. Images are named
by their global index and made in batches aligned to global indices, so the union of the shards of a K-way
split is exactly the unsharded set (same names, same bytes), and the same arguments give a byte-identical zip.

The zip is written under a temporary name in the destination folder and renamed into place at the end; an
existing destination is refused unless ``overwrite=True``; on any error (or Ctrl-C) the temporary file is removed.
"""
from __future__ import annotations

import json
import os
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Union

from .._checks import require_ints
from .._io import atomic_path
from ..data.layout import FORMAT_VERSION, check_dest, encode_png, image_name, write_entry
from .pipeline import PrimitivesPS

__all__ = ["FORMAT_VERSION", "image_name", "shard_range", "write_dataset"]


def shard_range(num: int, shards: int, shard: int) -> tuple[int, int]:
    """[lo, hi) of global indices that shard ``shard`` of ``shards`` holds."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    if not 0 <= shard < shards:
        raise ValueError(f"shard must be in [0, {shards}), got {shard}")
    lo, hi = num * shard // shards, num * (shard + 1) // shards
    if hi <= lo:
        raise ValueError(f"shard {shard} of {shards} would hold no images (num={num}); use fewer shards")
    return lo, hi


def write_dataset(dest: Union[str, os.PathLike], gen: PrimitivesPS, num: int, *, shards: int = 1, shard: int = 0,
                  batch_size: int = 64, overwrite: bool = False, compress_level: int = 1,
                  progress: Optional[bool] = None, workers: Optional[int] = None,
                  log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Write images of ``gen`` (shard ``shard`` of ``shards`` of ``num`` images) to the zip ``dest``.

    Returns the ``dataset.json`` content. ``progress`` None = a bar only when stderr is a terminal.
    """
    require_ints(num=num, shards=shards, shard=shard, batch_size=batch_size)
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be in 0..9, got {compress_level}")
    lo, hi = shard_range(num, shards, shard)
    dest = Path(dest)
    check_dest(dest, overwrite)
    meta = {
        "labels": None,
        "fastgan": {
            "format_version": FORMAT_VERSION,
            "kind": "primitives",
            "num_images": num,
            "shards": shards,
            "shard": shard,
            "index_range": [lo, hi],
            "image_names": "NNNNN/imgNNNNNNNN.png, N = global index",
            "batch_alignment": batch_size,
            "device_type": gen.device.type,
            "impl": gen.impl,
            "png_compress_level": compress_level,
            "generator": gen.config(),
        },
    }
    from tqdm import tqdm

    bar = tqdm(total=hi - lo, unit="img", desc=dest.name, file=sys.stderr,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    pool = ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1))
    try:
        with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED,
                                                       allowZip64=True) as zf:
            first = lo - lo % batch_size  # batches aligned to global indices: shard-independent bytes
            for b0 in range(first, hi, batch_size):
                imgs = gen.images(b0, batch_size).permute(0, 2, 3, 1).contiguous().cpu().numpy()
                keep = [k for k in range(b0, b0 + batch_size) if lo <= k < hi]
                pngs = pool.map(lambda k: encode_png(imgs[k - b0], compress_level), keep)
                for k, data in zip(keep, pngs):
                    write_entry(zf, image_name(k), data)
                bar.update(len(keep))
            write_entry(zf, "dataset.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    finally:
        bar.close()
        pool.shutdown(wait=True)
    log(f"wrote {hi - lo} images ({gen.variant_name}, {gen.resolution}px, indices {lo}..{hi - 1}) to {dest}")
    return meta

"""Reference statistics of a dataset (``fastgan ref``): images -> extractor -> FeatureStats npz, cached by content.

The statistics file records the sha256 of the dataset's content, the extractor's description (name, dimension,
input size, weights hash) and the protocol. Asking again for the same dataset, extractor and protocol loads the file
instead of recomputing it; a changed dataset (same path, other bytes) is recomputed.

Datasets are zips (the ``fastgan data`` layout, or any zip of images) or folders of images, read through
``fastgan.data.layout`` (the same listing and content hash as training); images are read in sorted name order,
converted to RGB.
"""
from __future__ import annotations

import io
import os
import pathlib
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch

from ..data.layout import IMAGE_SUFFIXES, ImageSource, check_data, content_sha256
from .extractors import FeatureExtractor, get_extractor
from .protocols import get_protocol
from .stats import FeatureStats

__all__ = ["IMAGE_SUFFIXES", "content_sha256", "count_images", "iter_images", "compute_reference"]


def count_images(data: Union[str, os.PathLike]) -> int:
    """Number of image files in a dataset zip or folder."""
    return len(ImageSource(data))


def iter_images(data: Union[str, os.PathLike], batch_size: int = 64) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, H, W) batches of a dataset's images in sorted name order (all images must share one size)."""
    from PIL import Image

    src = ImageSource(data)
    size = None
    buf = []
    try:
        for name in src.names:
            with Image.open(io.BytesIO(src.read(name))) as im:
                arr = np.asarray(im.convert("RGB"))
            if size is None:
                size = arr.shape
            elif arr.shape != size:
                raise ValueError(f"{src.where(name)}: image of shape {arr.shape[:2]} in a dataset of {size[:2]} images")
            buf.append(arr)
            if len(buf) == batch_size:
                yield torch.from_numpy(np.stack(buf)).permute(0, 3, 1, 2).contiguous()
                buf = []
        if buf:
            yield torch.from_numpy(np.stack(buf)).permute(0, 3, 1, 2).contiguous()
    finally:
        src.close()


def compute_reference(data: Union[str, os.PathLike], out: Union[str, os.PathLike], *,
                      extractor: Union[str, FeatureExtractor] = "random-conv", extractor_kwargs: Optional[dict] = None,
                      protocol: Optional[str] = None, batch_size: int = 64, device: Union[str, torch.device] = "cpu",
                      keep_features: Optional[bool] = None, force: bool = False,
                      log: Callable[[str], None] = print) -> tuple[FeatureStats, bool]:
    """Statistics of ``data`` written to ``out`` (npz); returns (stats, computed). ``computed`` is False when ``out``
    already held the statistics of the same content, extractor and protocol (then nothing is written).

    ``keep_features=None`` keeps the features when there are no more than twice as many images as feature
    dimensions (the few-shot case, where FID needs them)."""
    data_path = check_data(data)
    out = pathlib.Path(out)
    ext = extractor if isinstance(extractor, FeatureExtractor) else get_extractor(
        extractor, device=device, **(extractor_kwargs or {}))
    protocol = protocol or ext.protocol
    get_protocol(protocol)
    want = dict(ext.describe(), protocol=protocol, content_sha256=content_sha256(data_path))
    if out.exists() and not force:
        try:
            old = FeatureStats.load(out)
        except (ValueError, OSError):
            old = None
        if old is not None and all(old.metadata.get(k) == v for k, v in want.items()):
            log(f"{out}: up to date ({old.n} images, {want['extractor']}, {protocol})")
            return old, False
    n = count_images(data_path)
    if n == 0:
        raise ValueError(f"dataset {data_path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    keep = (n <= 2 * ext.dim) if keep_features is None else bool(keep_features)
    stats = FeatureStats(keep_features=keep)
    for batch in iter_images(data_path, batch_size):
        stats.update(ext(batch, protocol=protocol))
    factory = None if isinstance(extractor, FeatureExtractor) else extractor
    stats.save(out, **want, dataset=str(data_path), cov_norm=get_protocol(protocol).cov_norm,
               extractor_factory=factory, extractor_kwargs=dict(extractor_kwargs or {}))
    log(f"{out}: {stats.n} images, {want['extractor']} ({ext.dim}-d), protocol {protocol}"
        + (", features kept" if keep else ""))
    return stats, True

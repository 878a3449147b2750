"""``ImageDataset``: the training loader's view of a dataset zip or an image folder."""
from __future__ import annotations

import io
import os
import pathlib
from typing import Optional, Union

import numpy as np
import torch

from .._checks import require_ints
from .layout import ImageSource, content_sha256, describe_error, label_array, orientation, probe, shape_problem


def _make_hint(path: pathlib.Path, extra: str = "") -> str:
    return (f"convert it with `fastgan data make --source {path} --dest {path.stem or 'dataset'}-RES.zip "
            f"--resolution RES --transform center-crop{extra}` (or --transform pad)")


class ImageDataset(torch.utils.data.Dataset):
    """Images and labels of a dataset zip (StyleGAN2-ADA layout, any image names) or an image folder (recursive).

    Images are read in sorted name order. ``ds[i]`` is (uint8 (C, H, W), float32 (label_dim,)). Every image must be
    square, a power of two >= 4 pixels, 8-bit L or RGB, and all the same size: a folder is checked image by image
    (headers only) when the dataset is made, a zip through its first image, and each image again when it is read.
    Labels come from ``dataset.json``: integer classes become one-hot vectors, numeric vectors are kept; without
    labels (or with ``use_labels=False``) ``labels`` is (N, 0). ``max_images`` keeps the first N images.
    Picklable, and safe in DataLoader worker processes (each opens its own zip handle).
    """

    def __init__(self, path: Union[str, os.PathLike], *, resolution: Optional[int] = None, use_labels: bool = True,
                 max_images: Optional[int] = None):
        if max_images is not None:
            require_ints(max_images=max_images)
            if max_images < 1:
                raise ValueError(f"max_images must be at least 1, got {max_images}")
        self._source = ImageSource(path)
        self.path = self._source.path
        self.name = self.path.stem if self._source.is_zip else self.path.name
        names = self._source.names
        if not names:
            raise ValueError(f"dataset {self.path} holds no images; make one with `fastgan data make`")
        all_labels = self._read_labels(names) if use_labels else None
        if max_images is not None:
            names = names[:max_images]
        self._names = names
        self._check_shapes()
        if resolution is not None and resolution != self.resolution:
            raise ValueError(f"dataset {self.path} holds {self.resolution}x{self.resolution} images, not "
                             f"{resolution}x{resolution}; {_make_hint(self.path)}")
        if all_labels is None:
            self.labels = np.zeros((len(names), 0), np.float32)
        else:
            self.labels = np.ascontiguousarray(all_labels[:len(names)])
        self._sha256: Optional[str] = None

    def _read_labels(self, names: list[str]) -> Optional[np.ndarray]:
        table = self._source.labels()
        if table is None:
            return None
        missing = [n for n in names if n not in table]
        if missing:
            raise ValueError(f"{self._source.where('dataset.json')}: {len(missing)} of {len(names)} images have no "
                             f"label (e.g. {missing[0]!r}); pass use_labels=False, or remake the dataset with "
                             "`fastgan data make --labels drop`")
        labels, _ = label_array([table[n] for n in names], where=self._source.where("dataset.json"))
        return labels

    def _check_shapes(self) -> None:
        src = self._source
        if src.is_zip:
            headers = [(self._names[0], probe(src, self._names[0]))]
        else:
            headers = []
            for n in self._names:
                try:
                    headers.append((n, probe(src, n)))
                except ValueError as exc:
                    raise ValueError(f"{exc}; {_make_hint(self.path, ' --on-error skip')}") from None
        first, (w0, h0, m0) = headers[0]
        for name, (w, h, m) in headers:
            problem = shape_problem(w, h, m)
            if problem is None and (w, h, m) != (w0, h0, m0):
                problem = f"{w}x{h} {m}, while {first} is {w0}x{h0} {m0}"
            if problem is not None:
                raise ValueError(f"{src.where(name)}: {problem}; dataset {self.path} is not ready for training: "
                                 f"{_make_hint(self.path)}")
        self.resolution = w0
        self.channels = 1 if m0 == "L" else 3
        self._mode = m0

    @property
    def num_images(self) -> int:
        return len(self._names)

    @property
    def image_names(self) -> list[str]:
        return list(self._names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.resolution, self.resolution)

    @property
    def label_dim(self) -> int:
        return int(self.labels.shape[1])

    @property
    def has_labels(self) -> bool:
        return self.label_dim > 0

    @property
    def content_sha256(self) -> str:
        """sha256 of the dataset's content (computed on first use)."""
        if self._sha256 is None:
            self._sha256 = content_sha256(self.path)
        return self._sha256

    def __len__(self) -> int:
        return len(self._names)

    def _decode(self, name: str) -> np.ndarray:
        from PIL import Image, ImageOps

        try:
            with Image.open(io.BytesIO(self._source.read(name))) as im:
                if im.mode != self._mode or im.size != (self.resolution, self.resolution):
                    problem = f"{im.size[0]}x{im.size[1]} {im.mode}"
                else:
                    problem = None
                    if orientation(im) != 1:
                        im = ImageOps.exif_transpose(im)
                    arr = np.asarray(im)
        except Exception as exc:
            raise ValueError(f"{self._source.where(name)}: {describe_error(exc)}; "
                             f"{_make_hint(self.path, ' --on-error skip')}") from None
        if problem is not None:
            raise ValueError(f"{self._source.where(name)}: image is {problem}, while the dataset is "
                             f"{self.resolution}x{self.resolution} {self._mode}; {_make_hint(self.path)}")
        return arr

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        name = self._names[index]
        arr = self._decode(name)
        chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return torch.from_numpy(np.array(chw, order="C")), torch.from_numpy(self.labels[index].copy())

    def describe(self, sha256: bool = False) -> dict:
        """The dataset as recorded in training_options.json (``sha256`` computes the content hash)."""
        return {
            "path": str(self.path),
            "name": self.name,
            "num_images": self.num_images,
            "resolution": self.resolution,
            "channels": self.channels,
            "label_dim": self.label_dim,
            "sha256": self.content_sha256 if sha256 else self._sha256,
        }

    def close(self) -> None:
        self._source.close()

    def __repr__(self) -> str:
        return (f"ImageDataset({str(self.path)!r}, num_images={self.num_images}, "
                f"shape={self.image_shape}, label_dim={self.label_dim})")

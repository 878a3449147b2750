"""Small real image sets that ship inside installed packages, written as fastgan dataset zips.

The demo's transfer target must be real photographs available with no network. scikit-image ships
``lfw_subset.npy`` inside its wheel: 100 face crops from Labeled Faces in the Wild followed by 100 non-face
crops, each 25 x 25 gray levels in [0, 1]. ``lfw-faces`` is the 100 faces, upsampled to the requested power-of-two
side (Lanczos) and stored as RGB so that they match generators pretrained on colour data.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Callable, Union

import numpy as np

PathLike = Union[str, os.PathLike]

PACKAGED_SETS = {
    "lfw-faces": "100 face crops (25x25 gray) from Labeled Faces in the Wild, shipped in scikit-image's wheel",
}


def lfw_faces() -> np.ndarray:
    """(100, 25, 25) uint8: the face half of scikit-image's ``lfw_subset``; needs scikit-image (no network)."""
    try:
        from skimage import data as skdata
    except ImportError as exc:
        raise ImportError("the 'lfw-faces' image set comes from scikit-image, which is not installed; "
                          "install it with: pip install 'fastgan[demo]'  (or pip install scikit-image)") from exc
    arr = np.asarray(skdata.lfw_subset())
    if arr.ndim != 3 or arr.shape[0] < 100:
        raise RuntimeError(f"scikit-image's lfw_subset has an unexpected shape {arr.shape}; expected (200, 25, 25)")
    return np.clip(np.rint(arr[:100] * 255.0), 0, 255).astype(np.uint8)


def write_packaged_set(name: str, dest: PathLike, *, resolution: int = 32, overwrite: bool = False,
                       log: Callable[[str], None] = print) -> dict:
    """Write the packaged image set ``name`` as a dataset zip at ``dest`` (R x R RGB, ``fastgan data make`` layout).

    Returns the summary of :func:`fastgan.data.make_dataset`. The same inputs give a byte-identical zip.
    """
    from PIL import Image

    from ..data import make_dataset

    if name not in PACKAGED_SETS:
        raise ValueError(f"unknown packaged image set {name!r}; choose from {', '.join(sorted(PACKAGED_SETS))}")
    images = lfw_faces()
    with tempfile.TemporaryDirectory(prefix="fastgan-packaged-") as tmp:
        folder = pathlib.Path(tmp) / name  # the dataset records the folder's name: keep it fixed
        folder.mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img, "L").save(folder / f"{i:04d}.png")
        return make_dataset(folder, dest, resolution=resolution, transform="resize", channels="rgb",
                            overwrite=overwrite, progress=False, log=log)

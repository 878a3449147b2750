"""The dataset zip format and reading of image sources (zip or folder), shared by writers, loaders and metrics.

A dataset zip (StyleGAN2-ADA layout) holds images named ``NNNNN/imgNNNNNNNN.png`` (folder = index // 1000) and a
``dataset.json`` with ``{"labels": [[name, label], ...] or null}``; fastgan adds a ``"fastgan"`` record of how
the zip was made. Entries carry a fixed timestamp so the same content gives the same bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import zipfile
from typing import IO, Optional, Union

import numpy as np

from .._io import sha256_file

FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
META_NAME = "dataset.json"
EXIF_ORIENTATION = 0x0112


def is_image(name: str) -> bool:
    """True for an image file name (by suffix) that is not hidden and not inside a hidden folder."""
    parts = pathlib.PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and name.lower().endswith(IMAGE_SUFFIXES) and not any(p.startswith(".") for p in parts)


def image_name(index: int) -> str:
    """Name of image ``index`` inside a dataset zip."""
    return f"{index // 1000:05d}/img{index:08d}.png"


def encode_png(img, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 (H, W) / (H, W, C) array or a PIL image."""
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="png", compress_level=compress_level)
    return buf.getvalue()


def write_entry(zf: zipfile.ZipFile, name: str, data: Union[bytes, str]) -> None:
    """Add ``name`` to ``zf`` with the fixed timestamp and 0644 permissions."""
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def check_dest(dest: pathlib.Path, overwrite: bool) -> None:
    """Refuse a --dest that is not a writable .zip path, or that exists without ``overwrite``."""
    if dest.suffix.lower() != ".zip":
        raise ValueError(f"--dest must name a .zip file, got {str(dest)!r}")
    if dest.exists() and dest.is_dir():
        raise ValueError(f"--dest {str(dest)!r} is a directory; give a .zip file name")
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{str(dest)!r} already exists; pass --overwrite (overwrite=True) to replace it")
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create the folder {str(parent)!r} for --dest: {exc.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to the folder {str(parent)!r} of --dest")


def check_data(data: Union[str, os.PathLike]) -> pathlib.Path:
    """``data`` as a Path, which must be an existing zip file or folder."""
    path = pathlib.Path(data)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist")
    if path.is_file() and not zipfile.is_zipfile(path):
        raise ValueError(f"dataset {path} is neither a zip file nor a folder")
    return path


class ImageSource:
    """The images of a zip or a folder (recursive), by relative ``/``-separated name in sorted order.

    Picklable: an open zip is not carried over, and each process (DataLoader worker) opens its own on first read.
    """

    def __init__(self, data: Union[str, os.PathLike]):
        self.path = check_data(data)
        self.is_zip = self.path.is_file()
        self._zf: Optional[zipfile.ZipFile] = None
        self._pid: Optional[int] = None
        if self.is_zip:
            names = [n for n in self._zip().namelist() if not n.endswith("/") and is_image(n)]
        else:
            names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*")
                     if p.is_file() and is_image(p.relative_to(self.path).as_posix())]
        self.names: list[str] = sorted(names)

    def _zip(self) -> zipfile.ZipFile:
        if self._zf is None or self._pid != os.getpid():
            self._zf = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._zf

    def where(self, name: str) -> str:
        """How to name the file ``name`` in a message."""
        return f"{self.path}:{name}" if self.is_zip else str(self.path / name)

    def open(self, name: str) -> IO[bytes]:
        return self._zip().open(name) if self.is_zip else open(self.path / name, "rb")

    def read(self, name: str) -> bytes:
        if self.is_zip:
            return self._zip().read(name)
        return (self.path / name).read_bytes()

    def metadata(self) -> Optional[dict]:
        """The parsed root ``dataset.json``, or None when there is none."""
        if self.is_zip:
            if META_NAME not in self._zip().namelist():
                return None
            raw = self._zip().read(META_NAME)
        else:
            f = self.path / META_NAME
            if not f.is_file():
                return None
            raw = f.read_bytes()
        try:
            meta = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.where(META_NAME)} is not valid JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{self.where(META_NAME)} must hold a JSON object")
        return meta

    def labels(self) -> Optional[dict[str, object]]:
        """{image name: label} from ``dataset.json``'s ``"labels"``, or None when there are no labels."""
        meta = self.metadata()
        entries = None if meta is None else meta.get("labels")
        if entries is None:
            return None
        if not isinstance(entries, list) or not all(isinstance(e, (list, tuple)) and len(e) == 2
                                                    and isinstance(e[0], str) for e in entries):
            raise ValueError(f"{self.where(META_NAME)}: \"labels\" must be a list of [image name, label] pairs or null")
        return {name.replace("\\", "/"): label for name, label in entries}

    def close(self) -> None:
        if self._zf is not None and self._pid == os.getpid():
            self._zf.close()
        self._zf = None

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _zf=None, _pid=None)

    def __len__(self) -> int:
        return len(self.names)


def content_sha256(data: Union[str, os.PathLike]) -> str:
    """sha256 of a dataset zip's bytes, or of a folder's sorted (relative name, image bytes) pairs followed by its
    root ``dataset.json`` when there is one."""
    path = check_data(data)
    if path.is_file():
        return sha256_file(path).hexdigest()
    h = hashlib.sha256()
    files = ImageSource(path).names + ([META_NAME] if (path / META_NAME).is_file() else [])
    for name in files:
        h.update(name.encode() + b"\0")
        sha256_file(path / name, h)
    return h.hexdigest()


def label_array(values: list, where: str = "labels") -> tuple[np.ndarray, str]:
    """float32 (N, D) labels and their kind: integer class labels become one-hot (D = max + 1, as StyleGAN2-ADA),
    numeric vectors (or numbers) are kept as they are."""
    if not values:
        return np.zeros((0, 0), np.float32), "none"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        ints = np.asarray(values, dtype=np.int64)
        if ints.min() < 0:
            raise ValueError(f"{where}: class labels must be >= 0, found {int(ints.min())}")
        onehot = np.zeros((len(ints), int(ints.max()) + 1), np.float32)
        onehot[np.arange(len(ints)), ints] = 1
        return onehot, "class"
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: labels must be all class integers or all numeric vectors of one length") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{where}: labels must be all class integers or all numeric vectors of one length")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: labels hold NaN or infinite values")
    return arr.astype(np.float32), "vector"


def orientation(im) -> int:
    """EXIF orientation (1..8) of an opened PIL image, read from its header only."""
    from PIL import Image

    try:
        if im.format == "PNG":  # PIL's PNG getexif() would decode the whole image
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        value = int(exif.get(EXIF_ORIENTATION, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


class BadImage(ValueError):
    """A file that is not a readable image; ``reason`` says why without naming the file."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.reason = reason


def probe(source: ImageSource, name: str) -> tuple[int, int, str]:
    """(width, height, mode) of an image from its header, width and height as displayed (EXIF orientation applied).
    Raises BadImage (a ValueError naming the file) when it is not a readable image."""
    from PIL import Image

    try:
        with source.open(name) as fh, Image.open(fh) as im:
            w, h = im.size
            mode = im.mode
            if orientation(im) >= 5:
                w, h = h, w
    except Exception as exc:
        raise BadImage(source.where(name), describe_error(exc)) from None
    return w, h, mode


def describe_error(exc: BaseException) -> str:
    """A short reason for an image that could not be read."""
    from PIL import Image

    if isinstance(exc, Image.UnidentifiedImageError):
        return "not a readable image (empty, corrupt, or not an image file)"
    text = str(exc) or type(exc).__name__
    return f"cannot decode the image ({text})"


TRAINABLE_MODES = {"L": 1, "RGB": 3}


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def shape_problem(width: int, height: int, mode: str) -> Optional[str]:
    """Why an image of this size and mode cannot be a training image (None when it can)."""
    if mode not in TRAINABLE_MODES:
        return f"mode {mode} (training reads 8-bit L or RGB images)"
    if width != height:
        return f"size {width}x{height} is not square"
    if not is_power_of_two(width) or width < 4:
        return f"size {width}x{height} is not a power of two >= 4"
    return None

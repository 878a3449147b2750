"""``make_dataset``: turn an image folder or zip into a clean dataset zip (``fastgan data make``).

Every output image is R x R, 8-bit, all RGB or all gray, stored as ``NNNNN/imgNNNNNNNN.png`` in sorted source order,
with ``dataset.json`` holding the labels and a record of the conversion. Source images in any common mode are
accepted: EXIF orientation is applied, transparency is composited over black, 16-bit values are scaled to 8 bits,
palette, CMYK and other colour modes are converted. Unreadable files stop the conversion (``on_error="fail"``) or
are left out and listed in ``<dest stem>-skipped.txt`` (``on_error="skip"``). The zip is written under a temporary
name and renamed at the end, so a failed conversion leaves an existing destination as it was; the same inputs give
a byte-identical zip.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Callable, Iterator, Optional, Union

import numpy as np

from .._checks import require_ints
from .._io import atomic_path
from .layout import (FORMAT_VERSION, IMAGE_SUFFIXES, META_NAME, BadImage, ImageSource, check_dest, describe_error,
                     encode_png, image_name, is_power_of_two, label_array, orientation, probe, write_entry)

TRANSFORMS = ("center-crop", "pad", "resize")
CHANNELS = ("rgb", "gray", "auto")
ON_ERROR = ("fail", "skip")
LABELS = ("keep", "drop")
ALPHA_POLICY = "composited over black"
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
SUPPORTED_MODES = GRAY_MODES | ALPHA_MODES | frozenset({"P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})


def parse_resolution(value: Union[int, str, None]) -> Optional[int]:
    """``value`` (R, "R" or "RxR") as an int that is a power of two >= 4; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        w, sep, h = value.strip().lower().partition("x")
        try:
            w, h = int(w), int(h) if sep else int(w)
        except ValueError:
            raise ValueError(f"--resolution takes R or RxR (e.g. 256 or 256x256), got {value!r}") from None
        if w != h:
            raise ValueError(f"--resolution must be square, got {value!r}; --transform center-crop or pad makes "
                             "non-square images square")
        value = w
    require_ints(resolution=value)
    if value < 4 or not is_power_of_two(value):
        raise ValueError(f"--resolution must be a power of two >= 4 (e.g. 256), got {value}")
    return value


def _choice(flag: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{flag} must be one of {', '.join(str(a) for a in allowed)}, got {value!r}")


def to_8bit(im, target: str):
    """``im`` (any supported mode) as an 8-bit ``target`` ("RGB" or "L") image."""
    from PIL import Image

    mode = im.mode
    if mode in SIXTEEN_BIT_MODES:
        arr = np.asarray(im).astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"{mode} pixel values outside 0..65535")
        im = Image.fromarray(((arr * 255 + 32767) // 65535).astype(np.uint8), "L")
    elif mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode not in SUPPORTED_MODES:
        raise ValueError(f"mode {mode} is not supported")
    if im.mode in ALPHA_MODES:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    return im if im.mode == target else im.convert(target)


def fit(im, size: int, transform: Optional[str]):
    """``im`` made square by ``transform`` (center-crop, pad with black, or plain resize) and resized to ``size``
    with Lanczos resampling."""
    from PIL import Image

    w, h = im.size
    if transform == "center-crop" and w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
    elif transform == "pad" and w != h:
        s = max(w, h)
        canvas = Image.new(im.mode, (s, s), 0)
        canvas.paste(im, ((s - w) // 2, (s - h) // 2))
        im = canvas
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.LANCZOS)
    return im


def _has_alpha(im) -> bool:
    return im.mode in ALPHA_MODES or (im.mode == "P" and "transparency" in im.info)


class _Conversion:
    """One make_dataset run: header checks, image conversion and the skipped-file record."""

    def __init__(self, src: ImageSource, size: Optional[int], transform: Optional[str], on_error: str,
                 compress_level: int):
        self.src, self.size, self.transform = src, size, transform
        self.on_error, self.compress_level = on_error, compress_level
        self.first: Optional[str] = None
        self.target = "RGB"
        self.skipped: list[tuple[str, str]] = []

    def bad(self, name: str, reason: str) -> None:
        """Raise for an unreadable file (on_error="fail") or note it as skipped."""
        if self.on_error == "fail":
            raise ValueError(f"{self.src.where(name)}: {reason}; fix or remove the file, or pass --on-error skip")
        self.skipped.append((name, reason))

    def check(self, name: str) -> Optional[tuple[str, int, int, str]]:
        """(name, width, height, mode) from the header, None for a skipped file; raises for a size that the
        conversion cannot produce an image from without a transform."""
        where = self.src.where(name)
        try:
            w, h, mode = probe(self.src, name)
        except BadImage as exc:
            self.bad(name, exc.reason)
            return None
        if mode not in SUPPORTED_MODES:
            self.bad(name, f"mode {mode} is not supported (use 8- or 16-bit images)")
            return None
        if self.transform is None:
            r = self.size
            if r is None:
                if w != h or w < 4 or not is_power_of_two(w):
                    raise ValueError(f"{where}: image is {w}x{h}, not a square power-of-two size; pass --resolution R "
                                     "with --transform center-crop|pad|resize to convert the images")
                self.size, self.first = w, name
            elif (w, h) != (r, r):
                like = f" like {self.src.where(self.first)}" if self.first else ""
                raise ValueError(f"{where}: image is {w}x{h}, not {r}x{r}{like}; pass --transform "
                                 f"center-crop|pad|resize with --resolution {r} to convert every image to {r}x{r}")
        return name, w, h, mode

    def convert(self, item: tuple[bytes, tuple[str, int, int, str]]):
        """(PNG bytes, (mode, rotated, alpha, upscaled)) of one image, or (None, reason) when it cannot be decoded."""
        from PIL import Image, ImageOps

        raw, (name, w, h, mode) = item
        try:
            with Image.open(io.BytesIO(raw)) as im:
                im.load()
                rotated = orientation(im) != 1
                if rotated:
                    im = ImageOps.exif_transpose(im)
                alpha = _has_alpha(im)
                im = to_8bit(im, self.target)
        except Exception as exc:
            return None, describe_error(exc)
        side = max(w, h) if self.transform == "pad" else min(w, h)
        png = encode_png(fit(im, self.size, self.transform), self.compress_level)
        return png, (mode, rotated, alpha, side < self.size)

    def nothing_readable(self) -> ValueError:
        name, reason = self.skipped[0]
        return ValueError(f"--source {self.src.path}: none of its {len(self.src.names)} image files could be read "
                          f"(e.g. {self.src.where(name)}: {reason})")


def _labels(src: ImageSource, labels: str, log: Callable[[str], None]) -> tuple[Optional[dict], str]:
    """The source's {name: label} table to keep (None for none) and its kind."""
    table = src.labels()
    if table is None:
        return None, "none"
    names = src.names
    missing = [n for n in names if n not in table]
    if labels == "drop":
        log(f"warning: dropping the labels of {len(names) - len(missing)} of {len(names)} images (--labels drop); "
            "the dataset will be unlabelled")
        return None, "dropped"
    if missing:
        raise ValueError(f"{src.where(META_NAME)}: {len(missing)} of {len(names)} images have no label (e.g. "
                         f"{missing[0]!r}); label every image, or pass --labels drop (labels='drop') to make an "
                         "unlabelled dataset")
    _, kind = label_array([table[n] for n in names], where=src.where(META_NAME))
    return table, kind


def make_dataset(source: Union[str, os.PathLike], dest: Union[str, os.PathLike], *,
                 resolution: Union[int, str, None] = None, transform: Optional[str] = None, channels: str = "rgb",
                 on_error: str = "fail", max_images: Optional[int] = None, labels: str = "keep",
                 overwrite: bool = False, compress_level: int = 1, progress: Optional[bool] = None,
                 workers: Optional[int] = None, log: Callable[[str], None] = print) -> dict:
    """Convert the images of ``source`` (folder, searched recursively, or zip) into the dataset zip ``dest``.

    ``resolution``: output side (power of two >= 4); required with a ``transform``; without one every image must
    already be ``resolution`` square (or, when None, all the same square power-of-two size).
    ``transform``: None, "center-crop", "pad" (black borders) or "resize" (aspect not kept).
    ``channels``: "rgb", "gray", or "auto" (gray when every source image is gray).
    ``on_error``: "fail" raises on the first unreadable image; "skip" leaves it out and lists it in
    ``<dest stem>-skipped.txt``. ``labels``: "keep" the labels of the source ``dataset.json`` (all images must have
    one) or "drop" them. ``max_images``: stop after this many images. ``progress`` None = a bar only when stderr is
    a terminal. Returns a summary (counts, modes, skipped files, labels).
    """
    _choice("--transform", transform, (None,) + TRANSFORMS)
    _choice("--channels", channels, CHANNELS)
    _choice("--on-error", on_error, ON_ERROR)
    _choice("--labels", labels, LABELS)
    require_ints(compress_level=compress_level)
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be in 0..9, got {compress_level}")
    if max_images is not None:
        require_ints(max_images=max_images)
        if max_images < 1:
            raise ValueError(f"--max-images must be at least 1, got {max_images}")
    size = parse_resolution(resolution)
    if transform is not None and size is None:
        raise ValueError(f"--transform {transform} needs --resolution (the output side, e.g. 256)")
    src = ImageSource(source)
    try:
        dest = pathlib.Path(dest)
        if dest.exists() and dest.resolve() == src.path.resolve():
            raise ValueError(f"--dest {str(dest)!r} is the --source zip; write to another file")
        check_dest(dest, overwrite)
        if not src.names:
            raise ValueError(f"--source {src.path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        table, label_kind = _labels(src, labels, log)
        job = _Conversion(src, size, transform, on_error, compress_level)

        rest = iter(src.names)
        first_pass = []
        for name in rest:
            c = job.check(name)
            if c is not None:
                first_pass.append(c)
                if max_images is not None and len(first_pass) == max_images:
                    break
        if not first_pass:
            raise job.nothing_readable()
        gray = channels == "gray" or (channels == "auto" and all(c[3] in GRAY_MODES for c in first_pass))
        job.target = "L" if gray else "RGB"

        def candidates() -> Iterator[tuple[str, int, int, str]]:
            yield from first_pass
            for name in rest:
                c = job.check(name)
                if c is not None:
                    yield c

        from tqdm import tqdm

        bar = tqdm(total=len(first_pass), unit="img", desc=dest.name, file=sys.stderr,
                   disable=(not sys.stderr.isatty()) if progress is None else not progress)
        nthreads = workers or min(16, os.cpu_count() or 1)
        pool = ThreadPoolExecutor(max_workers=nthreads)
        kept: list[str] = []
        modes: dict[str, int] = {}
        counts = {"exif_rotated": 0, "alpha_composited": 0, "upscaled": 0, "sixteen_bit": 0}
        pending = candidates()
        try:
            with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED,
                                                           allowZip64=True) as zf:
                while max_images is None or len(kept) < max_images:
                    want = 4 * nthreads if max_images is None else min(4 * nthreads, max_images - len(kept))
                    chunk = [(src.read(c[0]), c) for c in islice(pending, want)]
                    if not chunk:
                        break
                    for (_, (name, *_)), (png, info) in zip(chunk, pool.map(job.convert, chunk)):
                        if png is None:
                            job.bad(name, info)
                            bar.total = max(bar.total - 1, 0)
                            continue
                        mode, rotated, alpha, upscaled = info
                        write_entry(zf, image_name(len(kept)), png)
                        kept.append(name)
                        modes[mode] = modes.get(mode, 0) + 1
                        counts["exif_rotated"] += rotated
                        counts["alpha_composited"] += alpha
                        counts["upscaled"] += upscaled
                        counts["sixteen_bit"] += mode in SIXTEEN_BIT_MODES
                        bar.update(1)
                if not kept:
                    raise job.nothing_readable()
                meta = {
                    "labels": None if table is None else [[image_name(k), table[n]] for k, n in enumerate(kept)],
                    "fastgan": {
                        "format_version": FORMAT_VERSION,
                        "kind": "converted",
                        "source": src.path.name,
                        "source_kind": "zip" if src.is_zip else "folder",
                        "num_images": len(kept),
                        "resolution": job.size,
                        "channels": 1 if gray else 3,
                        "channels_option": channels,
                        "transform": transform,
                        "resample": "lanczos",
                        "alpha": ALPHA_POLICY,
                        "sixteen_bit": "scaled to 8 bits: round(v * 255 / 65535)",
                        "exif_orientation": "applied",
                        "source_modes": dict(sorted(modes.items())),
                        "on_error": on_error,
                        "skipped": len(job.skipped),
                        "labels_option": labels,
                        "max_images": max_images,
                        "png_compress_level": compress_level,
                        "image_names": "NNNNN/imgNNNNNNNN.png, N = index of the kept images in sorted source order",
                        "source_names": kept,
                    },
                }
                write_entry(zf, META_NAME, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        finally:
            bar.close()
            pool.shutdown(wait=True)
    finally:
        src.close()

    skipped_file = dest.with_name(f"{dest.stem}-skipped.txt")
    if job.skipped:
        with atomic_path(skipped_file) as tmp:
            tmp.write_text("".join(f"{n}\t{r}\n" for n, r in sorted(job.skipped)))
    elif skipped_file.exists():
        skipped_file.unlink()
    summary = {
        "dest": str(dest),
        "num_images": len(kept),
        "resolution": job.size,
        "channels": 1 if gray else 3,
        "transform": transform,
        "modes": dict(sorted(modes.items())),
        "alpha": ALPHA_POLICY,
        **counts,
        "skipped": len(job.skipped),
        "skipped_file": str(skipped_file) if job.skipped else None,
        "labels": label_kind,
        "label_dim": 0 if table is None else int(label_array([table[n] for n in kept])[0].shape[1]),
    }
    _log_summary(summary, log)
    return summary


def _log_summary(s: dict, log: Callable[[str], None]) -> None:
    r = s["resolution"]
    log(f"wrote {s['num_images']} images ({r}x{r}, {'gray' if s['channels'] == 1 else 'RGB'}"
        f"{', ' + s['transform'] if s['transform'] else ''}) to {s['dest']}")
    log("source modes: " + ", ".join(f"{m} {k}" for m, k in s["modes"].items()))
    if s["alpha_composited"]:
        log(f"{s['alpha_composited']} images with transparency were {ALPHA_POLICY}")
    if s["sixteen_bit"]:
        log(f"{s['sixteen_bit']} 16-bit images were scaled to 8 bits")
    if s["exif_rotated"]:
        log(f"{s['exif_rotated']} images were rotated to their EXIF orientation")
    if s["upscaled"]:
        log(f"{s['upscaled']} images were smaller than {r}x{r} and were upscaled")
    if s["labels"] in ("class", "vector"):
        log(f"labels: {s['labels']}, label_dim {s['label_dim']}")
    if s["skipped"]:
        log(f"skipped {s['skipped']} unreadable files, listed in {s['skipped_file']}")

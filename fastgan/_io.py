"""File helpers shared by everything that writes results: atomic replacement and content hashes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
from typing import Iterator, Optional, Union


@contextlib.contextmanager
def atomic_path(dest: Union[str, os.PathLike]) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``dest``; when the block succeeds the file is synced to disk and renamed onto
    ``dest`` (readers see the old file or the whole new one, never a part), when it fails the temporary is removed."""
    dest = pathlib.Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def sha256_file(path: Union[str, os.PathLike], h: Optional["hashlib._Hash"] = None) -> "hashlib._Hash":
    """``h`` (a new sha256 when None) updated with the bytes of the file at ``path``."""
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h

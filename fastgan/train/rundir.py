"""The run directory (StyleGAN's layout and names) and its small files, all written atomically.

``<outdir>/<NNNNN>-<cfg>-<data>-gpus<W>-batch<B>[-<desc>]/`` holds ``training_options.json``, ``env.json``,
``status.json``, ``log.txt``, ``stats.jsonl``, ``grid_z.pt``, ``reals.png``, ``fakes*.png``,
``network-snapshot-<kimg>.pt``, ``training-state-<kimg>.pt`` and ``latest.json`` (the pointer ``--resume auto``
follows; it names only complete files because it is replaced after both of them are in place).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import time
from typing import Any, Optional, Union

from .._io import atomic_path

PathLike = Union[str, os.PathLike]
_RUN_RE = re.compile(r"^(\d{5})-(.+)$")


def write_json(path: PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: PathLike) -> Any:
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON ({exc})") from None


def kimg_tag(nimg: int) -> str:
    """``000012`` for whole kimg, ``000000.032`` for fractions (short test runs never collide)."""
    return f"{nimg // 1000:06d}" if nimg % 1000 == 0 else f"{nimg // 1000:06d}.{nimg % 1000:03d}"


def run_suffix(cfg: str, data_name: str, batch: int, desc: str = "", world_size: Optional[int] = None) -> str:
    """Name after the id. ``world_size=None`` gives the part resume matching compares (any process count)."""
    parts = [cfg, re.sub(r"[^A-Za-z0-9_.+]+", "_", data_name) or "data"]
    if world_size is not None:
        parts.append(f"gpus{world_size}")
    parts.append(f"batch{batch}")
    if desc:
        parts.append(re.sub(r"[^A-Za-z0-9_.+-]+", "_", desc))
    return "-".join(parts)


def _strip_gpus(suffix: str) -> str:
    return re.sub(r"-gpus\d+-", "-", suffix, count=1)


def list_runs(outdir: PathLike) -> list[pathlib.Path]:
    outdir = pathlib.Path(outdir)
    if not outdir.is_dir():
        return []
    return sorted(p for p in outdir.iterdir() if p.is_dir() and _RUN_RE.match(p.name))


def create_run_dir(outdir: PathLike, suffix: str) -> pathlib.Path:
    """Make ``<outdir>/<next id>-<suffix>``; the id is one past the largest existing one (never reused)."""
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    while True:
        ids = [int(_RUN_RE.match(p.name).group(1)) for p in list_runs(outdir)]
        path = outdir / f"{max(ids, default=-1) + 1:05d}-{suffix}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # a concurrent launch took the id
            continue


def matching_runs(outdir: PathLike, suffix: str) -> list[pathlib.Path]:
    """Run dirs whose name (ignoring id and process count) equals ``suffix`` without its ``gpus`` part."""
    want = _strip_gpus(suffix)
    return [p for p in list_runs(outdir) if _strip_gpus(_RUN_RE.match(p.name).group(2)) == want]


def read_latest(run_dir: PathLike) -> Optional[dict]:
    """``latest.json`` of a run with both named files present, else None."""
    run_dir = pathlib.Path(run_dir)
    path = run_dir / "latest.json"
    if not path.is_file():
        return None
    latest = read_json(path)
    for key in ("state", "snapshot"):
        if not (run_dir / latest.get(key, "")).is_file():
            raise ValueError(f"{str(path)!r} points at {latest.get(key)!r}, which is missing; pass "
                             "--resume with an explicit training-state file")
    return latest


class RunFiles:
    """Writers for the text files of one run (rank 0 only)."""

    def __init__(self, run_dir: PathLike, quiet: bool = False):
        self.dir = pathlib.Path(run_dir)
        self.quiet = quiet

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)
        with open(self.dir / "log.txt", "a") as f:
            f.write(msg + "\n")

    def status(self, state: str, **info) -> None:
        write_json(self.dir / "status.json", {"status": state, "time": time.time(), **info})

    def append_stats(self, record: dict) -> None:
        with open(self.dir / "stats.jsonl", "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_stats(self, max_nimg: int) -> int:
        """Drop stats lines after ``max_nimg`` (a resume replays them); returns how many were dropped."""
        path = self.dir / "stats.jsonl"
        if not path.is_file():
            return 0
        lines = path.read_text().splitlines()
        keep = []
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            if rec.get("nimg", 0) <= max_nimg:
                keep.append(line)
        dropped = len(lines) - len(keep)
        if dropped:
            with atomic_path(path) as tmp:
                tmp.write_text("".join(x + "\n" for x in keep))
        return dropped

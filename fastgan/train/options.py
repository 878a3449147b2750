"""Training options: one flat dataclass of JSON values, the ``--cfg`` presets, and the resume-compatibility diff.

``TrainOptions`` holds what the user asked for; :func:`resolve` fills the ``None`` fields from the preset and
the data (resolution, auto gamma, ...) and checks every value, so ``--dry-run`` prints exactly what a run uses.
``training_options.json`` stores the resolved options; a resume compares them with :func:`diff_options`, which
ignores :data:`RESUME_WHITELIST` (length, logging and memory settings) and refuses any other change.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

# name -> settings. lr/gamma/ema follow StyleGAN2-ADA's cfg table; "low_shot" is the DiffAugment/Primitives-PS
# pretraining config; "tiny" is small enough to train on CPU in seconds (tests, the demo).
CFG_SPECS: dict[str, dict[str, Any]] = {
    "stylegan2": dict(map=8, cbase=32768, cmax=512, z_dim=512, w_dim=512, lr=0.002, gamma=10.0, ema_kimg=10.0,
                      ema_rampup=None, mbstd=4, pl_weight=2.0, style_mixing=0.9, num_fp16_res=4, conv_clamp=256.0),
    "paper256": dict(map=8, cbase=16384, cmax=512, z_dim=512, w_dim=512, lr=0.0025, gamma=1.0, ema_kimg=20.0,
                     ema_rampup=None, mbstd=4, pl_weight=2.0, style_mixing=0.9, num_fp16_res=4, conv_clamp=256.0),
    "low_shot": dict(map=2, cbase=32768, cmax=512, z_dim=512, w_dim=512, lr=0.002, gamma=10.0, ema_kimg=10.0,
                     ema_rampup=None, mbstd=4, pl_weight=2.0, style_mixing=0.9, num_fp16_res=4, conv_clamp=256.0),
    "auto": dict(map=2, cbase=None, cmax=512, z_dim=512, w_dim=512, lr=None, gamma=None, ema_kimg=None,
                 ema_rampup=0.05, mbstd=None, pl_weight=2.0, style_mixing=0.9, num_fp16_res=4, conv_clamp=256.0),
    "tiny": dict(map=2, cbase=1024, cmax=64, z_dim=64, w_dim=64, lr=0.0025, gamma=1.0, ema_kimg=1.0,
                 ema_rampup=0.05, mbstd=4, pl_weight=0.0, style_mixing=0.9, num_fp16_res=0, conv_clamp=256.0),
}

AUG_CHOICES = ("diffaug", "ada", "none")
NONFINITE_CHOICES = ("skip", "sanitize", "abort")

# options a resume may change: run length, reporting cadence, memory split and I/O; nothing that alters the model,
# the data or the optimisation
RESUME_WHITELIST = frozenset({"kimg", "tick", "snap", "img_snap", "workers", "batch_gpu", "resume", "transfer",
                              "allow_partial", "nonfinite", "nonfinite_limit", "keep_states", "progress", "timeout",
                              "dry_run", "nobench", "outdir", "desc"})


@dataclass
class TrainOptions:
    data: str = ""
    outdir: str = ""
    cfg: str = "auto"
    resolution: Optional[int] = None
    batch: int = 32
    batch_gpu: Optional[int] = None
    kimg: float = 25000.0
    tick: float = 4.0
    snap: int = 50
    img_snap: Optional[int] = None
    seed: int = 0
    aug: str = "diffaug"
    diffaug_policy: str = "color,translation,cutout"
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0
    mirror: bool = False
    cond: bool = False
    gamma: Optional[float] = None
    glr: Optional[float] = None
    dlr: Optional[float] = None
    map: Optional[int] = None
    cbase: Optional[int] = None
    cmax: Optional[int] = None
    z_dim: Optional[int] = None
    w_dim: Optional[int] = None
    mbstd: Optional[int] = None
    pl_weight: Optional[float] = None
    style_mixing: Optional[float] = None
    r1_interval: int = 16
    pl_interval: int = 4
    ema_kimg: Optional[float] = None
    ema_rampup: Optional[float] = None
    num_fp16_res: Optional[int] = None
    conv_clamp: Optional[float] = None
    fp32: bool = False
    nobench: bool = False
    deterministic: bool = False
    workers: int = 2
    desc: str = ""
    resume: Optional[str] = None
    transfer: Optional[str] = None
    allow_partial: bool = False
    nonfinite: str = "skip"
    nonfinite_limit: int = 10
    keep_states: int = 3
    timeout: float = 1800.0
    progress: Optional[bool] = None
    dry_run: bool = False
    resolved: bool = field(default=False, repr=False)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training options {unknown}")
        return cls(**d)


def _positive(name: str, v, allow_zero: bool = False) -> None:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
            (v < 0 if allow_zero else v <= 0):
        raise ValueError(f"--{name.replace('_', '-')} must be a {'non-negative' if allow_zero else 'positive'} "
                         f"number, got {v!r}")


def resolve(opts: TrainOptions, *, data_resolution: int, world_size: int) -> TrainOptions:
    """Options with every ``None`` filled in from the preset and the data, checked; the input is not modified."""
    o = dataclasses.replace(opts)
    if o.cfg not in CFG_SPECS:
        raise ValueError(f"--cfg {o.cfg!r} is not a preset; choose one of {sorted(CFG_SPECS)}")
    if o.aug not in AUG_CHOICES:
        raise ValueError(f"--aug must be one of {AUG_CHOICES}, got {o.aug!r}")
    if o.nonfinite not in NONFINITE_CHOICES:
        raise ValueError(f"--nonfinite must be one of {NONFINITE_CHOICES}, got {o.nonfinite!r}")
    for name in ("batch", "snap", "r1_interval", "pl_interval", "ada_interval", "nonfinite_limit", "keep_states"):
        v = getattr(o, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
    for name in ("kimg", "tick", "ada_kimg", "timeout"):
        _positive(name, getattr(o, name))
    if isinstance(o.workers, bool) or not isinstance(o.workers, int) or o.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {o.workers!r}")
    if o.resolution is None:
        o.resolution = data_resolution
    elif o.resolution != data_resolution:
        raise ValueError(f"--resolution {o.resolution} does not match the data ({data_resolution} px); convert the "
                         f"data with `fastgan data make --resolution {o.resolution}` or drop --resolution")
    res = o.resolution
    if res < 8 or res & (res - 1):
        raise ValueError(f"the resolution must be a power of two >= 8, got {res}")
    if o.batch % world_size:
        raise ValueError(f"--batch {o.batch} is not divisible by the number of processes ({world_size})")
    per_rank = o.batch // world_size
    if o.batch_gpu is None:
        o.batch_gpu = per_rank
    if isinstance(o.batch_gpu, bool) or not isinstance(o.batch_gpu, int) or o.batch_gpu < 1 or per_rank % o.batch_gpu:
        raise ValueError(f"--batch-gpu {o.batch_gpu!r} must divide the per-process batch {per_rank} "
                         f"(--batch {o.batch} over {world_size} processes)")
    spec = dict(CFG_SPECS[o.cfg])
    if o.cfg == "auto":  # StyleGAN2-ADA's auto config
        spec["cbase"] = 32768 if res >= 512 else 16384
        spec["lr"] = 0.002 if res >= 1024 else 0.0025
        spec["gamma"] = 0.0002 * res ** 2 / o.batch
        spec["ema_kimg"] = o.batch * 10 / 32
        spec["mbstd"] = min(o.batch_gpu, 4)
    fill = {"map": "map", "cbase": "cbase", "cmax": "cmax", "z_dim": "z_dim", "w_dim": "w_dim", "gamma": "gamma",
            "glr": "lr", "dlr": "lr", "mbstd": "mbstd", "pl_weight": "pl_weight", "style_mixing": "style_mixing",
            "ema_kimg": "ema_kimg", "num_fp16_res": "num_fp16_res", "conv_clamp": "conv_clamp"}
    for opt_name, spec_name in fill.items():
        if getattr(o, opt_name) is None:
            setattr(o, opt_name, spec[spec_name])
    if o.ema_rampup is None:  # 0 = no ramp-up
        o.ema_rampup = spec["ema_rampup"] or 0.0
    if o.fp32:
        o.num_fp16_res = 0
    for name in ("glr", "dlr", "ema_kimg"):
        _positive(name, getattr(o, name))
    for name in ("gamma", "pl_weight", "ema_rampup"):
        _positive(name, getattr(o, name), allow_zero=True)
    if not 0 <= o.style_mixing <= 1:
        raise ValueError(f"--style-mixing must be in [0, 1], got {o.style_mixing}")
    if not 0 <= o.ada_target <= 1:
        raise ValueError(f"--ada-target must be in [0, 1], got {o.ada_target}")
    if o.mbstd < 0 or (o.mbstd and o.batch_gpu % o.mbstd):
        raise ValueError(f"--batch-gpu {o.batch_gpu} must be a multiple of the minibatch-std group ({o.mbstd}) so "
                         "that D's groups do not depend on the split; change --batch-gpu or --mbstd")
    if o.img_snap is None:
        o.img_snap = o.snap
    if o.resume is not None and o.transfer is not None:
        raise ValueError("--resume continues a run and --transfer starts a new one from weights: give only one")
    o.resolved = True
    return o


def diff_options(old: dict, new: dict, whitelist=RESUME_WHITELIST) -> list[tuple[str, Any, Any]]:
    """(name, old, new) for every option outside ``whitelist`` that differs."""
    keys = sorted((set(old) | set(new)) - set(whitelist) - {"resolved"})
    return [(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def format_diff(diff: list[tuple[str, Any, Any]]) -> str:
    w = max([len(k) for k, _, _ in diff] + [6])
    lines = [f"  {'option':<{w}}  run             now"]
    lines += [f"  {k:<{w}}  {old!r:<15} {new!r}" for k, old, new in diff]
    return "\n".join(lines)

"""Training options: one flat dataclass of JSON values, the ``--cfg`` presets, and the resume-compatibility diff.

``TrainOptions`` holds what the user asked for; :func:`resolve` fills the ``None`` fields from the preset and
the data (resolution, auto gamma, ...) and checks every value, so ``--dry-run`` prints exactly what a run uses.
``training_options.json`` stores the resolved options; a resume compares them with :func:`diff_options`, which
ignores :data:`RESUME_WHITELIST` (length, logging and memory settings) and refuses any other change.

Transfer (``fastgan transfer``) adds ``method`` (finetune | freezed | adafm), ``freeze_d`` (FreezeD depth) and the
AdaFM settings (``adafm_front_res``, ``adafm_new_front``, ``adafm_unfreeze`` in kimg); vision-aided training adds
``vision_aided`` ("clip+dino" style fixed set, or "auto" for the progressive linear-probe ensemble),
``vision_augment``, ``vision_weights``, ``vision_warmup``, ``probe_select``, ``vision_stage_kimg``,
``vision_candidates``, ``probe_images`` and, for the heads' ADA, ``vision_ada_target`` and ``vision_ada_kimg``
(``None``: the vision-aided discriminator's defaults, 0.3 and 500). Each stays ``None`` when its feature is off, so plain runs resolve as before.
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
    # transfer (fastgan transfer)
    method: Optional[str] = None
    freeze_d: Optional[int] = None
    adafm_front_res: Optional[int] = None
    adafm_new_front: bool = False
    adafm_unfreeze: Optional[float] = None
    # vision-aided discriminator
    vision_aided: Optional[str] = None
    vision_augment: Optional[str] = None
    vision_weights: Optional[dict] = None
    vision_warmup: Optional[float] = None
    probe_select: Optional[int] = None
    vision_stage_kimg: Optional[float] = None
    vision_candidates: Optional[str] = None
    probe_images: Optional[int] = None
    vision_ada_target: Optional[float] = None  # None: the discriminator's default (0.3, METHODS.md §2.5)
    vision_ada_kimg: Optional[float] = None    # None: the discriminator's default (500)
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
    if o.resume is not None and o.transfer is not None and o.method is None:
        # (fastgan transfer always names its --source; with --resume it continues the run when one exists)
        raise ValueError("--resume continues a run and --transfer starts a new one from weights: give only one")
    _resolve_transfer(o)
    _resolve_vision(o)
    o.resolved = True
    return o


# METHODS.md §3.2: AdaFM unfreezes gamma/beta at iteration 10 000; fastgan counts images, so the default is
# 10 000 steps at the run's --batch
ADAFM_UNFREEZE_STEPS = 10_000
ADAFM_FRONT_RES = 16
VISION_WARMUP_KIMG = 500.0  # METHODS.md §2.5: plain GAN for 5e5 images when training from scratch
VISION_STAGE_KIMG = 1000.0
PROBE_SELECT = 3
PROBE_IMAGES = 1000


def _resolve_transfer(o: TrainOptions) -> None:
    from ..transfer.freeze import METHODS, check_freeze_d, default_freeze_d

    if o.method is None:
        for name in ("freeze_d", "adafm_front_res", "adafm_unfreeze"):
            if getattr(o, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} belongs to `fastgan transfer` (--method freezed or adafm)")
        if o.adafm_new_front:
            raise ValueError("--adafm-new-front belongs to `fastgan transfer --method adafm`")
        return
    if o.method not in METHODS:
        raise ValueError(f"--method must be one of {METHODS}, got {o.method!r}")
    if not o.transfer and o.resume is None:
        raise ValueError(f"--method {o.method} transfers a pretrained network: give the source snapshot (--source)")
    if o.freeze_d is None:
        o.freeze_d = default_freeze_d(o.method)
    check_freeze_d(o.freeze_d, o.resolution)
    if o.method == "finetune" and o.freeze_d:
        raise ValueError(f"--freeze-d {o.freeze_d} with --method finetune: finetune trains every parameter; "
                         "use --method freezed to freeze discriminator blocks")
    if o.method != "adafm":
        for name in ("adafm_front_res", "adafm_unfreeze"):
            if getattr(o, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} applies to --method adafm, not {o.method}")
        if o.adafm_new_front:
            raise ValueError(f"--adafm-new-front applies to --method adafm, not {o.method}")
        return
    from ..transfer.adafm import adafm_resolutions_for

    if o.adafm_front_res is None:
        o.adafm_front_res = ADAFM_FRONT_RES
    adafm_resolutions_for(o.resolution, o.adafm_front_res)  # raises for a front at or above the resolution
    if o.adafm_unfreeze is None:
        o.adafm_unfreeze = ADAFM_UNFREEZE_STEPS * o.batch / 1000
    _positive("adafm_unfreeze", o.adafm_unfreeze, allow_zero=True)


# short names for the vision backbones of METHODS.md §2 (the registry names are fastgan.nn.vision's)
BACKBONE_ALIASES = {"clip": "clip-vit-b32", "dino": "dino-vit-b16", "swin": "swin-t", "vgg": "vgg16-lpf4",
                    "efficientnet": "efficientnet-lite0"}
VISION_AUGMENTS = ("diffaugment", "ada", "none")


def canonical_backbone(name: str, flag: str) -> str:
    """A backbone spec ("clip", "dino-vit-b16", "random:pool", ...) in the registry's canonical form."""
    from ..nn.vision.backbones import available_backbones, canonical_spec

    base, sep, out = name.partition(":")
    base = BACKBONE_ALIASES.get(base, base)
    try:
        return canonical_spec(base + sep + out)
    except (TypeError, ValueError) as exc:
        known = available_backbones()
        raise ValueError(f"{flag}: unknown vision backbone {name!r} ({exc}); available: {', '.join(known)} "
                         f"(short names: {', '.join(f'{k}={v}' for k, v in BACKBONE_ALIASES.items())})") from None


def parse_backbones(text: str, flag: str = "--vision-aided") -> list[str]:
    """'clip+dino' -> canonical specs ['clip-vit-b32', 'dino-vit-b16'] (commas work too); unknown names, empty
    names and repeats are errors naming ``flag``."""
    names = [n.strip() for n in str(text).replace(",", "+").split("+")]
    if not str(text).strip() or any(not n for n in names):
        raise ValueError(f"{flag} takes backbone names joined by '+', e.g. clip+dino, got {text!r}")
    specs = [canonical_backbone(n, flag) for n in names]
    dup = sorted({n for n in specs if specs.count(n) > 1})
    if dup:
        raise ValueError(f"{flag} names {dup} more than once")
    return specs


def default_candidates(weights: dict) -> list[str]:
    """The backbones ``--vision-aided auto`` probes when ``--vision-candidates`` is not given: every registered
    backbone except the test-only ``random`` whose weights can be found here (a ``--vision-weights`` file, a file
    in ``$FASTGAN_WEIGHTS_DIR``, or an installed package), so the probe never stops for a missing file."""
    import os
    import pathlib

    from ..nn.vision.backbones import WEIGHTS_ENV, available_backbones, backbone_info

    root = os.environ.get(WEIGHTS_ENV)
    out = []
    for name in available_backbones():
        if name == "random":
            continue
        info = backbone_info(name)
        if name in weights or (root and info.filename and (pathlib.Path(root) / info.filename).is_file()):
            out.append(name)
        elif info.loader is not None:
            try:
                info.loader(None)
            except (ImportError, OSError, ValueError):
                continue
            out.append(name)
    return out


def _resolve_vision(o: TrainOptions) -> None:
    extras = ("vision_augment", "vision_weights", "vision_warmup", "probe_select", "vision_stage_kimg",
              "vision_candidates", "probe_images", "vision_ada_target", "vision_ada_kimg")
    if o.vision_aided is None:
        for name in extras:
            if getattr(o, name) not in (None, {}):
                raise ValueError(f"--{name.replace('_', '-')} needs --vision-aided")
        o.vision_weights = None
        return
    try:
        import fastgan.nn.vision  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"--vision-aided needs fastgan.nn.vision, which did not import: {exc}") from None
    if o.vision_augment is None:
        o.vision_augment = "diffaugment"
    if o.vision_augment not in VISION_AUGMENTS:
        raise ValueError(f"--vision-augment must be one of {VISION_AUGMENTS}, got {o.vision_augment!r}")
    for name in ("vision_ada_target", "vision_ada_kimg"):
        if getattr(o, name) is not None and o.vision_augment != "ada":
            raise ValueError(f"--{name.replace('_', '-')} applies to --vision-augment ada, not {o.vision_augment}")
    if o.vision_ada_target is not None:
        t = o.vision_ada_target
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not -1 <= t <= 1:
            raise ValueError(f"--vision-ada-target must be in [-1, 1] (a mean sign of real logits), got {t!r}")
    if o.vision_ada_kimg is not None:
        _positive("vision_ada_kimg", o.vision_ada_kimg)
    weights = {}
    for name, path in dict(o.vision_weights or {}).items():
        spec = canonical_backbone(name, "--vision-weights")
        if not isinstance(path, str) or not path:
            raise ValueError(f"--vision-weights {name}=PATH needs a file path, got {path!r}")
        weights[spec] = path
    o.vision_weights = weights or None
    if o.vision_warmup is None:  # METHODS.md §2.5: 5e5 images from scratch, none when starting from a trained G
        o.vision_warmup = 0.0 if (o.transfer or o.method) else VISION_WARMUP_KIMG
    _positive("vision_warmup", o.vision_warmup, allow_zero=True)
    if o.vision_aided != "auto":
        for name in ("probe_select", "vision_stage_kimg", "vision_candidates", "probe_images"):
            if getattr(o, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} applies to --vision-aided auto (progressive "
                                 "selection), not to a fixed backbone set")
        o.vision_aided = "+".join(parse_backbones(o.vision_aided))
        return
    names = parse_backbones(o.vision_candidates, "--vision-candidates") if o.vision_candidates else \
        default_candidates(weights)
    if not names:
        raise ValueError("--vision-aided auto found no candidate backbone with weights on this machine; give "
                         "--vision-weights NAME=PATH (e.g. clip=ViT-B-32.pt) or --vision-candidates")
    o.vision_candidates = "+".join(names)
    if o.probe_select is None:
        o.probe_select = min(PROBE_SELECT, len(names))
    if isinstance(o.probe_select, bool) or not isinstance(o.probe_select, int) or not 1 <= o.probe_select <= \
            len(names):
        raise ValueError(f"--probe-select must be an integer in [1, {len(names)}] (the number of candidate "
                         f"backbones {names}), got {o.probe_select!r}")
    if o.vision_stage_kimg is None:
        o.vision_stage_kimg = VISION_STAGE_KIMG
    _positive("vision_stage_kimg", o.vision_stage_kimg)
    if o.probe_images is None:
        o.probe_images = PROBE_IMAGES
    if isinstance(o.probe_images, bool) or not isinstance(o.probe_images, int) or o.probe_images < 4:
        raise ValueError(f"--probe-images must be an integer >= 4, got {o.probe_images!r}")


def diff_options(old: dict, new: dict, whitelist=RESUME_WHITELIST) -> list[tuple[str, Any, Any]]:
    """(name, old, new) for every option outside ``whitelist`` that differs. An option missing from ``old`` (a run
    written before the option existed) counts as its default."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    keys = sorted((set(old) | set(new)) - set(whitelist) - {"resolved"})
    get_old = lambda k: old[k] if k in old else defaults.get(k)  # noqa: E731
    return [(k, get_old(k), new.get(k)) for k in keys if get_old(k) != new.get(k)]


def format_diff(diff: list[tuple[str, Any, Any]]) -> str:
    w = max([len(k) for k, _, _ in diff] + [6])
    lines = [f"  {'option':<{w}}  run             now"]
    lines += [f"  {k:<{w}}  {old!r:<15} {new!r}" for k, old, new in diff]
    return "\n".join(lines)

"""The vision-aided discriminator: frozen backbones + trainable spectral-norm heads + per-backbone augmentation.

    vd = VisionAidedDiscriminator(["clip-vit-b32"], weights={"clip-vit-b32": "ViT-B-32.pt"}, augment="ada")
    opt = torch.optim.Adam(vd.head_parameters(), lr=2e-3, betas=(0, 0.99), eps=1e-8)
    loss_d = vd.loss_d(reals, fakes.detach(), step=step)    # scalar; heads get gradients
    loss_g = vd.loss_g(fakes, step=step)                    # scalar; gradient reaches the fake pixels only

With gradient accumulation (several ``loss_d`` calls per discriminator step), pass ``ada_tick=False`` to every
call and call :meth:`VisionAidedDiscriminator.ada_step` once after the step, so the per-backbone ADA controllers
count discriminator steps, not micro-batches (this is what the training loop does).

Backbones are not submodules: they are frozen, eval-mode modules built from their weight files, so they are in
neither ``parameters()`` nor ``state_dict()``; ``.to()`` / ``.cuda()`` still move them. ``state_dict()`` holds
the heads (spectral-norm vectors included) and each backbone's ADA probability and controller state;
``config()`` holds everything else, including the weight files and their sha256.

Randomness: each backbone augments with its own per-sample keys
``rng.sample_keys(rng.derive(seed, step, phase, crc32(spec)), index)`` (phase 1: real images of ``loss_d``, 2:
fakes of ``loss_d``, 3: fakes of ``loss_g``; ``index``: the global sample indices, default 0..N-1), so results
depend neither on the batch split nor on the torch global RNG, and a resumed run replays the same augmentation.
Heads are initialised from ``seed`` and the spec.
"""
from __future__ import annotations

import json
import math
import pathlib
import zlib
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ...train import rng
from ...train.augment import AdaController, AdaptiveAugment, diffaugment, diffaugment_params
from .backbones import VisionBackbone, build_backbone, canonical_spec, parse_spec
from .heads import build_head, check_loss, check_pairing, default_loss, vision_loss

AUGMENTS = ("diffaugment", "ada", "none")
PH_REAL, PH_FAKE, PH_GEN = 1, 2, 3
CONFIG_FORMAT = "fastgan.vision-aided/1"
DEFAULT_DIFFAUG = "color,translation,cutout"


def _module_key(spec: str) -> str:
    return spec.replace(":", "__").replace(".", "_")


class VisionAidedDiscriminator(nn.Module):
    """Sum over backbones of head losses on frozen features (METHODS.md section 2).

    ``backbones``: specs (``"clip-vit-b32"``, ``"random:pool"``, ...); ``weights``: spec -> weight file path;
    ``loss``: "auto" (vision-aided-gan's recipe, :func:`default_loss`), a loss name for every backbone, or a
    mapping spec -> loss; ``augment``: "diffaugment" (``diffaug_policy``, default color,translation,cutout),
    "ada" (one ADA pipe per backbone, preset bgc, target ``ada_target`` = 0.3, cutout after ADA; every
    ``ada_interval`` discriminator steps p moves by ``images / (ada_kimg * 1000)`` in the direction of
    sign(r_t - target), r_t being the mean sign of the last-level real logits of those steps and ``images`` their
    count) or "none"; ``c_dim``: class-label size for projection heads (0: unconditional); ``seed``: heads'
    initialisation and augmentation keys.

    A discriminator step is one :meth:`loss_d` call by default (``ada_tick=True``). With gradient accumulation,
    call ``loss_d(..., ada_tick=False)`` for each micro-batch (the statistics accumulate) and :meth:`ada_step`
    once per optimisation step, so p does not depend on the micro-batch count. Set ``ada_reduce`` to a function
    that sums a float64 tensor over processes (e.g. an all-reduce; it gets one (k, 2) tensor of [sum of signs,
    count] rows per update, one row per backbone due) to drive ADA from the global statistics under torchrun.
    """

    def __init__(self, backbones: Sequence[str] = (), *, weights: Optional[Mapping[str, str]] = None,
                 loss: Union[str, Mapping[str, str]] = "auto", augment: str = "diffaugment", c_dim: int = 0,
                 seed: int = 0, device=None, diffaug_policy: str = DEFAULT_DIFFAUG, ada_target: float = 0.3,
                 ada_interval: int = 4, ada_kimg: float = 500.0,
                 expected_sha256: Optional[Mapping[str, str]] = None):
        super().__init__()
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        if isinstance(c_dim, bool) or not isinstance(c_dim, int) or c_dim < 0:
            raise ValueError(f"c_dim must be an int >= 0, got {c_dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if isinstance(backbones, str):
            raise TypeError(f"backbones must be a sequence of specs, got the string {backbones!r}; "
                            f"use [{backbones!r}]")
        if augment == "diffaugment":
            diffaugment(torch.zeros(1, 3, 4, 4), diffaug_policy, torch.zeros(1, dtype=torch.int64))  # validates
        # the controller validates these now rather than at the first add_backbone
        AdaController(1, target=ada_target, interval=ada_interval, speed_kimg=ada_kimg)
        self.augment, self.c_dim, self.seed = augment, c_dim, seed
        self.diffaug_policy = diffaug_policy
        self.ada_target, self.ada_interval, self.ada_kimg = float(ada_target), int(ada_interval), float(ada_kimg)
        self.ada_reduce: Optional[Callable[[Tensor], Tensor]] = None
        self.heads = nn.ModuleDict()
        self.ada_pipes = nn.ModuleDict()
        self._backbones: Dict[str, VisionBackbone] = {}  # not submodules: frozen, loaded from files
        self._losses: Dict[str, str] = {}
        self._ada: Dict[str, AdaController] = {}
        self.backbone_names: List[str] = []
        self.register_buffer("_device_tag", torch.zeros(()), persistent=False)
        if device is not None:
            self.to(device)
        weights = dict(weights or {})
        hashes = dict(expected_sha256 or {})
        for spec in backbones:
            per = loss if isinstance(loss, str) else loss.get(spec, "auto")
            self.add_backbone(spec, weights=weights.get(spec), loss=per, expected_sha256=hashes.get(spec))

    # -- structure -----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device_tag.device

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for bb in self._backbones.values():
            bb._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> "VisionAidedDiscriminator":
        """Heads follow ``mode``; backbones stay in eval mode."""
        super().train(mode)
        for bb in self._backbones.values():
            bb.train(False)
        return self

    def backbone(self, spec: str) -> VisionBackbone:
        """The frozen backbone of an active spec."""
        key = canonical_spec(spec)
        if key not in self._backbones:
            raise KeyError(f"backbone {spec!r} is not active; active: {self.backbone_names}")
        return self._backbones[key]

    def add_backbone(self, name: str, *, weights: Optional[str] = None, loss: str = "auto",
                     expected_sha256: Optional[str] = None) -> None:
        """Add a backbone (spec ``name``) with a fresh head. Its head parameters are new: add them to the heads'
        optimiser (``opt.add_param_group({"params": vd.head_parameters(name)})``)."""
        spec = canonical_spec(name)
        if spec in self._backbones:
            raise ValueError(f"backbone {spec!r} is already active")
        bb = build_backbone(spec, weights=weights, device=self.device, expected_sha256=expected_sha256)
        loss = default_loss(bb.multilevel, self.augment) if loss == "auto" else check_loss(loss)
        check_pairing(loss, bb.multilevel, where=f"backbone {spec}")
        key_id = zlib.crc32(spec.encode())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.derive(self.seed, key_id) & 0x7FFF_FFFF_FFFF_FFFF)
            head = build_head(bb.head, bb.feature_kinds, bb.feature_shapes, c_dim=self.c_dim, **bb.head_options)
        self.heads[_module_key(spec)] = head.to(self.device).train(self.training)
        if self.augment == "ada":
            self.ada_pipes[_module_key(spec)] = AdaptiveAugment(
                preset="bgc", cutout=1.0, cutout_mode="always", cutout_size=0.5).to(self.device)
            self._ada[spec] = AdaController(1, target=self.ada_target, interval=self.ada_interval,
                                            speed_kimg=self.ada_kimg)
        self._backbones[spec] = bb
        self._losses[spec] = loss
        self.backbone_names.append(spec)

    def head_parameters(self, name: Optional[str] = None) -> List[nn.Parameter]:
        """The trainable parameters: all heads, or the head of backbone ``name``."""
        if name is None:
            return list(self.heads.parameters())
        self.backbone(name)
        return list(self.heads[_module_key(canonical_spec(name))].parameters())

    def losses(self) -> Dict[str, str]:
        return {s: self._losses[s] for s in self.backbone_names}

    # -- forward -------------------------------------------------------------------------------------------
    def _check_images(self, x: Tensor, arg: str) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{arg} must be float RGB images (N, 3, H, W) in [-1, 1], got {got}")
        if x.device != self.device:
            raise ValueError(f"{arg} is on {x.device} but the vision-aided discriminator is on {self.device}")

    def _check_labels(self, c: Optional[Tensor], n: int, arg: str) -> Optional[Tensor]:
        if self.c_dim == 0:
            if c is not None and c.numel() > 0:
                raise ValueError(f"{arg} given but the discriminator is unconditional (c_dim=0)")
            return None
        if c is None or tuple(c.shape) != (n, self.c_dim):
            got = None if c is None else tuple(c.shape)
            raise ValueError(f"{arg} must be ({n}, {self.c_dim}) class labels (c_dim={self.c_dim}), got {got}")
        return c.to(self.device, torch.float32)

    def _keys(self, spec: str, phase: int, step: int, index: Optional[Tensor], n: int) -> Tensor:
        if index is None:
            index = torch.arange(n, dtype=torch.int64)
        elif not isinstance(index, Tensor) or index.dtype != torch.int64 or tuple(index.shape) != (n,):
            got = (index.dtype, tuple(index.shape)) if isinstance(index, Tensor) else type(index).__name__
            raise ValueError(f"index must be an int64 tensor of shape ({n},) (global sample indices), got {got}")
        return rng.sample_keys(rng.derive(self.seed, int(step), phase, zlib.crc32(spec.encode())),
                               index.to(self.device))

    def _augmented(self, spec: str, x: Tensor, keys: Tensor) -> Tensor:
        if self.augment == "diffaugment":
            return diffaugment(x, self.diffaug_policy, keys)
        if self.augment == "ada":
            return self.ada_pipes[_module_key(spec)](x, keys)
        return x

    def logits(self, spec: str, images: Tensor, c: Optional[Tensor] = None, *, phase: int = PH_GEN, step: int = 0,
               index: Optional[Tensor] = None, grad: bool = True) -> List[Tensor]:
        """One backbone's head logits (a list, one per level) for ``images``; ``grad=False`` runs augmentation
        and backbone without autograd (the head still builds a graph for its own parameters)."""
        keys = self._keys(spec, phase, step, index, images.shape[0])
        bb = self._backbones[spec]

        def run(x: Tensor) -> List[Tensor]:
            if self.augment == "diffaugment":  # the backbone fuses augment + resize + normalise where it pays
                return bb(x, augment=diffaugment_params(keys, self.diffaug_policy, x.shape[2], x.shape[3]))
            return bb(self._augmented(spec, x, keys))

        if grad:
            feats = run(images)
        else:
            with torch.no_grad():
                feats = run(images.detach())
        return self.heads[_module_key(spec)](feats, c)

    def _require_active(self) -> None:
        if not self.backbone_names:
            raise RuntimeError("the vision-aided discriminator has no backbone yet; call add_backbone(name) first")

    def loss_d(self, reals: Tensor, fakes: Tensor, c_real: Optional[Tensor] = None,
               c_fake: Optional[Tensor] = None, *, step: int = 0, index: Optional[Tensor] = None,
               index_fake: Optional[Tensor] = None, ada_tick: bool = True) -> Tensor:
        """Scalar sum over backbones of L(real) + L(fake). Augmentation and backbones run without autograd, so
        no gradient reaches ``reals`` or ``fakes`` (detaching fakes is still the caller's habit); the heads get
        gradients. With ADA, the signs of each backbone's last-level real logits are accumulated; ``ada_tick=True``
        (one call per discriminator step) then counts the step with :meth:`ada_step`, ``False`` leaves that to
        the caller (gradient accumulation: one :meth:`ada_step` after all of a step's micro-batches)."""
        if not isinstance(ada_tick, bool):
            raise TypeError(f"ada_tick must be a bool, got {ada_tick!r}")
        self._require_active()
        self._check_images(reals, "reals")
        self._check_images(fakes, "fakes")
        c_real = self._check_labels(c_real, reals.shape[0], "c_real")
        c_fake = self._check_labels(c_fake, fakes.shape[0], "c_fake")
        total = None
        for spec in self.backbone_names:
            real_logits = self.logits(spec, reals, c_real, phase=PH_REAL, step=step, index=index, grad=False)
            fake_logits = self.logits(spec, fakes, c_fake, phase=PH_FAKE, step=step, index=index_fake, grad=False)
            term = vision_loss(real_logits, self._losses[spec], "real") + \
                vision_loss(fake_logits, self._losses[spec], "fake")
            total = term if total is None else total + term
            if spec in self._ada:
                self._ada[spec].accumulate(real_logits[-1])
        if ada_tick:
            self.ada_step()
        return total

    def loss_g(self, fakes: Tensor, c: Optional[Tensor] = None, *, step: int = 0,
               index: Optional[Tensor] = None) -> Tensor:
        """Scalar sum over backbones of the generator loss. The gradient flows through the frozen backbones into
        ``fakes`` only: backbone and head parameters receive none (heads are frozen for the call)."""
        self._require_active()
        self._check_images(fakes, "fakes")
        c = self._check_labels(c, fakes.shape[0], "c")
        flags = [(p, p.requires_grad) for p in self.heads.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            total = None
            for spec in self.backbone_names:
                logits = self.logits(spec, fakes, c, phase=PH_GEN, step=step, index=index, grad=True)
                term = vision_loss(logits, self._losses[spec], "gen")
                total = term if total is None else total + term
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
        return total

    # -- ADA -----------------------------------------------------------------------------------------------
    def ada_step(self) -> Dict[str, float]:
        """Count one discriminator optimisation step for every backbone's ADA controller. Each controller whose
        ``ada_interval`` is complete updates its p from the real-logit signs accumulated since its last update
        (summed over processes by ``ada_reduce``: one call per step that has an update, all such backbones in one
        (k, 2) tensor). Returns the per-backbone p (empty unless ``augment="ada"``)."""
        due = [s for s in self.backbone_names if s in self._ada and self._ada[s].tick()]
        if due:
            pending = torch.stack([self._ada[s].pending().to(self.device) for s in due])
            if self.ada_reduce is not None:
                pending = self.ada_reduce(pending)
            pending = pending.detach().double().cpu()
            for spec, row in zip(due, pending):
                self._ada[spec].update(row, num_images=int(round(float(row[1]))))
                self.ada_pipes[_module_key(spec)].p.fill_(self._ada[spec].p)
        return self.ada_p()

    def ada_p(self) -> Dict[str, float]:
        """Per-backbone ADA probability (empty unless ``augment="ada"``)."""
        return {s: float(self.ada_pipes[_module_key(s)].p) for s in self.backbone_names if s in self._ada}

    def ada_rt(self) -> Dict[str, float]:
        """Per-backbone ADA r_t = mean sign of the last-level real logit at the last update (nan before one)."""
        return {s: self._ada[s].rt for s in self.backbone_names if s in self._ada}

    # -- config and state ----------------------------------------------------------------------------------
    def config(self) -> dict:
        """Plain-JSON description: everything needed to rebuild the module (weights come from the files, whose
        sha256 is recorded and checked again by :meth:`from_config`)."""
        bbs = []
        for spec in self.backbone_names:
            bb = self._backbones[spec]
            bbs.append({"spec": spec, "weights": bb.weights_path, "sha256": bb.weights_sha256,
                        "loss": self._losses[spec]})
        return {"format": CONFIG_FORMAT, "backbones": bbs, "augment": self.augment,
                "diffaug_policy": self.diffaug_policy, "ada_target": self.ada_target,
                "ada_interval": self.ada_interval, "ada_kimg": self.ada_kimg, "c_dim": self.c_dim,
                "seed": self.seed}

    @classmethod
    def from_config(cls, config: Union[Mapping, str, pathlib.Path], device=None) -> "VisionAidedDiscriminator":
        """Rebuild from :meth:`config` (a dict, or a JSON file path); each weight file must have the recorded
        sha256. Load the heads and ADA state afterwards with ``load_state_dict``."""
        if not isinstance(config, Mapping):
            config = json.loads(pathlib.Path(config).read_text())
        if config.get("format") != CONFIG_FORMAT:
            raise ValueError(f"not a vision-aided discriminator config (format {config.get('format')!r}, expected "
                             f"{CONFIG_FORMAT!r})")
        bbs = config["backbones"]
        vd = cls((), augment=config["augment"], c_dim=int(config["c_dim"]), seed=int(config["seed"]), device=device,
                 diffaug_policy=config.get("diffaug_policy", DEFAULT_DIFFAUG),
                 ada_target=float(config.get("ada_target", 0.3)), ada_interval=int(config.get("ada_interval", 4)),
                 ada_kimg=float(config.get("ada_kimg", 500.0)))
        for b in bbs:
            info, _ = parse_spec(b["spec"])
            # backbones with their own loader (efficientnet-lite0: the pip package) locate their file again
            weights = b.get("weights") if info.loader is None else None
            vd.add_backbone(b["spec"], weights=weights, loss=b["loss"], expected_sha256=b.get("sha256"))
        return vd

    def get_extra_state(self) -> dict:
        return {"format": CONFIG_FORMAT, "backbones": list(self.backbone_names),
                "ada": {s: self._ada[s].state_dict() for s in self.backbone_names if s in self._ada}}

    def set_extra_state(self, state: dict) -> None:
        names = list(state.get("backbones", []))
        if names != self.backbone_names:
            raise ValueError(f"vision-aided state is for backbones {names}, this module has {self.backbone_names}; "
                             "rebuild it with from_config (or add the same backbones in the same order) first")
        for spec, s in state.get("ada", {}).items():
            if spec not in self._ada:
                raise ValueError(f"vision-aided state has ADA state for {spec!r} but augment={self.augment!r}")
            self._ada[spec].load_state_dict(s)

    def extra_repr(self) -> str:
        parts = [f"{s} ({self._losses[s]})" for s in self.backbone_names]
        return f"backbones=[{', '.join(parts)}], augment={self.augment!r}, c_dim={self.c_dim}, seed={self.seed}"


def recipe_loss(spec: str, augment: str, probe_accuracy: Optional[float] = None) -> str:
    """The loss vision-aided-gan's progressive recipe gives a backbone added after a probe with this accuracy."""
    info, output = parse_spec(spec)
    if probe_accuracy is not None and not (0 <= probe_accuracy <= 1 and math.isfinite(probe_accuracy)):
        raise ValueError(f"probe_accuracy must be in [0, 1], got {probe_accuracy!r}")
    return default_loss(info.outputs[output].head == "multilevel", augment, probe_accuracy)

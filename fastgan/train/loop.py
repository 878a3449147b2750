"""The training loop: ``train(options)`` runs (or resumes) one StyleGAN2-style run in a run directory.

Per step: phases Gmain, Greg (every ``pl_interval`` steps, when path-length regularisation is on), Dmain and Dreg
(every ``r1_interval`` steps; folded into Dmain when the interval is 1). Each phase runs its rounds of
``batch_gpu`` samples, all-reduces one flat gradient buffer, applies the non-finite policy and steps Adam.
Then G_ema, w_avg, path-length mean and the ADA p are updated from global (all-process) quantities; the vision-aided
heads' per-backbone ADA controllers also tick once per step, from the real-logit signs of all its rounds.

Randomness is counter-based (:mod:`fastgan.train.rng`) and keyed by (seed, step, phase, global sample index), the
data order by (seed, position) (:mod:`fastgan.train.data`): a resumed run, or a run on a different number of
processes at the same ``--batch`` and ``--batch-gpu``, sees the same numbers. A training state holds everything
else that changes (weights, Adam moments, G_ema, augmentation p and controller sums, counters, pl_mean).

Transfer (``fastgan transfer``, ``options.method``): the networks start from a source snapshot
(:func:`fastgan.transfer.transfer_networks`), and a :class:`~fastgan.transfer.FreezePolicy` decides which parameters
train: only those are enabled in a phase, in the optimizers and in the gradient all-reduce. AdaFM's gamma/beta
are in the G optimizer from the start but get gradients only from ``adafm_unfreeze`` kimg on (Adam skips a
parameter without a gradient), so resuming on either side of the unfreeze point rebuilds the same optimizer.

Vision-aided D (``options.vision_aided``, METHODS.md §2.5): D loss += lambda * [L_vis(real) + L_vis(fake)] and G loss
+= lambda * L_vis(G(z)) with lambda = 0 during the warm-up; the heads' Adam (betas 0, 0.99) steps in the D main
phase. ``auto`` adds backbones progressively: when the schedule is due, the remaining candidates are probed with
G_ema samples against reals and the winner is added. Heads, their optimizer, per-backbone ADA state and the
schedule are part of the training state.

Non-finite gradients (``--nonfinite``): ``skip`` drops that phase's update, ``sanitize`` zeroes NaN and clamps
Inf (StyleGAN2's behaviour), ``abort`` stops at once; every occurrence is counted in ``stats.jsonl``
(``Sanity/nonfinite``) and ``--nonfinite-limit`` consecutive bad steps stop the run with status ``failed``,
leaving the last good state in place. SIGINT/SIGTERM finish the current step, write a state and a snapshot,
mark the run ``interrupted`` and exit with 128 + the signal number.
"""
from __future__ import annotations

import copy
import json
import math
import os
import pathlib
import platform
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from .._io import atomic_path
from ..nn.checkpoint import network_record, save_snapshot
from ..nn.networks import Discriminator, Generator
from ..sampling.generate import to_uint8
from . import distributed as fdist
from . import loss as L
from . import rng
from .data import open_stream
from .options import RESUME_WHITELIST, TrainOptions, diff_options, format_diff, resolve
from .rundir import (RunFiles, create_run_dir, kimg_tag, matching_runs, read_json, read_latest, run_suffix,
                     write_json)

STATE_FORMAT = "fastgan-training-state"
STATE_VERSION = 1
PH_GMAIN, PH_GREG, PH_DMAIN, PH_DREG, PH_GRID, PH_PROBE = 1, 2, 3, 4, 9, 10


class NonFiniteError(RuntimeError):
    """Training stopped by the non-finite policy."""


class TrainingInterrupted(RuntimeError):
    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


@dataclass
class TrainResult:
    run_dir: pathlib.Path
    status: str
    cur_nimg: int
    exit_code: int = 0


# ----------------------------------------------------------------------------------------------------------------
# statistics: per-tick sums of scalars, reduced over processes
# ----------------------------------------------------------------------------------------------------------------


class Stats:
    def __init__(self, device: torch.device):
        self.device = device
        self.acc: dict[str, Tensor] = {}

    def add(self, name: str, values: Tensor) -> None:
        v = values.detach().flatten().double()
        fin = torch.isfinite(v)
        v = torch.where(fin, v, torch.zeros_like(v))
        t = torch.stack([fin.sum().double(), v.sum(), v.square().sum()])
        if name in self.acc:
            self.acc[name] += t
        else:
            self.acc[name] = t

    def reduce(self, d: fdist.Dist, names: list[str]) -> dict[str, dict]:
        """Mean/std per stat over all processes; ``names`` must be the same list on every process."""
        buf = torch.stack([self.acc.get(n, torch.zeros(3, dtype=torch.float64, device=self.device))
                           for n in names]) if names else torch.zeros(0, 3, dtype=torch.float64, device=self.device)
        fdist.all_reduce_(d, buf)
        out = {}
        for n, (cnt, s, sq) in zip(names, buf.tolist()):
            if cnt > 0:
                mean = s / cnt
                out[n] = {"num": int(cnt), "mean": mean, "std": math.sqrt(max(sq / cnt - mean * mean, 0.0))}
        self.acc.clear()
        return out


STAT_NAMES = ["Loss/G/loss", "Loss/G/pl_penalty", "Loss/D/loss", "Loss/D/r1_penalty", "Loss/scores/real",
              "Loss/scores/fake", "Loss/pl_lengths"]
VISION_STAT_NAMES = ["Loss/vision/G", "Loss/vision/D"]


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _data_fingerprint(data: str) -> Optional[str]:
    """Cheap content fingerprint of a dataset: member names, sizes and CRCs of a zip (or names/sizes/mtimes)."""
    import hashlib
    import zipfile

    p = pathlib.Path(data)
    h = hashlib.sha256()
    if p.is_file() and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            for info in sorted(z.infolist(), key=lambda i: i.filename):
                h.update(f"{info.filename}\0{info.file_size}\0{info.CRC}\n".encode())
        return "zip:" + h.hexdigest()[:32]
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            st = f.stat()
            h.update(f"{f.relative_to(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return "dir:" + h.hexdigest()[:32]
    return None


def _env_info(d: fdist.Dist) -> dict:
    import fastgan
    from ..ops import dispatch_report

    info = {"fastgan": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.version.cuda, "platform": platform.platform(), "hostname": platform.node(),
            "world_size": d.world_size, "device": str(d.device), "build": fastgan.build_info(),
            "kernels": dispatch_report()}
    if d.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(d.device)
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info


def _save_grid(path: pathlib.Path, images: Tensor, grid: tuple[int, int]) -> None:
    """uint8 or [-1, 1] float images (N, C, H, W) -> one PNG of gw x gh tiles, written atomically."""
    from PIL import Image

    gw, gh = grid
    x = images.detach().cpu()
    if x.dtype != torch.uint8:
        x = torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2)
    n, c, h, w = x.shape
    x = x[: gw * gh]
    if x.shape[0] < gw * gh:
        x = torch.cat([x, torch.zeros(gw * gh - x.shape[0], c, h, w, dtype=torch.uint8)])
    x = x.reshape(gh, gw, c, h, w).permute(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c).numpy()
    img = Image.fromarray(x[:, :, 0] if c == 1 else x, "L" if c == 1 else "RGB")
    with atomic_path(path) as tmp:
        img.save(tmp, format="png")


def _grid_size(res: int) -> tuple[int, int]:
    return int(np.clip(1920 // res, 4, 16)), int(np.clip(1080 // res, 4, 9))


def _build(opts: TrainOptions, channels: int, label_dim: int) -> tuple[Generator, Discriminator]:
    adafm = None
    if opts.method == "adafm":
        from ..transfer.adafm import adafm_resolutions_for

        adafm = adafm_resolutions_for(opts.resolution, opts.adafm_front_res)
    G = Generator(z_dim=opts.z_dim, c_dim=label_dim, w_dim=opts.w_dim, img_resolution=opts.resolution,
                  img_channels=channels, mapping_layers=opts.map, channel_base=opts.cbase, channel_max=opts.cmax,
                  num_fp16_res=opts.num_fp16_res, conv_clamp=opts.conv_clamp, adafm_resolutions=adafm)
    D = Discriminator(c_dim=label_dim, img_resolution=opts.resolution, img_channels=channels,
                      channel_base=opts.cbase, channel_max=opts.cmax, num_fp16_res=opts.num_fp16_res,
                      conv_clamp=opts.conv_clamp, mbstd_group_size=opts.mbstd)
    return G, D


def _adam(params, lr: float, reg_interval: int) -> torch.optim.Adam:
    ratio = reg_interval / (reg_interval + 1) if reg_interval > 1 else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------------------------


class Trainer:
    """One run. Build with :func:`train`; the attributes are public for tests and embedding."""

    def __init__(self, opts: TrainOptions, d: fdist.Dist, stream, run_dir: pathlib.Path, quiet: bool):
        self.opts, self.d, self.stream, self.run_dir = opts, d, stream, run_dir
        self.files = RunFiles(run_dir, quiet=quiet) if d.is_main else None
        self.device = d.device
        o = opts
        self.G, self.D = _build(o, stream.channels, stream.label_dim)
        self.G.to(self.device).train().requires_grad_(False)
        self.D.to(self.device).train().requires_grad_(False)
        self.G_ema = copy.deepcopy(self.G).eval()
        from ..transfer.freeze import make_policy

        self.policy = make_policy(self.G, self.D, o.method, freeze_d=o.freeze_d or 0, front_res=o.adafm_front_res,
                                  unfreeze_nimg=(int(round(o.adafm_unfreeze * 1000)) if o.method == "adafm"
                                                 else None))
        self._d_params = self.policy.params(self.D, self.policy.d_trainable)
        self.opt_G = _adam(self.policy.params(self.G, self.policy.g_optimized()), o.glr,
                           o.pl_interval if o.pl_weight > 0 else 1)
        self.opt_D = _adam(self._d_params, o.dlr, o.r1_interval if o.gamma > 0 else 1)
        self.vision = self.opt_vis = self.schedule = None
        if o.vision_aided:
            from ..nn.vision import ProgressiveSchedule, VisionAidedDiscriminator

            if stream.channels != 3:
                raise ValueError(f"--vision-aided needs RGB images; the data has {stream.channels} channel(s)")

            auto = o.vision_aided == "auto"
            ada = {k: v for k, v in (("ada_target", o.vision_ada_target), ("ada_kimg", o.vision_ada_kimg))
                   if v is not None}
            self.vision = VisionAidedDiscriminator(() if auto else tuple(o.vision_aided.split("+")),
                                                   weights=o.vision_weights or None, augment=o.vision_augment,
                                                   c_dim=stream.label_dim, seed=o.seed, device=self.device, **ada)
            self._vision_ada_reduce()
            if auto:
                self.schedule = ProgressiveSchedule(o.vision_candidates.split("+"), warmup_kimg=o.vision_warmup,
                                                    max_backbones=o.probe_select, stage_kimg=o.vision_stage_kimg)
            self._rebuild_vision_optimizer()
        self.augment = None
        self.ada = None
        if o.aug == "ada":
            from .augment import AdaController, AdaptiveAugment

            self.augment = AdaptiveAugment(preset="bgc").to(self.device)
            self.ada = AdaController(o.batch, target=o.ada_target, interval=o.ada_interval, speed_kimg=o.ada_kimg)
        self.pl_mean = torch.zeros([], dtype=torch.float64, device=self.device)
        self.cur_nimg = 0
        self.step = 0
        self.cur_tick = 0
        self.tick_start_nimg = 0
        self.nonfinite_total = 0
        self.nonfinite_run = 0  # consecutive steps with a non-finite phase
        self.stats = Stats(self.device)
        self._stop_signal: Optional[int] = None

    # ---- state ---------------------------------------------------------------------------------------------

    def _ada_controllers(self) -> list:
        """(where, controller) of every ADA controller: the main D's, then one per vision backbone in order."""
        out = [("main", self.ada)] if self.ada is not None else []
        if self.vision is not None:
            out += [(spec, self.vision._ada[spec]) for spec in self.vision.backbone_names if spec in self.vision._ada]
        return out

    def global_ada_pending(self) -> dict:
        """{where: [sum of signs, count]} accumulated since each ADA controller's last update, summed over all
        processes (a collective: every process calls it). A training state must hold these global sums: each
        process only has its own share, and a resumed run restarts rank 0 with the sums and the others at 0."""
        ctrls = self._ada_controllers()
        if not ctrls:
            return {}
        buf = torch.stack([c.pending().to(self.device) for _, c in ctrls])
        fdist.all_reduce_(self.d, buf)
        return {where: [float(v) for v in row] for (where, _), row in zip(ctrls, buf.cpu().tolist())}

    def state_dict(self, ada_pending: Optional[dict] = None) -> dict:
        """Everything a resume needs. ``ada_pending`` (from :meth:`global_ada_pending`) replaces each ADA
        controller's pending sums; without it they are this process's own, which is the whole of them only in a
        single-process run (``save`` passes the global sums)."""
        st = self._state_dict()
        for where, pending in (ada_pending or {}).items():
            if where == "main":
                st["augment"]["controller"]["pending"] = list(pending)
            else:
                st["vision"]["state"]["_extra_state"]["ada"][where]["pending"] = list(pending)
        return st

    def _state_dict(self) -> dict:
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "fastgan_version": __version__,
                "options": self.opts.to_dict(),
                "networks": {"G": network_record(self.G), "D": network_record(self.D),
                             "G_ema": network_record(self.G_ema)},
                "optimizers": {"G": self.opt_G.state_dict(), "D": self.opt_D.state_dict()},
                "vision": None if self.vision is None else {
                    "config": self.vision.config(), "state": self.vision.state_dict(),
                    "optimizer": self.opt_vis.state_dict() if self.opt_vis is not None else None,
                    "schedule": self.schedule.state_dict() if self.schedule is not None else None},
                "augment": {"pipe": self.augment.state_dict() if self.augment is not None else None,
                            "controller": self.ada.state_dict() if self.ada is not None else None},
                "counters": {"cur_nimg": self.cur_nimg, "step": self.step, "cur_tick": self.cur_tick,
                             "tick_start_nimg": self.tick_start_nimg, "nonfinite_total": self.nonfinite_total,
                             "nonfinite_run": self.nonfinite_run},
                "pl_mean": self.pl_mean.detach().cpu(), "rng": _rng_state()}

    def load_state_dict(self, st: dict) -> None:
        """Restore a :meth:`state_dict`. Its ADA pending sums are global: rank 0 takes them, the other processes
        start from 0, so the next all-reduced update sees exactly the sums of the uninterrupted run."""
        if self.d.rank != 0:
            st = copy.deepcopy(st)
            if st["augment"]["controller"] is not None:
                st["augment"]["controller"]["pending"] = [0.0, 0.0]
            if st.get("vision") is not None:
                for ada in st["vision"]["state"].get("_extra_state", {}).get("ada", {}).values():
                    ada["pending"] = [0.0, 0.0]
        for name, mod in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            mod.load_state_dict(st["networks"][name]["state_dict"])
        self.opt_G.load_state_dict(st["optimizers"]["G"])
        self.opt_D.load_state_dict(st["optimizers"]["D"])
        vs = st.get("vision")
        if (vs is None) != (self.vision is None):
            raise ValueError("the training state and the options disagree about the vision-aided discriminator")
        if vs is not None:
            from ..nn.vision import VisionAidedDiscriminator

            self.vision = VisionAidedDiscriminator.from_config(vs["config"], device=self.device)
            self.vision.load_state_dict(vs["state"])
            self._vision_ada_reduce()
            self.opt_vis = None
            self._rebuild_vision_optimizer()
            if (vs["optimizer"] is None) != (self.opt_vis is None):
                raise ValueError("the training state's vision-aided optimizer does not match its heads")
            if self.opt_vis is not None:
                self.opt_vis.load_state_dict(vs["optimizer"])
            if self.schedule is not None:
                self.schedule.load_state_dict(vs["schedule"])
        if self.augment is not None:
            self.augment.load_state_dict(st["augment"]["pipe"])
            self.ada.load_state_dict(st["augment"]["controller"])
        c = st["counters"]
        self.cur_nimg, self.step, self.cur_tick = c["cur_nimg"], c["step"], c["cur_tick"]
        self.tick_start_nimg, self.nonfinite_total, self.nonfinite_run = (c["tick_start_nimg"], c["nonfinite_total"],
                                                                          c["nonfinite_run"])
        self.pl_mean = st["pl_mean"].to(self.device, torch.float64)
        _set_rng_state(st["rng"])

    def save(self, reason: str) -> None:
        """Network snapshot + training state + latest.json (in that order, each atomic), rank 0 writes."""
        if self.vision is not None:  # heads, spectral-norm vectors and per-backbone ADA p
            fdist.check_consistency(self.d, self.vision, "vision")
        for name, mod in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            fdist.check_consistency(self.d, mod, name)
            bad = [n for n, p in mod.named_parameters() if not torch.isfinite(p).all()]
            if bad:
                raise NonFiniteError(f"{name} has non-finite weights ({bad[:3]}...); not saving over the last "
                                     "good state")
        ada_pending = self.global_ada_pending()  # a collective, like the checks above
        if self.d.is_main:
            tag = kimg_tag(self.cur_nimg)
            snap = f"network-snapshot-{tag}.pt"
            state = f"training-state-{tag}.pt"
            save_snapshot(self.run_dir / snap, {"G": self.G, "G_ema": self.G_ema, "D": self.D},
                          training_set=self.stream.describe(), kimg=self.cur_nimg / 1000,
                          extra={"run_dir": self.run_dir.name, "augment_p": self._aug_p(), "reason": reason,
                                 "transfer": self._transfer_record(),
                                 "vision": self.vision.config() if self.vision is not None else None})
            with atomic_path(self.run_dir / state) as tmp:
                torch.save(self.state_dict(ada_pending), tmp)
            write_json(self.run_dir / "latest.json", {"state": state, "snapshot": snap, "kimg": self.cur_nimg / 1000,
                                                      "cur_nimg": self.cur_nimg, "step": self.step})
            self._prune_states(keep=state)
        if self.d.enabled:
            torch.distributed.barrier()

    def _prune_states(self, keep: str) -> None:
        states = sorted(self.run_dir.glob("training-state-*.pt"), key=lambda p: p.stat().st_mtime)
        old = [p for p in states if p.name != keep]
        for p in old[: max(0, len(states) - self.opts.keep_states)]:
            p.unlink()

    def _aug_p(self) -> float:
        return float(self.augment.p) if self.augment is not None else 0.0

    def _transfer_record(self) -> Optional[dict]:
        """What a snapshot records about the transfer recipe (None for plain training)."""
        o = self.opts
        if o.method is None:
            return None
        return {"method": o.method, "source": o.transfer, "freeze_d": o.freeze_d,
                "adafm_front_res": o.adafm_front_res, "adafm_unfreeze_kimg": o.adafm_unfreeze,
                "adafm_new_front": o.adafm_new_front,
                "adafm_unfrozen": self.policy.adafm_active(self.cur_nimg) if o.method == "adafm" else None}

    # ---- trainable parameters and the vision-aided discriminator ---------------------------------------------

    def g_params(self) -> list[nn.Parameter]:
        """The G parameters that train at this step (the freeze policy at ``cur_nimg``), in module order."""
        return self.policy.params(self.G, self.policy.g_names(self.cur_nimg))

    def d_params(self) -> list[nn.Parameter]:
        return list(self._d_params)

    def _vision_ada_reduce(self) -> None:
        """Per-backbone ADA from the statistics of all processes (a no-op sum in one process)."""
        if self.d.enabled:
            self.vision.ada_reduce = lambda t: fdist.all_reduce_(self.d, t.to(self.device))

    def _rebuild_vision_optimizer(self) -> None:
        """Adam over all head parameters (one group, lr = --dlr, betas (0, 0.99), eps 1e-8), keeping the moments of
        heads the previous optimizer had: built the same way at a backbone addition and at a resume."""
        params = list(self.vision.head_parameters())
        for p in params:
            p.requires_grad_(False)
        if not params:  # progressive ensemble before its first backbone
            self.opt_vis = None
            return
        opt = torch.optim.Adam(params, lr=self.opts.dlr, betas=(0.0, 0.99), eps=1e-8)
        if self.opt_vis is not None:
            for p in params:
                if p in self.opt_vis.state:
                    opt.state[p] = self.opt_vis.state[p]
        self.opt_vis = opt

    def lambda_vis(self) -> float:
        """Weight of the vision-aided losses at ``cur_nimg``: 0 without backbones or during the warm-up, else 1."""
        if self.vision is None or not self.vision.backbone_names:
            return 0.0
        if self.schedule is not None:
            return float(self.schedule.lambda_vis(self.cur_nimg))
        return 0.0 if self.cur_nimg < self.opts.vision_warmup * 1000 else 1.0

    @torch.no_grad()
    def probe_images(self) -> tuple[Tensor, Tensor]:
        """(reals, fakes) in [-1, 1] for the linear probe: the first images of the dataset (fixed), and as many
        G_ema samples drawn from counter-based latents keyed by this step."""
        o = self.opts
        n = o.probe_images
        if hasattr(self.stream, "dataset"):
            n = min(n, len(self.stream.dataset))
        reals = self.stream.grid_reals(n).to(self.device)
        reals = reals.float() / 127.5 - 1 if reals.dtype == torch.uint8 else reals.float()
        idx = torch.arange(n, device=self.device)
        z = rng.normal(rng.sample_keys(rng.derive(o.seed, PH_PROBE, self.step), idx), o.z_dim)
        c = self.stream.gen_labels(rng.sample_keys(rng.derive(o.seed, PH_PROBE, self.step, 1), idx))
        fakes = torch.cat([self.G_ema(z[i: i + 32], None if c is None else c[i: i + 32], noise_mode="const")
                           for i in range(0, n, 32)])
        return reals, fakes

    def add_vision_backbone(self) -> tuple[str, float, list]:
        """Probe the schedule's remaining candidates (rank 0), add the winner on every process, record it."""
        from ..nn.vision import rank_backbones

        weights = self.opts.vision_weights or {}
        obj = [None]
        if self.d.is_main:
            reals, fakes = self.probe_images()
            ranking = [(str(n), float(a)) for n, a in rank_backbones(list(self.schedule.remaining()), reals, fakes,
                                                                      weights=weights or None)]
            obj = [ranking]
        if self.d.enabled:
            torch.distributed.broadcast_object_list(obj, src=0)
        ranking = obj[0]
        name, acc = ranking[0]
        self.vision.add_backbone(name, weights=weights.get(name))
        self.schedule.record_added(name, acc, self.cur_nimg)
        self._rebuild_vision_optimizer()
        fdist.broadcast_module(self.d, self.vision)
        if self.files:
            probe = ", ".join(f"{n} {a:.3f}" for n, a in ranking)
            self.files.log(f"vision-aided: linear probe at kimg {self.cur_nimg / 1000:.3f} ({probe}); added {name}; "
                           f"backbones now {'+'.join(self.vision.backbone_names)}")
        return name, acc, ranking

    # ---- one step ------------------------------------------------------------------------------------------

    def _keys(self, phase: int, purpose: int, idx: Tensor) -> Tensor:
        return rng.sample_keys(rng.derive(self.opts.seed, self.step, phase, purpose), idx)

    def _run_D(self, img: Tensor, c: Optional[Tensor], keys: Tensor) -> Tensor:
        o = self.opts
        if o.aug == "diffaug":
            from .augment import diffaugment

            img = diffaugment(img, o.diffaug_policy, keys)
        elif self.augment is not None:
            img = self.augment(img, keys)
        return self.D(img, c)

    def _gen(self, phase: int, idx: Tensor, grad: bool):
        """z, c, ws and images for global sample indices ``idx`` of this step's ``phase``."""
        o = self.opts
        z = rng.normal(self._keys(phase, 0, idx), o.z_dim)
        z2 = rng.normal(self._keys(phase, 1, idx), o.z_dim)
        c = self.stream.gen_labels(self._keys(phase, 2, idx))
        with nullcontext() if grad else torch.no_grad():
            ws = L.generator_ws(self.G, z, c, self._keys(phase, 3, idx), o.style_mixing, z2)
            img = self.G.synthesis(ws, noise_keys=self._keys(phase, 4, idx))
        return c, ws, img

    def _finish_phase(self, groups: list[tuple[list[nn.Parameter], torch.optim.Optimizer]]) -> bool:
        """All-reduce (one flat buffer over every group's parameters), non-finite policy, Adam steps, then the
        parameters go back to ``requires_grad=False``. Returns False when the phase had non-finite gradients."""
        params = [p for ps, _ in groups for p in ps]
        flat = fdist.all_reduce_grads(self.d, params)
        ok = True
        if flat is not None and not bool(torch.isfinite(flat).all()):
            ok = False
            self.nonfinite_total += 1
            self.stats.add("Sanity/nonfinite", torch.ones(1, device=self.device))
            policy = self.opts.nonfinite
            if policy == "abort":
                raise NonFiniteError(f"non-finite gradients at step {self.step} (kimg {self.cur_nimg / 1000:.3f}); "
                                     "--nonfinite abort")
            if policy == "sanitize":
                for p in params:
                    if p.grad is not None:
                        torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
                for _, opt in groups:
                    opt.step()
        else:
            for _, opt in groups:
                opt.step()
        for ps, opt in groups:
            opt.zero_grad(set_to_none=True)
            for p in ps:
                p.requires_grad_(False)
        return ok

    @staticmethod
    def _enable(params: list[nn.Parameter]) -> list[nn.Parameter]:
        for p in params:
            p.requires_grad_(True)
        return params

    def run_step(self, reals: list[tuple[Tensor, Tensor]]) -> None:
        o, d = self.opts, self.d
        B, bg = o.batch, o.batch_gpu
        per = B // d.world_size
        base = self.step * B + d.rank * per
        rounds = [torch.arange(base + r * bg, base + (r + 1) * bg, device=self.device) for r in range(per // bg)]
        do_greg = o.pl_weight > 0 and self.step % o.pl_interval == 0
        do_r1 = o.gamma > 0 and self.step % o.r1_interval == 0
        r1_in_main = o.r1_interval == 1
        step_ok = True
        if self.schedule is not None and self.schedule.due(self.cur_nimg):
            self.add_vision_backbone()
        lam = self.lambda_vis()
        g_params = self.g_params()

        # G main
        self._enable(g_params)
        w_sum = torch.zeros(o.w_dim, dtype=torch.float64, device=self.device)
        for idx in rounds:
            c, ws, img = self._gen(PH_GMAIN, idx, grad=True)
            w_sum += ws[:, 0].detach().double().sum(dim=0)
            logits = self._run_D(img, c, self._keys(PH_GMAIN, 5, idx))
            loss = L.g_main(logits, B)
            if lam:
                vis = self.vision.loss_g(img, c, step=self.step, index=idx)
                loss = loss + vis * (lam * idx.numel() / B)
                self.stats.add("Loss/vision/G", vis.detach().reshape(1))
            loss.backward()
            self.stats.add("Loss/G/loss", torch.nn.functional.softplus(-logits))
            self.stats.add("Loss/scores/fake", logits)
        step_ok &= self._finish_phase([(g_params, self.opt_G)])
        w_mean = fdist.all_reduce_(d, w_sum) / B
        with torch.no_grad():
            self.G.mapping.w_avg.copy_(w_mean.float().lerp(self.G.mapping.w_avg, self.G.mapping.w_avg_beta))

        # G path-length regularisation
        if do_greg:
            self._enable(g_params)
            shrink = max(1, bg // 2)
            n_pl = len(rounds) * shrink * d.world_size
            pl_sum = torch.zeros([], dtype=torch.float64, device=self.device)
            for idx in rounds:
                idx = idx[:shrink]
                z = rng.normal(self._keys(PH_GREG, 0, idx), o.z_dim)
                z2 = rng.normal(self._keys(PH_GREG, 1, idx), o.z_dim)
                c = self.stream.gen_labels(self._keys(PH_GREG, 2, idx))
                ws = L.generator_ws(self.G, z, c, self._keys(PH_GREG, 3, idx), o.style_mixing, z2)
                nkeys = self._keys(PH_GREG, 4, idx)
                noise = rng.normal(self._keys(PH_GREG, 6, idx), (self.G.img_channels, o.resolution, o.resolution))
                lengths = L.path_lengths(lambda w: self.G.synthesis(w, noise_keys=nkeys), ws, noise)
                penalty = (lengths - self.pl_mean.float()).square()
                (penalty.sum() * (o.pl_weight * o.pl_interval / n_pl)).backward()
                pl_sum += lengths.detach().double().sum()
                self.stats.add("Loss/pl_lengths", lengths)
                self.stats.add("Loss/G/pl_penalty", penalty)
            step_ok &= self._finish_phase([(g_params, self.opt_G)])
            pl_batch_mean = fdist.all_reduce_(d, pl_sum) / n_pl
            if torch.isfinite(pl_batch_mean):
                self.pl_mean = self.pl_mean.lerp(pl_batch_mean, 0.01)

        # D main (with R1 when it runs every step; the vision-aided heads train here)
        d_groups = [(self._enable(self.d_params()), self.opt_D)]
        if lam:
            d_groups.append((self._enable(list(self.vision.head_parameters())), self.opt_vis))
        ada_signs = []
        for (real, real_c), idx in zip(reals, rounds):
            c, _, img = self._gen(PH_DMAIN, idx, grad=False)
            logits_fake = self._run_D(img, c, self._keys(PH_DMAIN, 5, idx))
            loss = L.d_fake(logits_fake, B)
            real_img = (real.to(torch.float32) / 127.5 - 1) if real.dtype == torch.uint8 else real.float()
            real_c = real_c if self.stream.label_dim else None
            real_in = real_img.detach().requires_grad_(do_r1 and r1_in_main)
            logits_real = self._run_D(real_in, real_c, self._keys(PH_DMAIN, 6, idx))
            loss = loss + L.d_real(logits_real, B)
            if do_r1 and r1_in_main:
                pen = L.r1_penalty(real_in, logits_real)
                loss = loss + pen.sum() * (o.gamma / 2 / B)
                self.stats.add("Loss/D/r1_penalty", pen)
            if lam:
                vis = self.vision.loss_d(real_img, img, real_c, c, step=self.step, index=idx, index_fake=idx,
                                         ada_tick=False)
                loss = loss + vis * (lam * idx.numel() / B)
                self.stats.add("Loss/vision/D", vis.detach().reshape(1))
            loss.backward()
            self.stats.add("Loss/D/loss", torch.nn.functional.softplus(logits_fake) +
                           torch.nn.functional.softplus(-logits_real))
            self.stats.add("Loss/scores/real", logits_real)
            ada_signs.append(logits_real.detach())
        step_ok &= self._finish_phase(d_groups)

        # D lazy R1
        if do_r1 and not r1_in_main:
            d_params = self._enable(self.d_params())
            for (real, real_c), idx in zip(reals, rounds):
                real_img = (real.to(torch.float32) / 127.5 - 1) if real.dtype == torch.uint8 else real.float()
                real_c = real_c if self.stream.label_dim else None
                real_in = real_img.detach().requires_grad_(True)
                logits = self._run_D(real_in, real_c, self._keys(PH_DREG, 6, idx))
                pen = L.r1_penalty(real_in, logits)
                (pen.sum() * (o.gamma / 2 * o.r1_interval / B) + logits.sum() * 0).backward()
                self.stats.add("Loss/D/r1_penalty", pen)
            step_ok &= self._finish_phase([(d_params, self.opt_D)])

        # G_ema
        with torch.no_grad():
            ema_nimg = o.ema_kimg * 1000
            if o.ema_rampup > 0:
                ema_nimg = min(ema_nimg, self.cur_nimg * o.ema_rampup)
            beta = 0.5 ** (B / max(ema_nimg, 1e-8))
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

        # ADA
        if self.ada is not None:
            for s in ada_signs:
                self.ada.accumulate(s)
            if self.ada.tick():
                pending = fdist.all_reduce_(d, self.ada.pending().to(self.device))
                self.augment.p.fill_(self.ada.update(pending))
        if lam:  # the vision heads' ADA: one tick per D step, from the signs of all its rounds and processes
            self.vision.ada_step()

        self.cur_nimg += B
        self.step += 1
        self.nonfinite_run = 0 if step_ok else self.nonfinite_run + 1
        if self.nonfinite_run >= o.nonfinite_limit:
            raise NonFiniteError(f"{self.nonfinite_run} consecutive steps with non-finite gradients (limit "
                                 f"--nonfinite-limit {o.nonfinite_limit}); stopping with the last good state kept")

    # ---- images --------------------------------------------------------------------------------------------

    def grid(self) -> tuple[tuple[int, int], Tensor, Optional[Tensor]]:
        gw, gh = _grid_size(self.opts.resolution)
        idx = torch.arange(gw * gh, device=self.device)
        keys = rng.sample_keys(rng.derive(self.opts.seed, PH_GRID), idx)
        z = rng.normal(keys, self.opts.z_dim)
        c = self.stream.gen_labels(rng.sample_keys(rng.derive(self.opts.seed, PH_GRID, 1), idx))
        return (gw, gh), z, c

    @torch.no_grad()
    def save_fakes(self, name: str) -> None:
        if not self.d.is_main:
            return
        size, z, c = self.grid()
        imgs = [self.G_ema(z[i: i + 32], None if c is None else c[i: i + 32], noise_mode="const")
                for i in range(0, z.shape[0], 32)]
        _save_grid(self.run_dir / name, torch.cat(imgs), size)


# ----------------------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------------------


def _find_resume(opts: TrainOptions, suffix: str, log) -> tuple[Optional[pathlib.Path], Optional[pathlib.Path]]:
    """(run dir, state file) to continue, or (None, None) to start fresh."""
    if opts.resume is None:
        return None, None
    if opts.resume == "auto":
        runs = matching_runs(opts.outdir, suffix)
        if len(runs) > 1:
            listing = "\n".join(f"  {p}" for p in runs)
            raise ValueError(f"--resume auto found {len(runs)} matching runs in {opts.outdir}:\n{listing}\n"
                             "pass --resume with the run directory or training-state file to continue")
        if not runs:
            log(f"--resume auto: no earlier run matching '{suffix}' in {opts.outdir}; starting a new run")
            return None, None
        latest = read_latest(runs[0])
        if latest is None:
            log(f"--resume auto: {runs[0]} has no complete training state yet; starting a new run")
            return None, None
        return runs[0], runs[0] / latest["state"]
    path = pathlib.Path(opts.resume)
    if path.is_dir():
        latest = read_latest(path)
        if latest is None:
            raise FileNotFoundError(f"--resume {path}: the run directory has no latest.json (no complete state)")
        return path, path / latest["state"]
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: no such training-state file or run directory")
    if not path.name.startswith("training-state-"):
        raise ValueError(f"--resume takes a training-state-*.pt file or a run directory, got {path.name!r}; "
                         "to start a new run from a network snapshot use --transfer")
    return path.parent, path


def _load_state(path: pathlib.Path) -> dict:
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{str(path)!r} is not a readable training state ({type(exc).__name__}: {exc})") from None
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise ValueError(f"{str(path)!r} is not a fastgan training state")
    if st.get("version") != STATE_VERSION:
        raise ValueError(f"{str(path)!r} has training-state version {st.get('version')}; this fastgan reads "
                         f"{STATE_VERSION}")
    return st


def _status_line(t: "Trainer", tick_time: float, tick_nimg: int, total_nimg: int, start_time: float) -> str:
    o = t.opts
    sec_per_kimg = tick_time / max(tick_nimg / 1000, 1e-9)
    eta = max(total_nimg - t.cur_nimg, 0) / 1000 * sec_per_kimg
    if t.device.type == "cuda":
        mem = f"gpumem {torch.cuda.max_memory_allocated(t.device) / 2 ** 30:.2f}G"
    else:
        import resource

        mem = f"cpumem {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f}G"
    h, m = divmod(int(eta) // 60, 60)
    vision = ""
    if t.vision is not None:
        vision = (f"vision {'+'.join(t.vision.backbone_names) or '-'} lambda {t.lambda_vis():g}  " +
                  "".join(f"augment/{n} {p:.3f}  " for n, p in t.vision.ada_p().items()))
    return (f"tick {t.cur_tick:<4d} kimg {t.cur_nimg / 1000:<9.3f} img/s {tick_nimg / max(tick_time, 1e-9):<8.1f} "
            f"sec/kimg {sec_per_kimg:<8.2f} eta {h}h{m:02d}m  {mem}  augment {t._aug_p():.3f}  {vision}"
            f"nonfinite {t.nonfinite_total}  time {time.time() - start_time:.0f}s")


def train(opts: TrainOptions, *, device: Optional[str] = None, quiet: bool = False) -> TrainResult:
    """Run (or resume) training as described by ``opts``; every process of a torchrun launch calls this."""
    d = fdist.init(device, opts.timeout)
    try:
        return _train(opts, d, quiet)
    finally:
        fdist.shutdown(d)


def _train(opts: TrainOptions, d: fdist.Dist, quiet: bool) -> TrainResult:
    printer = (lambda s: None) if (quiet or not d.is_main) else print
    if not opts.outdir:
        raise ValueError("--outdir is required")
    data = opts.data
    if data and not data.startswith("synth:"):
        data = str(pathlib.Path(data).resolve())
        if not pathlib.Path(data).exists():
            raise FileNotFoundError(f"--data {opts.data}: no such dataset zip or folder")
    stream = open_stream(data, resolution=opts.resolution, seed=opts.seed, mirror=opts.mirror, cond=opts.cond,
                         device=d.device)
    opts = resolve(TrainOptions.from_dict({**opts.to_dict(), "data": data, "resolved": False}),
                   data_resolution=stream.resolution, world_size=d.world_size)
    options = opts.to_dict()
    options["data_fingerprint"] = _data_fingerprint(data) if not data.startswith("synth:") else None
    desc = opts.desc if opts.method is None else "-".join(x for x in (opts.method, opts.desc) if x)
    suffix = run_suffix(opts.cfg, stream.name, opts.batch, desc, d.world_size)
    if opts.dry_run:
        printer(json.dumps({"run_suffix": suffix, "options": options, "data": stream.describe()}, indent=2,
                           sort_keys=True, default=str))
        return TrainResult(pathlib.Path(opts.outdir), "dry-run", 0)

    torch.backends.cudnn.benchmark = not (opts.nobench or opts.deterministic)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if opts.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    run_dir, state_path = _find_resume(opts, suffix, printer)
    state = None
    if state_path is not None:
        state = _load_state(state_path)
        old = read_json(run_dir / "training_options.json")
        diff = diff_options(old, options)
        if diff:
            allowed = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(RESUME_WHITELIST - {"resume", "outdir"}))
            raise ValueError(f"cannot resume {run_dir}: options differ from the run's training_options.json "
                             f"(a resume may change only {allowed}):\n{format_diff(diff)}")
    elif d.is_main:
        run_dir = create_run_dir(opts.outdir, suffix)
    if d.enabled:  # every process learns the run dir rank 0 picked
        obj = [str(run_dir) if run_dir is not None else None]
        torch.distributed.broadcast_object_list(obj, src=0)
        run_dir = pathlib.Path(obj[0])

    torch.manual_seed(opts.seed)  # network initialisation (identical on every process)
    t = Trainer(opts, d, stream, run_dir, quiet)
    files = t.files
    if state is not None:
        t.load_state_dict(state)
        if files:
            dropped = files.truncate_stats(t.cur_nimg)
            files.log(f"resuming {run_dir.name} from {state_path.name} at kimg {t.cur_nimg / 1000:.3f}"
                      + (f" (dropped {dropped} stats lines written after that state)" if dropped else ""))
    else:
        if opts.transfer:
            _transfer(t, opts, files)
        fdist.broadcast_module(d, t.G)
        fdist.broadcast_module(d, t.D)
        fdist.broadcast_module(d, t.G_ema)
        if t.vision is not None:
            fdist.broadcast_module(d, t.vision)
        if files and opts.method is not None:
            files.log(t.policy.summary(t.G, t.D))
        if files:
            write_json(run_dir / "training_options.json", options)
            files.log(f"run directory {run_dir}")
            _save_grid(run_dir / "reals.png", stream.grid_reals(math.prod(_grid_size(opts.resolution))),
                       _grid_size(opts.resolution))
            t.save_fakes("fakes_init.png")
    if files:
        files.status("running", kimg=t.cur_nimg / 1000)
        write_json(run_dir / "env.json", _env_info(d))
    return _loop(t, files, state_path is not None)


def _transfer(t: Trainer, opts: TrainOptions, files) -> None:
    """Load the --transfer / --source snapshot into the new run's networks and log the transfer table."""
    from ..nn.checkpoint import load_snapshot
    from ..transfer.recipe import transfer_networks
    from ..transfer.weights import summary_table

    blob = load_snapshot(opts.transfer)
    reports = transfer_networks({"G": t.G, "D": t.D, "G_ema": t.G_ema}, blob, allow_partial=opts.allow_partial,
                                new_front=opts.adafm_new_front, front_res=opts.adafm_front_res,
                                source=f"--transfer {opts.transfer}")
    if files:
        files.log(f"transfer from {opts.transfer}:\n{summary_table(reports)}")
        for name, rep in reports.items():
            files.log(f"transfer {name}: {len(rep.loaded)} tensors loaded" +
                      (f", {len(rep.kept)} kept at their initial value" if rep.kept else "") +
                      ("" if rep.complete else f"; partial:\n{rep.table()}"))


def _loop(t: Trainer, files: Optional[RunFiles], resumed: bool) -> TrainResult:
    o, d = t.opts, t.d
    total = int(round(o.kimg * 1000))
    start_time = time.time()
    tick_time0 = time.time()
    tick_nimg0 = t.cur_nimg
    start_step = t.step

    old_handlers = {}

    def on_signal(signum, frame):
        t._stop_signal = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old_handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread
            pass

    bar = None
    show_bar = o.progress if o.progress is not None else sys.stdout.isatty()
    if files and show_bar:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=min(t.cur_nimg, total), unit="img", dynamic_ncols=True, leave=False)

    rounds = o.batch // d.world_size // o.batch_gpu
    batches = t.stream.batches(batch=o.batch, batch_gpu=o.batch_gpu, rank=d.rank, world_size=d.world_size,
                               start_step=t.step, workers=o.workers, device=t.device)
    status, code = "finished", 0
    try:
        if files and not resumed and t.cur_nimg >= total:
            files.log("nothing to do: --kimg is already reached")
        while t.cur_nimg < total:
            reals = [next(batches) for _ in range(rounds)]
            t.run_step(reals)
            if bar is not None:
                bar.update(o.batch)
            signum = t._stop_signal or 0
            if d.enabled:  # every process stops at the same step
                stop = torch.tensor([signum], device=t.device)
                torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
                signum = int(stop.item())
            if files and t.step == start_step + 1:  # record the kernels auto picked
                write_json(files.dir / "env.json", _env_info(d))
            done = t.cur_nimg >= total
            if not done and not signum and t.cur_nimg < t.tick_start_nimg + o.tick * 1000:
                continue
            # tick
            tick_time = time.time() - tick_time0
            stats = t.stats.reduce(d, STAT_NAMES + ["Sanity/nonfinite"] + (VISION_STAT_NAMES if t.vision else []))
            if files:
                line = _status_line(t, tick_time, t.cur_nimg - tick_nimg0, total, start_time)
                if bar is not None:
                    bar.write(line)
                    with open(files.dir / "log.txt", "a") as f:
                        f.write(line + "\n")
                else:
                    files.log(line)
                stats.update({"Progress/kimg": {"num": 1, "mean": t.cur_nimg / 1000, "std": 0.0},
                              "Progress/augment": {"num": 1, "mean": t._aug_p(), "std": 0.0},
                              "Timing/sec_per_kimg": {"num": 1, "std": 0.0,
                                                      "mean": tick_time / max((t.cur_nimg - tick_nimg0) / 1000,
                                                                              1e-9)},
                              "Sanity/nonfinite_total": {"num": 1, "mean": t.nonfinite_total, "std": 0.0}})
                if t.vision is not None:
                    stats["Progress/vision_lambda"] = {"num": 1, "mean": t.lambda_vis(), "std": 0.0}
                    stats["Progress/vision_backbones"] = {"num": 1, "mean": len(t.vision.backbone_names), "std": 0.0}
                    for name, p in t.vision.ada_p().items():
                        stats[f"Progress/vision_augment/{name}"] = {"num": 1, "mean": float(p), "std": 0.0}
                files.append_stats({"timestamp": time.time(), "tick": t.cur_tick, "nimg": t.cur_nimg,
                                    "kimg": t.cur_nimg / 1000, "stats": stats})
            t.cur_tick += 1
            t.tick_start_nimg = t.cur_nimg
            if signum:
                t.save(f"signal {signum}")
                raise TrainingInterrupted(signum)
            if done or t.cur_tick % o.snap == 0:
                t.save("snapshot" if not done else "final")
            if done or t.cur_tick % o.img_snap == 0:
                t.save_fakes(f"fakes{kimg_tag(t.cur_nimg)}.png")
            if files:
                files.status("running", kimg=t.cur_nimg / 1000)
            tick_time0, tick_nimg0 = time.time(), t.cur_nimg
    except TrainingInterrupted as exc:
        status, code = "interrupted", 128 + exc.signum
        if files:
            files.log(f"interrupted by signal {exc.signum} at kimg {t.cur_nimg / 1000:.3f}; state written")
    except NonFiniteError as exc:
        status, code = "failed", 1
        if files:
            files.log(f"error: {exc}")
            files.status("failed", reason=str(exc), kimg=t.cur_nimg / 1000)
        raise
    except BaseException as exc:
        status, code = "failed", 1
        if files:
            files.log(f"error: {type(exc).__name__}: {exc}")
            files.status("failed", reason=f"{type(exc).__name__}: {exc}", kimg=t.cur_nimg / 1000)
        raise
    finally:
        if bar is not None:
            bar.close()
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    if files:
        files.status(status, kimg=t.cur_nimg / 1000)
        if status == "finished":
            files.log(f"finished at kimg {t.cur_nimg / 1000:.3f}")
    return TrainResult(t.run_dir, status, t.cur_nimg, code)

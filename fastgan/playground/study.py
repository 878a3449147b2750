"""The whole 2-D When/Why/Which study (METHODS.md §4.2-4.3): pretrain, measure, fine-tune, correlate.

1. **Pretrain** one GAN per source family (Source-I, Source-II; batched together) for ``pretrain_steps`` G steps and
   keep a checkpoint after every G step g with g % ``save_every`` == 0 (the original's ``models_<g>.pt``): 5001 steps
   and 50 give checkpoints 0, 50, ..., 5000, 101 per family. G-EMA (0.99) is kept and saved as in the original, but
   nothing below reads it: the notebook loads ``chkpt['generator']`` (the raw G) both to measure and to fine-tune.
2. **Measure** every source checkpoint: ``metric_points`` samples of its raw G in eval mode (BatchNorm running
   statistics), recall (k=5, strict <) of as many target points, and ∇D similarity with its D (both conventions).
3. **Fine-tune** every checkpoint's (G, D) on the target for ``finetune_steps`` G steps with fresh Adam states, all
   checkpoints as one batched model (``chunk`` at a time). After every G step g with g % ``eval_every`` == 0 the raw G
   (eval mode) gives ``w1_points`` samples, compared with as many fresh target points by exact W1 (optimal
   assignment, in worker processes after the training). The outcome is the **minimum W1 over those steps** (the
   notebook's ``min(W1_g)``); assignments that a lower bound proves cannot be that minimum are skipped
   (``w1_outcomes``), so the minimum stays exact.
4. **Correlate** each property with the outcome: Pearson r with p-value, and a percentile bootstrap interval over
   checkpoints, per family and pooled.

Randomness: every number is a function of ``seed``. Each model owns generator streams keyed by
``fastgan.train.rng.derive(seed, family, checkpoint step, phase[, eval step])``, so a checkpoint's results do not
depend on ``chunk`` or on which checkpoints are fine-tuned beside it. The same seed and thread count give the same
results.json except for its ``timings``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from fastgan._io import atomic_path
from fastgan.train.rng import derive

from . import diagnostics, models, toy
from .trainer import BatchedGAN, ModelStreams, TrainParams, train
from .w1 import SOLVERS, W1Pool, resolve_solver, w1_lower_bound

FORMAT = "fastgan-playground/1"
CHECKPOINT_FORMAT = "fastgan-playground-checkpoints/1"
FAMILIES = {"source-1": 1, "source-2": 2}
_INIT, _PRETRAIN, _METRICS, _FINETUNE, _EVAL, _BOOTSTRAP = 1, 2, 3, 4, 5, 6
PROPERTIES = ("recall", "grad_sim_loss_gradient", "grad_sim_update_direction")

# The notebook's run (yandex-research/gan-transfer playground_inspection.ipynb, cell 13): Source-I, 101 checkpoints.
NOTEBOOK = {"family": "source-1", "n": 101,
            "recall_vs_w1": {"r": -0.8430397471830448, "p": 2.0464529671639664e-28},
            "grad_sim_loss_gradient_vs_w1": {"r": -0.7277637020379226, "p": 6.6465932435458355e-18}}


def _positive_int(name: str, v, minimum: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")


@dataclass(frozen=True)
class PlaygroundConfig:
    """Protocol parameters; ``full()`` is the notebook's protocol, ``quick()`` a one-minute version."""

    families: tuple[str, ...] = ("source-1", "source-2")
    pretrain_steps: int = 5001
    save_every: int = 50
    finetune_steps: int = 1001
    eval_every: int = 250
    w1_points: int = 2048
    metric_points: int = 1000
    k: int = 5
    batch_size: int = 64
    disc_steps: int = 4
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    pretrain_ema: float = 0.99
    bootstrap: int = 2000
    confidence: float = 0.95
    chunk: int = 256
    w1_all_steps: bool = False
    w1_solver: str = "auto"

    def __post_init__(self):
        if not self.families or len(set(self.families)) != len(self.families):
            raise ValueError(f"families must be distinct names from {sorted(FAMILIES)}, got {self.families!r}")
        for f in self.families:
            if f not in FAMILIES:
                raise ValueError(f"unknown family {f!r}; choose from {sorted(FAMILIES)}")
        for name in ("pretrain_steps", "save_every", "finetune_steps", "eval_every", "bootstrap", "chunk"):
            _positive_int(name, getattr(self, name))
        _positive_int("k", self.k)
        for name in ("w1_points", "metric_points"):
            _positive_int(name, getattr(self, name), self.k + 1)
        TrainParams(lr=self.lr, betas=tuple(self.betas), batch_size=self.batch_size, disc_steps=self.disc_steps,
                    ema=self.pretrain_ema)  # validates those
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.w1_solver not in SOLVERS:
            raise ValueError(f"w1_solver must be one of {', '.join(SOLVERS)}, got {self.w1_solver!r}")

    @classmethod
    def full(cls, **overrides) -> "PlaygroundConfig":
        return cls(**overrides)

    @classmethod
    def quick(cls, **overrides) -> "PlaygroundConfig":
        kw = dict(pretrain_steps=251, finetune_steps=151, eval_every=50, w1_points=512, metric_points=512,
                  bootstrap=500)
        kw.update(overrides)
        return cls(**kw)

    def checkpoint_steps(self) -> list[int]:
        return list(range(0, self.pretrain_steps, self.save_every))

    def eval_steps(self) -> list[int]:
        return list(range(0, self.finetune_steps, self.eval_every))

    def train_params(self, ema: Optional[float] = None) -> TrainParams:
        return TrainParams(lr=self.lr, betas=tuple(self.betas), batch_size=self.batch_size,
                           disc_steps=self.disc_steps, ema=ema)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["families"], d["betas"] = list(self.families), list(self.betas)
        d["checkpoint_steps"], d["eval_steps"] = self.checkpoint_steps(), self.eval_steps()
        return d


def _json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _progress_bar(total: int, desc: str, enabled: Optional[bool]):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)


def pretrain(config: PlaygroundConfig, seed: int, *, progress: Optional[bool] = None,
             log: Callable[[str], None] = print) -> dict[str, dict]:
    """Pretrain one GAN per family (batched); returns {family: {"steps", "generator", "generator_ema",
    "discriminator"}} with stacked states over the checkpoints (leading dimension = len(steps))."""
    fams = list(config.families)
    ids = [FAMILIES[f] for f in fams]
    g0 = models.init_state("generator", [torch.Generator().manual_seed(derive(seed, i, _INIT, 0) & (2**64 - 1))
                                         for i in ids])
    d0 = models.init_state("discriminator", [torch.Generator().manual_seed(derive(seed, i, _INIT, 1) & (2**64 - 1))
                                             for i in ids])
    gan = BatchedGAN(g0, d0, config.train_params(ema=config.pretrain_ema))
    streams = ModelStreams([derive(seed, i, _PRETRAIN) for i in ids])
    dists = [toy.get_distribution(f) for f in fams]
    saves = set(config.checkpoint_steps())
    snaps: list[dict] = []
    bar = _progress_bar(config.pretrain_steps, "pretrain", progress)
    tick = max(1, config.pretrain_steps // 10)

    def on_step(g: int) -> None:
        if g in saves:
            snaps.append(gan.states())
        if bar is not None:
            bar.update(1)
        elif (g + 1) % tick == 0 or g + 1 == config.pretrain_steps:
            log(f"pretrain: G step {g + 1}/{config.pretrain_steps}")

    try:
        train(gan, streams, dists, config.pretrain_steps, on_step)
    finally:
        if bar is not None:
            bar.close()
    out = {}
    for j, fam in enumerate(fams):
        out[fam] = {"steps": config.checkpoint_steps()}
        for part in ("generator", "generator_ema", "discriminator"):
            out[fam][part] = {k: torch.stack([s[part][k][j] for s in snaps]) for k in snaps[0][part]}
    return out


def save_checkpoints(path, family: str, ckpts: dict, seed: int) -> None:
    """Write one family's checkpoints (stacked states, tensors only: loads with weights_only=True) atomically."""
    record = {"format": CHECKPOINT_FORMAT, "family": family, "seed": seed, "steps": list(ckpts["steps"]),
              "generator": ckpts["generator"], "generator_ema": ckpts["generator_ema"],
              "discriminator": ckpts["discriminator"]}
    with atomic_path(path) as tmp:
        torch.save(record, tmp)


def load_checkpoints(path) -> dict:
    """Read a file written by ``save_checkpoints``; raises naming the file when it is not one."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no playground checkpoint file at {path}")
    rec = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(rec, dict) or rec.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a playground checkpoint file (format {CHECKPOINT_FORMAT!r} expected)")
    k = len(rec["steps"])
    for part in ("generator", "generator_ema"):
        if models.check_state("generator", rec[part], f"{path}:{part}") != k:
            raise ValueError(f"{path}: {part} holds a different number of checkpoints than steps ({k})")
    if models.check_state("discriminator", rec["discriminator"], f"{path}:discriminator") != k:
        raise ValueError(f"{path}: discriminator holds a different number of checkpoints than steps ({k})")
    return rec


def measure_sources(ckpts: dict[str, dict], config: PlaygroundConfig, seed: int) -> list[dict]:
    """Recall and ∇D similarity of every source checkpoint (see ``diagnostics``); one record per checkpoint."""
    target = toy.target()
    rows = []
    for fam, rec in ckpts.items():
        fid = FAMILIES[fam]
        streams = ModelStreams([derive(seed, fid, s, _METRICS) for s in rec["steps"]])
        n = config.metric_points
        z = streams.normal(n, models.Z_DIM)
        real = streams.data([target] * len(streams), n)
        with torch.no_grad():
            samples = models.generator_forward({k: v.clone() for k, v in rec["generator"].items()}, z,
                                               training=False)
        sims = diagnostics.grad_similarity(rec["discriminator"], samples, target.centres)
        for j, step in enumerate(rec["steps"]):
            finite = bool(torch.isfinite(samples[j]).all())
            r = diagnostics.recall(real[j], samples[j], k=config.k) if finite else math.nan
            s = float(sims[j])
            rows.append({"family": fam, "step": int(step), "recall": r, "grad_sim_loss_gradient": s,
                         "grad_sim_update_direction": -s if math.isfinite(s) else math.nan})
    return rows


def finetune(ckpts: dict[str, dict], config: PlaygroundConfig, seed: int, *, progress: Optional[bool] = None,
             log: Callable[[str], None] = print) -> dict:
    """Fine-tune every checkpoint on the target (batched, ``config.chunk`` models at a time); at every evaluation step
    draw ``w1_points`` target points and as many samples of the raw G (eval mode). Returns
    {(family, step, eval step): (target points, samples)}, float32 (N, 2) tensors."""
    target = toy.target()
    todo = [(fam, j, int(s)) for fam, rec in ckpts.items() for j, s in enumerate(rec["steps"])]
    evals = set(config.eval_steps())
    kept: dict = {}
    total = len(todo) * config.finetune_steps
    bar = _progress_bar(total, "fine-tune", progress)
    done = 0
    for start in range(0, len(todo), config.chunk):
        part = todo[start:start + config.chunk]
        g_state = {k: torch.stack([ckpts[f]["generator"][k][j] for f, j, _ in part]) for k in
                   ckpts[part[0][0]]["generator"]}
        d_state = {k: torch.stack([ckpts[f]["discriminator"][k][j] for f, j, _ in part]) for k in
                   ckpts[part[0][0]]["discriminator"]}
        gan = BatchedGAN(g_state, d_state, config.train_params(ema=None))
        streams = ModelStreams([derive(seed, FAMILIES[f], s, _FINETUNE) for f, _, s in part])
        dists = [target] * len(part)
        t0 = time.perf_counter()

        def on_step(g: int) -> None:
            nonlocal done
            if g in evals:
                es = ModelStreams([derive(seed, FAMILIES[f], s, _EVAL, g) for f, _, s in part])
                z = es.normal(config.w1_points, models.Z_DIM)
                real = es.data(dists, config.w1_points)
                fake = gan.sample(z)
                for m, (f, _, s) in enumerate(part):
                    kept[(f, s, g)] = (real[m].clone(), fake[m].clone())
            done += len(part)
            if bar is not None:
                bar.update(len(part))
            elif (g + 1) % max(1, config.finetune_steps // 10) == 0 or g + 1 == config.finetune_steps:
                el = time.perf_counter() - t0
                log(f"fine-tune: models {start + 1}-{start + len(part)} of {len(todo)}, G step "
                    f"{g + 1}/{config.finetune_steps} ({el:.0f} s)")

        try:
            train(gan, streams, dists, config.finetune_steps, on_step)
        except BaseException:
            if bar is not None:
                bar.close()
            raise
    if bar is not None:
        bar.close()
    return kept


def w1_outcomes(evals: dict, config: PlaygroundConfig, pool: W1Pool,
                log: Callable[[str], None] = lambda s: None) -> tuple[dict, dict]:
    """Exact W1 where needed for the per-model minimum over evaluation steps; returns ({key: W1}, {key: lower bound}).

    With ``config.w1_all_steps`` every (model, step) gets its assignment. Otherwise assignments run in rounds: each
    model's steps are taken in increasing order of ``w1_lower_bound`` and a step is solved only while its bound is
    below the model's smallest exact W1 so far. The minimum is exact either way (a skipped step's W1 is at least its
    bound, hence at least the minimum); skipped steps report only their bound. The rounds depend only on the values,
    so the result is deterministic."""
    centres = toy.target().centres.numpy()
    data = {k: (r.numpy(), f.numpy()) for k, (r, f) in evals.items()
            if bool(torch.isfinite(f).all())}
    bounds = {k: w1_lower_bound(r, f, centres) for k, (r, f) in data.items()}
    if config.w1_all_steps:
        log(f"W1: {len(data)} assignments")
        for k, (r, f) in data.items():
            pool.submit(k, r, f)
        return pool.results(), bounds
    per_model: dict = {}
    for (fam, step, g) in data:
        per_model.setdefault((fam, step), []).append(g)
    order = {m: sorted(gs, key=lambda g: (bounds[(m[0], m[1], g)], g)) for m, gs in per_model.items()}
    pos = {m: 0 for m in order}
    exact: dict = {}
    rounds = 0
    while True:
        batch = []
        for m, gs in order.items():
            if pos[m] >= len(gs):
                continue
            key = (m[0], m[1], gs[pos[m]])
            done = [exact[(m[0], m[1], g)] for g in gs[:pos[m]]]
            if done and bounds[key] >= min(done):
                pos[m] = len(gs)  # every later step has a larger bound
                continue
            batch.append(key)
            pos[m] += 1
        if not batch:
            break
        t0 = time.perf_counter()
        log(f"W1 round {rounds + 1}: {len(batch)} assignments")
        rounds += 1
        for key in batch:
            pool.submit(key, *data[key])
        exact.update(pool.results())
        log(f"W1 round {rounds}: done in {time.perf_counter() - t0:.0f} s")
    return exact, bounds


def correlations(rows: list[dict], config: PlaygroundConfig, seed: int) -> dict:
    """Pearson r, p and bootstrap interval of each property against the fine-tuned W1, per family and pooled."""
    groups = {f: [r for r in rows if r["family"] == f] for f in config.families}
    if len(config.families) > 1:
        groups["all"] = list(rows)
    out = {}
    for gi, (name, rs) in enumerate(groups.items()):
        w1 = [r["w1_min"] for r in rs]
        out[name] = {}
        for pi, prop in enumerate(PROPERTIES):
            x = [r[prop] for r in rs]
            res = diagnostics.pearson(x, w1)
            res["ci"] = diagnostics.bootstrap_pearson(x, w1, reps=config.bootstrap, confidence=config.confidence,
                                                      seed=derive(seed, _BOOTSTRAP, gi, pi))
            out[name][f"{prop}_vs_w1"] = res
    return out


def environment(workers: int) -> dict:
    import scipy

    import fastgan

    return {"fastgan": fastgan.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "w1_workers": workers}


def run_study(outdir, config: Optional[PlaygroundConfig] = None, *, seed: int = 0, workers: int = 2,
              plots: bool = True, progress: Optional[bool] = None, log: Callable[[str], None] = print) -> dict:
    """Run the study and write ``outdir``/results.json, the plots and checkpoints/<family>.pt; returns the results.

    ``workers`` processes solve the W1 assignments after the training (0: in this process)."""
    config = config or PlaygroundConfig.full()
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    outdir = pathlib.Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise FileExistsError(f"--outdir {outdir} exists and is not a directory")
    solver = resolve_solver(config.w1_solver)  # fail before the training when the named solver is missing
    (outdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings = {}
    n_ck = len(config.checkpoint_steps()) * len(config.families)
    log(f"playground: seed {seed}, families {', '.join(config.families)}, {n_ck} checkpoints, "
        f"{config.finetune_steps} fine-tuning steps each, W1 on {config.w1_points} points at steps "
        f"{config.eval_steps()}, torch threads {torch.get_num_threads()}, W1 workers {workers} ({solver})")

    t0 = time.perf_counter()
    ckpts = pretrain(config, seed, progress=progress, log=log)
    for fam, rec in ckpts.items():
        save_checkpoints(outdir / "checkpoints" / f"{fam}.pt", fam, rec, seed)
    timings["pretrain_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = measure_sources(ckpts, config, seed)
    timings["source_metrics_s"] = time.perf_counter() - t0
    log(f"measured {len(rows)} source checkpoints ({timings['source_metrics_s']:.1f} s)")

    t0 = time.perf_counter()
    evals = finetune(ckpts, config, seed, progress=progress, log=log)
    timings["finetune_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with W1Pool(workers, solver) as pool:
        w1, bounds = w1_outcomes(evals, config, pool, log=log)
        timings["w1_cpu_s"] = pool.cpu_seconds
    timings["w1_s"] = time.perf_counter() - t0
    log(f"W1: {len(w1)} exact assignments of {len(evals)} evaluations ({timings['w1_s']:.1f} s)")

    for row in rows:
        keys = {g: (row["family"], row["step"], g) for g in config.eval_steps()}
        row["w1"] = {str(g): w1.get(k, math.nan) for g, k in keys.items()}
        row["w1_lower_bound"] = {str(g): bounds.get(k, math.nan) for g, k in keys.items()}
        finite = {g: w1[k] for g, k in keys.items() if k in w1}
        row["w1_min"] = min(finite.values()) if finite else math.nan
        row["w1_min_step"] = min(finite, key=finite.get) if finite else None
        row["w1_nonfinite_samples"] = sum(k not in bounds for k in keys.values())
    samples = {k: fake for k, (_, fake) in evals.items()}
    stats = correlations(rows, config, seed)
    timings["total_s"] = time.perf_counter() - t_start
    results = {
        "format": FORMAT,
        "seed": seed,
        "protocol": config.as_dict(),
        "conventions": {
            "generator": "raw G in eval mode (BatchNorm running statistics), as the notebook (W1_g, "
                         "chkpt['generator']); G-EMA kept only in the pretraining checkpoints",
            "checkpoint_step": "G steps done minus one: checkpoint g is saved after G step g (models_<g>.pt)",
            "w1": f"exact optimal transport ({solver} solver: "
                  f"{'POT network simplex' if solver == 'network-simplex' else 'scipy linear_sum_assignment'}) between "
                  "w1_points target and generated points with uniform weights = mean matched Euclidean distance of the "
                  "optimal assignment; w1_min = min over eval_steps (exact). Unless "
                  "w1_all_steps, a step whose w1_lower_bound is >= an exact W1 of the same model is not solved "
                  "(w1 null there: it cannot be the minimum)",
            "recall": f"fraction of {config.metric_points} target points inside a k={config.k} NN ball of "
                      f"{config.metric_points} source samples, strict <",
            "grad_sim_loss_gradient": "mean cos(c(x) - x, grad_x L_G), L_G = -mean log D: the notebook's sign",
            "grad_sim_update_direction": "mean cos(c(x) - x, -grad_x L_G): the direction a G step moves x",
        },
        "environment": environment(workers),
        "timings": timings,
        "checkpoints": rows,
        "correlations": stats,
        "notebook": NOTEBOOK,
    }
    results = _json_safe(results)
    with atomic_path(outdir / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    if plots:
        from . import plots as _plots

        _plots.write_all(outdir, results, ckpts, samples, seed)
    log(summary(results))
    return results


def summary(results: dict) -> str:
    """Human-readable lines with the correlations of a results dict."""
    lines = []
    for group, res in results["correlations"].items():
        for name, st in res.items():
            r, ci = st["r"], st["ci"]
            fmt = (lambda v: "nan" if v is None else f"{v:+.3f}")
            lines.append(f"{group:9s} r({name}) = {fmt(r)}  95% CI [{fmt(ci['low'])}, {fmt(ci['high'])}]  "
                         f"p = {st['p'] if st['p'] is not None else 'nan':.3g}  n = {st['n']}"
                         if st["p"] is not None else f"{group:9s} r({name}) = undefined (n = {st['n']})")
    return "\n".join(lines)


__all__ = ["PlaygroundConfig", "FAMILIES", "NOTEBOOK", "pretrain", "save_checkpoints", "load_checkpoints",
           "measure_sources", "finetune", "correlations", "run_study", "summary"]

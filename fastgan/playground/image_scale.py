"""The image-scale half of the When/Why/Which question on fastgan's own models: does the recall of the target,
measured before transfer (``fastgan select-source``), rank candidate initialisations in the order of the FID they
reach after fine-tuning?

Protocol (:func:`run_image_scale`), every step through the library functions the commands use:

1. **data**       one synthetic dataset per data source (``primitives-ps``, ``pinknoise`` = the spectrum-only
                  variant, any of ``fastgan.synth.VARIANTS``) and the real target (``lfw-faces``: the 100 face crops
                  that ship inside scikit-image, ``fastgan.demo.data``), as dataset zips;
2. **pretrain**   one generator per data source with the same budget, architecture and seed
                  (``fastgan.train.train``); ``checkpoints`` snapshots of each run, spread over it (the last always
                  among them), become sources;
3. **sources**    plus a **random initialisation**: the untrained networks of the same architecture built from the
                  same seed, i.e. the state every pretraining run starts from;
4. **select**     target statistics with kept features (``fastgan ref --keep-features yes``,
                  :func:`fastgan.metrics.reference.compute_reference`), then :func:`fastgan.metrics.rank_sources`
                  (``fastgan select-source``): recall with its bootstrap interval, precision, density and coverage
                  of every source;
5. **finetune**   every source fine-tuned on the target with the same recipe and budget
                  (``fastgan.transfer.transfer``, ``method`` finetune by default) for ``finetune_seeds`` training
                  seeds, and FID / KID / precision / recall of each fine-tuned G_ema against the target (the demo's
                  metric block, the same extractor, the same latent seeds for every model);
6. **compare**    the order by recall against the order by mean fine-tuned FID (and KID): pairwise concordance,
                  Spearman and Kendall rank correlations, the same per fine-tuning seed, and whether each recall
                  difference is resolved by its intervals and each FID difference by the seed spread.

``results.json`` holds the configuration, every number, the comparisons, the environment and stage timings;
``recall_vs_fid.png`` plots recall (with its interval) against the fine-tuned FID and KID (mean and per-seed range).
A rerun into the same folder with the same configuration and seed skips the work already done (pretrained sources,
target statistics, finished fine-tunings); a different configuration there is refused.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import platform
import shutil
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from fastgan._io import atomic_path
from fastgan.playground.study import _json_safe

PathLike = Union[str, os.PathLike]
RESULTS_FORMAT = "fastgan-image-scale-results"
RESULTS_VERSION = 1
RANDOM_INIT = "random-init"
PLOT_NAME = "recall_vs_fid.png"
STAGES = ("data", "pretrain", "sources", "select", "finetune", "evaluate", "compare")
EVAL_SEED_OFFSET = 1_000_000  # latent seeds of the evaluation samples: seed + offset + i (selection uses seed + i)
FAMILY_COLOURS = {"primitives-ps": (31, 119, 180), "pinknoise": (214, 39, 40), "primitives": (44, 160, 44),
                  "primitives-s": (148, 103, 189), RANDOM_INIT: (90, 90, 90)}


def _int_at_least(name: str, v, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")


def _positive_number(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number, got {v!r}")


@dataclass(frozen=True)
class ImageScaleConfig:
    """Sizes of the image-scale study. ``full()`` is the documented run (about 20 minutes on 2 shared CPU
    cores), ``quick()`` a tiny smoke version: 16 px, a few training steps, 12 samples and the fixed random CNN
    extractor ``random-conv`` instead of EfficientNet-Lite0, so that it checks the pipeline in seconds (its numbers
    mean nothing)."""

    resolution: int = 32
    data_sources: tuple[str, ...] = ("primitives-ps", "pinknoise")
    random_init: bool = True
    synth_images: int = 1000          # images per synthetic dataset
    cfg: str = "tiny"                 # training preset (fastgan.train.options.CFG_SPECS)
    batch: int = 16
    aug: str = "diffaug"
    pretrain_kimg: float = 2.0        # pretraining budget per data source
    checkpoints: int = 1              # sources per data source: snapshots spread over the run, the last included
    finetune_kimg: float = 0.75       # fine-tuning budget per (source, seed)
    finetune_seeds: int = 3           # R: fine-tuning runs per source (training seeds seed .. seed + R - 1)
    method: str = "finetune"          # transfer recipe (fastgan.transfer: finetune | freezed | adafm)
    select_num: int = 200             # generated images per source for recall
    eval_num: int = 200               # generated images per fine-tuned model for FID / KID / P / R
    k: int = 5                        # k-NN of recall (selection) and of the evaluation's P / R / D / C
    bootstrap: int = 1000             # bootstrap resamples of the recall interval
    confidence: float = 0.95
    extractor: str = "efficientnet-lite0-offline"
    target: str = "lfw-faces"

    def __post_init__(self):
        from fastgan.synth import resolve_variant
        from fastgan.train.options import CFG_SPECS, AUG_CHOICES
        from fastgan.transfer.freeze import METHODS

        from ..demo.data import PACKAGED_SETS

        if isinstance(self.data_sources, str) or not isinstance(self.data_sources, (tuple, list)):
            raise ValueError(f"data_sources must be a tuple of synthetic variant names, got {self.data_sources!r}")
        names = tuple(resolve_variant(s) for s in self.data_sources)
        if not names:
            raise ValueError("data_sources must name at least one synthetic variant (the random initialisation "
                             "takes its architecture from a pretrained source)")
        if len(set(names)) != len(names):
            raise ValueError(f"data_sources must be distinct, got {self.data_sources!r}")
        object.__setattr__(self, "data_sources", names)
        if not isinstance(self.random_init, bool):
            raise ValueError(f"random_init must be True or False, got {self.random_init!r}")
        _int_at_least("resolution", self.resolution, 8)
        if self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two, got {self.resolution}")
        for name in ("synth_images", "batch", "checkpoints", "finetune_seeds", "bootstrap", "k"):
            _int_at_least(name, getattr(self, name), 1)
        for name in ("select_num", "eval_num"):
            _int_at_least(name, getattr(self, name), self.k + 1)
        for name in ("pretrain_kimg", "finetune_kimg"):
            _positive_number(name, getattr(self, name))
        if self.pretrain_kimg * 1000 / self.checkpoints < self.batch:
            raise ValueError(f"pretrain_kimg={self.pretrain_kimg:g} is too short for checkpoints={self.checkpoints}: "
                             f"each checkpoint needs at least one batch of {self.batch} images")
        if self.finetune_kimg * 1000 < self.batch:
            raise ValueError(f"finetune_kimg={self.finetune_kimg:g} is shorter than one batch of {self.batch} images")
        if self.cfg not in CFG_SPECS:
            raise ValueError(f"cfg must be one of {sorted(CFG_SPECS)}, got {self.cfg!r}")
        if self.aug not in AUG_CHOICES:
            raise ValueError(f"aug must be one of {AUG_CHOICES}, got {self.aug!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence!r}")
        if self.target not in PACKAGED_SETS:
            raise ValueError(f"target must be one of {sorted(PACKAGED_SETS)}, got {self.target!r}")
        if not isinstance(self.extractor, str) or not self.extractor:
            raise ValueError(f"extractor must be a registered extractor name, got {self.extractor!r}")
        if self.num_sources() < 2:
            raise ValueError("the study compares at least two sources: give two data_sources, or one with "
                             "random_init=True or checkpoints >= 2")

    @classmethod
    def full(cls, **overrides) -> "ImageScaleConfig":
        return cls(**overrides)

    @classmethod
    def quick(cls, **overrides) -> "ImageScaleConfig":
        kw = dict(resolution=16, synth_images=64, batch=8, pretrain_kimg=0.032, finetune_kimg=0.016,
                  finetune_seeds=2, select_num=12, eval_num=12, bootstrap=200, extractor="random-conv")
        kw.update(overrides)
        return cls(**kw)

    def num_sources(self) -> int:
        return len(self.data_sources) * self.checkpoints + int(self.random_init)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data_sources"] = list(self.data_sources)
        return d


# ---------------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------------




def _write_json(path: pathlib.Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


class _Stages:
    """Seconds per stage (stages may be entered several times; their times add up) and progress lines."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.t0, self.timings = log, time.time(), {name: 0.0 for name in STAGES}
        self._name, self._start = None, None

    def enter(self, name: str, line: Optional[str] = None) -> None:
        self._close()
        self._name, self._start = name, time.time()
        if line:
            self.say(line)

    def _close(self) -> None:
        if self._name is not None:
            self.timings[self._name] = round(self.timings[self._name] + time.time() - self._start, 2)
            self._name = None

    def say(self, line: str) -> None:
        self.log(f"[image-scale {time.time() - self.t0:7.1f}s] {line}")

    def finish(self) -> float:
        self._close()
        return round(time.time() - self.t0, 2)


def _kimg_label(kimg: float) -> str:
    return f"{kimg:.3f}".rstrip("0").rstrip(".") + "kimg"


def _check_run(res, what: str) -> None:
    if res.status != "finished":
        raise RuntimeError(f"the image-scale {what} ended with status {res.status!r}; see {res.run_dir / 'log.txt'}")


# ---------------------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------------------


def _train_common(config: ImageScaleConfig, seed: int) -> dict:
    return dict(cfg=config.cfg, batch=config.batch, seed=seed, aug=config.aug, progress=False, nobench=True,
                keep_states=1)


def _pretrain_family(config: ImageScaleConfig, variant: str, out: pathlib.Path, seed: int, device: str,
                     stages: _Stages) -> list[dict]:
    """Write the family's dataset, pretrain on it and copy the chosen snapshots to ``sources/``; returns their
    records. Skipped (records read back) when ``sources/`` already holds them."""
    from ..demo.run import _pick_candidates, _snapshot_kimg, _snapshots
    from ..synth import PrimitivesPS
    from ..synth.dataset import write_dataset
    from ..train.loop import train
    from ..train.options import TrainOptions

    index_path = out / "sources" / f"{variant}.json"
    if index_path.is_file():
        recs = json.loads(index_path.read_text())
        if all((out / r["snapshot"]).is_file() for r in recs) and len(recs) == config.checkpoints:
            stages.say(f"  {variant}: pretrained sources found, skipped")
            return recs
    stages.enter("data", f"data: {config.synth_images} {variant} images at {config.resolution} px")
    zip_path = out / "data" / f"{variant}.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    gen = PrimitivesPS.variant(variant, resolution=config.resolution, seed=seed, device=device)
    write_dataset(zip_path, gen, config.synth_images, overwrite=True, progress=False, log=lambda s: None)
    stages.enter("pretrain", f"pretrain: {config.pretrain_kimg:g} kimg on {variant} ({config.cfg} config, batch "
                             f"{config.batch}, seed {seed})")
    res = train(TrainOptions(data=str(zip_path), outdir=str(out / "runs"), kimg=config.pretrain_kimg,
                             tick=config.pretrain_kimg / config.checkpoints, snap=1, img_snap=10**6,
                             desc=f"pretrain-{variant}", **_train_common(config, seed)), device=device, quiet=True)
    _check_run(res, f"pretraining on {variant}")
    _invalidate(out, [])  # new sources: the selection is measured again
    picked = _pick_candidates(_snapshots(res.run_dir), config.checkpoints)
    if len(picked) != config.checkpoints:
        raise RuntimeError(f"pretraining on {variant} wrote {len(picked)} snapshots, expected {config.checkpoints}; "
                           f"see {res.run_dir}")
    recs = []
    for snap in picked:
        kimg = _snapshot_kimg(snap)
        label = f"{variant}-{_kimg_label(kimg)}"
        dest = out / "sources" / f"{label}.pt"
        dest.parent.mkdir(parents=True, exist_ok=True)
        _invalidate(out, [label])
        with atomic_path(dest) as tmp:
            shutil.copyfile(snap, tmp)
        recs.append({"label": label, "family": variant, "kimg": kimg, "snapshot": f"sources/{label}.pt",
                     "run": res.run_dir.name})
    stages.say(f"  {variant}: sources {', '.join(r['label'] for r in recs)} ({res.run_dir.name})")
    _write_json(index_path, recs)
    return recs


def _invalidate(out: pathlib.Path, labels: Sequence[str]) -> None:
    """Forget what was measured on sources that are being (re)made: ``selection.json`` and their fine-tunings."""
    (out / "selection.json").unlink(missing_ok=True)
    for label in labels:
        shutil.rmtree(out / "finetune" / label, ignore_errors=True)


def write_random_init(dest: PathLike, like: PathLike, seed: int) -> pathlib.Path:
    """Save the untrained G, G_ema and D that a training run with ``seed`` and the architecture of snapshot ``like``
    starts from (``torch.manual_seed(seed)``, then G, then D, as ``fastgan.train`` builds them) as a snapshot at
    kimg 0. The global torch RNG state is restored afterwards."""
    import copy

    from ..nn.checkpoint import load_snapshot, save_snapshot
    from ..nn.networks import build_network

    blob = load_snapshot(like)
    nets = blob["networks"]
    for name in ("G", "D"):
        if name not in nets:
            raise ValueError(f"{like}: the snapshot holds no {name}, so its architecture cannot be copied")
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        G = build_network("G", nets["G"]["config"])
        D = build_network("D", nets["D"]["config"])
    finally:
        torch.set_rng_state(state)
    G_ema = copy.deepcopy(G).eval()
    return save_snapshot(dest, {"G": G.train(), "G_ema": G_ema, "D": D.train()}, training_set=None, kimg=0.0,
                         extra={"random_init": True, "seed": seed, "architecture_of": pathlib.Path(like).name})


def _target_stats(config: ImageScaleConfig, out: pathlib.Path, device: str, stages: _Stages):
    """The target zip and its statistics with kept features (``fastgan ref --keep-features yes``)."""
    from ..demo.data import write_packaged_set
    from ..metrics.reference import compute_reference

    stages.enter("data")
    zip_path = out / "data" / f"{config.target}.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    if not zip_path.is_file():
        write_packaged_set(config.target, zip_path, resolution=config.resolution, log=lambda s: None)
    stages.enter("select")
    ref_path = out / "data" / f"{config.target}-ref.npz"
    stats, _ = compute_reference(zip_path, ref_path, extractor=config.extractor, device=device, keep_features=True,
                                 log=lambda s: None)
    return zip_path, ref_path, stats


def _select(config: ImageScaleConfig, sources: list[dict], ref_path: pathlib.Path, out: pathlib.Path, seed: int,
            device: str, stages: _Stages) -> dict[str, dict]:
    """Recall etc. of every source by :func:`fastgan.metrics.rank_sources` (reused when selection.json matches)."""
    from ..metrics.selection import rank_sources

    sel_path = out / "selection.json"
    want = sorted(s["label"] for s in sources)
    if sel_path.is_file():
        rec = json.loads(sel_path.read_text())
        have = sorted(r["name"] for r in rec.get("ranking", []))
        if have == want and rec.get("num_samples") == config.select_num and rec.get("seed") == seed:
            stages.say("select: selection.json found, reused")
            return {r["name"]: r for r in rec["ranking"]}
    stages.enter("select", f"select: recall of the target against {config.select_num} samples of each of "
                           f"{len(sources)} sources (k={config.k}, {config.bootstrap} bootstrap resamples)")
    scores = rank_sources([str(out / s["snapshot"]) for s in sources], ref=str(ref_path), num=config.select_num,
                          k=config.k, bootstrap=config.bootstrap, confidence=config.confidence, seed=seed,
                          device=device, out=str(sel_path), log=lambda s: None)
    by_label = {}
    for sc in scores:
        label = pathlib.Path(sc.name).name
        label = label[:-3] if label.endswith(".pt") else label
        by_label[label] = sc.as_dict()
    if sorted(by_label) != want:
        raise RuntimeError(f"rank_sources returned {sorted(by_label)}, expected {want}")
    for s in sorted(sources, key=lambda s: -by_label[s["label"]]["recall"]):
        sc = by_label[s["label"]]
        stages.say(f"  {s['label']:<28} recall {sc['recall']:.3f} [{sc['recall_low']:.3f}, {sc['recall_high']:.3f}]"
                   f"  precision {sc['precision']:.3f}  coverage {sc['coverage']:.3f}")
    return by_label


def _finetune_one(config: ImageScaleConfig, source: dict, r: int, out: pathlib.Path, target_zip: pathlib.Path,
                  real: torch.Tensor, ext, seed: int, device: str, stages: _Stages) -> dict:
    """Fine-tune one source with training seed ``seed + r`` and evaluate it; the record is kept in
    ``finetune/<label>/seed-<r>.json`` and read back on a rerun."""
    from ..demo.run import _metrics, _snapshots
    from ..metrics.evaluate import generated_stats
    from ..nn.checkpoint import load_network
    from ..transfer.recipe import transfer

    rec_path = out / "finetune" / source["label"] / f"seed-{r}.json"
    if rec_path.is_file():
        rec = json.loads(rec_path.read_text())
        if rec.get("train_seed") == seed + r and rec.get("num_fake") == config.eval_num:
            return rec
    stages.enter("finetune")
    extra = {"adafm_front_res": min(16, config.resolution // 2)} if config.method == "adafm" else {}
    t0 = time.time()
    res = transfer(str(out / source["snapshot"]), str(target_zip), str(out / "runs"), method=config.method,
                   device=device, quiet=True, kimg=config.finetune_kimg, tick=config.finetune_kimg / 2,
                   snap=10**6, img_snap=10**6, desc=f"{source['label']}-seed{r}", **extra,
                   **_train_common(config, seed + r))
    _check_run(res, f"fine-tuning of {source['label']} (seed {seed + r})")
    t_train = time.time() - t0
    stages.enter("evaluate")
    t0 = time.time()
    G = load_network(_snapshots(res.run_dir)[-1], "G_ema", device=device)
    fake = generated_stats(G, ext, config.eval_num, seed=seed + EVAL_SEED_OFFSET, protocol=ext.protocol).features()
    metrics = _metrics(real, fake.double().cpu(), config.k)
    rec = {"label": source["label"], "seed_index": r, "train_seed": seed + r, "run": res.run_dir.name,
           "finetune_seconds": round(t_train, 2), "eval_seconds": round(time.time() - t0, 2), **metrics}
    _write_json(rec_path, rec)
    return rec


def _seed_summary(values: Sequence[float]) -> dict:
    v = torch.tensor([float(x) for x in values], dtype=torch.float64)
    return {"mean": float(v.mean()), "std": float(v.std()) if len(v) > 1 else 0.0, "min": float(v.min()),
            "max": float(v.max())}


# ---------------------------------------------------------------------------------------------------------------
# comparison of the rankings
# ---------------------------------------------------------------------------------------------------------------


def _order(labels: Sequence[str], values: Sequence[float], descending: bool) -> list[str]:
    """Labels best first; equal values keep label order (so the order is deterministic)."""
    return [lab for _, lab in sorted(zip(values, labels), key=lambda t: ((-t[0] if descending else t[0]), t[1]))]


def _rank_stats(recall: Sequence[float], outcome: Sequence[float]) -> dict:
    """Pair counts and rank correlations of recall (higher is better) against an outcome (lower is better).

    ``spearman.rho`` and ``kendall.tau`` are computed between recall and the *negated* outcome, so +1 means the two
    orders are the same and -1 that they are reversed; ``None`` where undefined (fewer than 3 points for a p-value,
    or a constant column)."""
    from scipy import stats as st

    n = len(recall)
    conc = disc = tie_r = tie_o = 0
    for i in range(n):
        for j in range(i + 1, n):
            dr, do = recall[i] - recall[j], outcome[j] - outcome[i]  # both > 0: i is better by both
            if dr == 0:
                tie_r += 1
            elif do == 0:
                tie_o += 1
            elif (dr > 0) == (do > 0):
                conc += 1
            else:
                disc += 1
    neg = [-x for x in outcome]
    rho = p_rho = tau = p_tau = math.nan
    if n >= 2 and len(set(recall)) > 1 and len(set(outcome)) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = st.spearmanr(recall, neg)
            k = st.kendalltau(recall, neg)
        rho, tau = float(s.statistic), float(k.statistic)
        if n >= 3:
            p_rho, p_tau = float(s.pvalue), float(k.pvalue)
    return {"orders_agree": conc == n * (n - 1) // 2, "no_discordant_pair": disc == 0,
            "pairs": {"concordant": conc, "discordant": disc, "tied_recall": tie_r, "tied_outcome": tie_o},
            "spearman": {"rho": rho, "p": p_rho}, "kendall": {"tau": tau, "p": p_tau}, "n": n}


def compare_rankings(sources: Sequence[dict]) -> dict:
    """Compare the order by recall with the orders by fine-tuned FID and KID over ``sources``.

    Each source is a dict with ``label``, ``selection`` (``recall``, ``recall_ci``) and ``finetune``
    (``per_seed``: a list of {fid, kid} in seed order, and ``fid``/``kid`` summaries with ``mean``). Returns the
    three orders (best first), :func:`_rank_stats` of the means for ``fid`` and ``kid``, the same per fine-tuning
    seed, and every pair (better-by-recall first) with whether the outcome agrees (None when recall ties), whether
    its recall intervals are disjoint and whether the per-seed FID (KID) ranges are disjoint."""
    labels = [s["label"] for s in sources]
    if len(set(labels)) != len(labels):
        raise ValueError(f"source labels must be distinct, got {labels}")
    recall = [float(s["selection"]["recall"]) for s in sources]
    out = {"sources": labels, "recall_order": _order(labels, recall, True)}
    seeds = min(len(s["finetune"]["per_seed"]) for s in sources)
    for metric in ("fid", "kid"):
        means = [float(s["finetune"][metric]["mean"]) for s in sources]
        out[f"{metric}_order"] = _order(labels, means, False)
        block = _rank_stats(recall, means)
        per_seed = []
        for r in range(seeds):
            vals = [float(s["finetune"]["per_seed"][r][metric]) for s in sources]
            ps = _rank_stats(recall, vals)
            per_seed.append({"seed_index": r, "order": _order(labels, vals, False), "orders_agree": ps["orders_agree"],
                             "spearman_rho": ps["spearman"]["rho"]})
        block["per_seed"] = per_seed
        block["seeds_agreeing"] = sum(p["orders_agree"] for p in per_seed)
        out[metric] = block
    pairs = []
    by = {s["label"]: s for s in sources}
    for a_i, a in enumerate(out["recall_order"]):
        for b in out["recall_order"][a_i + 1:]:
            sa, sb = by[a], by[b]
            ra, rb = sa["selection"], sb["selection"]
            rec = {"higher_recall": a, "lower_recall": b, "recall_tied": ra["recall"] == rb["recall"],
                   "recall_ci_disjoint": ra["recall_ci"][0] > rb["recall_ci"][1]}
            for metric in ("fid", "kid"):
                ma, mb = sa["finetune"][metric], sb["finetune"][metric]
                # None where recall gives no order to agree with
                rec[f"{metric}_agrees"] = None if rec["recall_tied"] else ma["mean"] < mb["mean"]
                rec[f"{metric}_seed_ranges_disjoint"] = ma["max"] < mb["min"] or mb["max"] < ma["min"]
            pairs.append(rec)
    out["pairs"] = pairs
    return out


def _order_text(order: Sequence[str], value: dict) -> str:
    """``a > b = c``: best first, ``=`` between equal values."""
    text = order[0]
    for prev, cur in zip(order, order[1:]):
        text += (" = " if value[cur] == value[prev] else " > ") + cur
    return text


def _verdict(comp: dict, sources: Sequence[dict]) -> str:
    f, k = comp["fid"], comp["kid"]
    recall = {s["label"]: s["selection"]["recall"] for s in sources}
    fid = {s["label"]: s["finetune"]["fid"]["mean"] for s in sources}
    kid = {s["label"]: s["finetune"]["kid"]["mean"] for s in sources}

    def say(block, name):
        if block["pairs"]["tied_recall"] == block["n"] * (block["n"] - 1) // 2:
            return f"gives no order to compare with the {name} order (recall is equal for every source)"
        if block["orders_agree"]:
            return f"agrees with the {name} order"
        p = block["pairs"]
        return (f"does not agree with the {name} order ({p['discordant']} discordant, {p['tied_recall']} "
                f"recall-tied of {block['n'] * (block['n'] - 1) // 2} pairs)")
    return (f"recall order {_order_text(comp['recall_order'], recall)}; mean fine-tuned FID order (best first) "
            f"{_order_text(comp['fid_order'], fid)}; KID order {_order_text(comp['kid_order'], kid)}. The recall order "
            f"{say(f, 'FID')} and {say(k, 'KID')}; per fine-tuning seed it matches FID in {f['seeds_agreeing']} of "
            f"{len(f['per_seed'])} seeds and KID in {k['seeds_agreeing']} of {len(k['per_seed'])}.")


# ---------------------------------------------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------------------------------------------


def plot_recall_vs_outcome(path: PathLike, sources: Sequence[dict], size: tuple[int, int] = (980, 440)) -> None:
    """Two panels, recall (x, with its bootstrap interval) against the fine-tuned FID and KID x 1e3 (y: the mean
    over seeds as a marker, the per-seed range as a bar, each seed as a small dot); one colour per family."""
    from PIL import Image, ImageDraw

    from fastgan.plots import Axes, _font, limits, nice_ticks

    w, h = size
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img, "RGBA")
    font, big = _font(12), _font(14)
    panel_w = w // 2
    panels = (("fid", 1.0, "fine-tuned FID (lower is better)"), ("kid", 1e3, "fine-tuned KID x 1e3"))
    for p, (metric, scale, ylabel) in enumerate(panels):
        ox = p * panel_w
        xs = [v for s in sources for v in s["selection"]["recall_ci"]] + [s["selection"]["recall"] for s in sources]
        ys = [scale * float(r[metric]) for s in sources for r in s["finetune"]["per_seed"]]
        xlo, xhi = limits(xs)
        xlo, xhi = max(xlo, -0.02), min(xhi, 1.02)  # recall lives in [0, 1]
        ylo, yhi = limits(ys)
        xticks, yticks = nice_ticks(xlo, xhi), nice_ticks(ylo, yhi)
        xlim = (xlo, xhi)
        ylim = (min(yticks[0], ylo), max(yticks[-1], yhi))
        ax = Axes(draw, (ox + 70, 40, ox + panel_w - 20, h - 60), xlim, ylim)
        ax.frame(xticks, yticks, font)
        for s in sources:
            colour = FAMILY_COLOURS.get(s["family"], (0, 0, 0))
            sel, ft = s["selection"], s["finetune"]
            x = float(sel["recall"])
            y = scale * float(ft[metric]["mean"])
            lo_x, _ = ax.px(float(sel["recall_ci"][0]), y)
            hi_x, py = ax.px(float(sel["recall_ci"][1]), y)
            draw.line([(lo_x, py), (hi_x, py)], fill=colour + (255,), width=2)
            px, lo_y = ax.px(x, scale * float(ft[metric]["min"]))
            _, hi_y = ax.px(x, scale * float(ft[metric]["max"]))
            draw.line([(px, lo_y), (px, hi_y)], fill=colour + (255,), width=2)
            ax.points([x] * len(ft["per_seed"]), [scale * float(r[metric]) for r in ft["per_seed"]], colour,
                      radius=2.0, alpha=150)
            ax.points([x], [y], colour, radius=5.0)
            draw.text((px + 6, py - 14), s["label"], fill=(0, 0, 0), font=font)
        draw.text((ox + (70 + panel_w - 20) / 2, h - 22), "recall of the target (before transfer)", fill=(0, 0, 0),
                  font=big, anchor="ma")
        label_img = Image.new("RGBA", (h, 20), (255, 255, 255, 0))
        ImageDraw.Draw(label_img).text((h / 2, 2), ylabel, fill=(0, 0, 0), font=big, anchor="ma")
        rot = label_img.rotate(90, expand=True)
        img.paste(rot, (ox + 4, 0), rot)
    draw.text((w / 2, 12), "recall (95% bootstrap CI) vs fine-tuned outcome (mean, per-seed range)", fill=(0, 0, 0),
              font=big, anchor="ma")
    path = pathlib.Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=True)


# ---------------------------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------------------------


def _check_outdir(out: pathlib.Path, stamp: dict) -> None:
    """Create ``out`` or accept it when it holds a run of the same configuration and seed (a resume)."""
    cfg_path = out / "config.json"
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; pass another --outdir")
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if old != _json_safe(stamp):
            diff = sorted(k for k in set(old) | set(stamp) if old.get(k) != _json_safe(stamp).get(k))
            raise FileExistsError(f"{out} holds an image-scale run with a different configuration ({', '.join(diff)} "
                                  "differ); pass another --outdir or remove it")
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists, is not empty and holds no image-scale run (config.json); pass another "
                              "--outdir or remove it")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(cfg_path, stamp)


def run_image_scale(config: ImageScaleConfig, outdir: PathLike, *, seed: int = 0, device: Optional[str] = None,
                    plots: bool = True, progress: Optional[Callable[[str], None]] = print) -> dict:
    """Run the image-scale study into ``outdir`` and return the results (also written to ``results.json``).

    ``progress`` receives one line per stage and per fine-tuning (None: silent). ``device`` defaults to CUDA when
    visible, else the CPU. Every number is a function of ``seed`` (and the torch thread count)."""
    from ..demo.run import _device_name
    from ..metrics.extractors import get_extractor

    if not isinstance(config, ImageScaleConfig):
        raise TypeError(f"config must be an ImageScaleConfig, got {type(config).__name__}")
    _int_at_least("seed", seed, 0)
    if seed + EVAL_SEED_OFFSET + config.eval_num >= 2**32:
        raise ValueError(f"seed must be below {2**32 - EVAL_SEED_OFFSET - config.eval_num}, got {seed}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device cuda was asked for, but no CUDA device is visible")
    get_extractor(config.extractor)  # an unknown name fails here, before any work
    out = pathlib.Path(outdir)
    _check_outdir(out, {"format": RESULTS_FORMAT, "config": config.as_dict(), "seed": seed})
    stages = _Stages(progress or (lambda s: None))
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    # 1-3. data, pretraining and the sources -----------------------------------------------------------------------
    sources: list[dict] = []
    for variant in config.data_sources:
        sources.extend(_pretrain_family(config, variant, out, seed, device, stages))
    if config.random_init:
        stages.enter("sources", f"sources: the random initialisation (seed {seed}, the pretraining architecture)")
        dest = out / "sources" / f"{RANDOM_INIT}.pt"
        if not dest.is_file():
            _invalidate(out, [RANDOM_INIT])
            write_random_init(dest, out / sources[0]["snapshot"], seed)
        sources.insert(0, {"label": RANDOM_INIT, "family": RANDOM_INIT, "kimg": 0.0,
                           "snapshot": f"sources/{RANDOM_INIT}.pt", "run": None})

    # 4. selection ---------------------------------------------------------------------------------------------------
    target_zip, ref_path, real_stats = _target_stats(config, out, device, stages)
    real = real_stats.features().double().cpu()
    selection = _select(config, sources, ref_path, out, seed, device, stages)

    # 5. fine-tuning and evaluation ----------------------------------------------------------------------------------
    stages.enter("finetune", f"finetune: {len(sources)} sources x {config.finetune_seeds} seeds, "
                             f"{config.finetune_kimg:g} kimg each ({config.method}); evaluation on "
                             f"{config.eval_num} samples vs {real.shape[0]} target images")
    ext = get_extractor(config.extractor, device=device)
    for s in sources:
        per_seed = []
        for r in range(config.finetune_seeds):
            rec = _finetune_one(config, s, r, out, target_zip, real, ext, seed, device, stages)
            per_seed.append(rec)
            stages.say(f"  {s['label']:<28} seed {r}: FID {rec['fid']:8.2f}  KID x1e3 {1e3 * rec['kid']:7.2f}  "
                       f"({rec['finetune_seconds']:.0f} s + {rec['eval_seconds']:.0f} s)")
        keep = ("seed_index", "train_seed", "run", "fid", "kid", "kid_std", "precision", "recall", "density",
                "coverage")
        s["selection"] = {"recall": selection[s["label"]]["recall"],
                          "recall_ci": [selection[s["label"]]["recall_low"], selection[s["label"]]["recall_high"]],
                          **{k: selection[s["label"]][k] for k in ("precision", "density", "coverage", "n_target",
                                                                    "n_samples")}}
        s["finetune"] = {"per_seed": [{k: rec[k] for k in keep} for rec in per_seed],
                         "fid": _seed_summary([rec["fid"] for rec in per_seed]),
                         "kid": _seed_summary([rec["kid"] for rec in per_seed]),
                         "precision_mean": _seed_summary([rec["precision"] for rec in per_seed])["mean"],
                         "recall_mean": _seed_summary([rec["recall"] for rec in per_seed])["mean"],
                         "num_real": per_seed[0]["num_real"], "num_fake": per_seed[0]["num_fake"]}

    # 6. compare -------------------------------------------------------------------------------------------------
    stages.enter("compare", "compare: recall order vs fine-tuned FID / KID order")
    last = {}
    for s in sources:
        if s["family"] == RANDOM_INIT or s["kimg"] >= last.get(s["family"], {"kimg": -1.0})["kimg"]:
            last[s["family"]] = s
    family_sources = [last[f] for f in ([RANDOM_INIT] if config.random_init else []) + list(config.data_sources)]
    comparison = {"families": compare_rankings(family_sources),
                  "all": compare_rankings(sources) if len(sources) > len(family_sources) else None}
    answer = _verdict(comparison["families"], family_sources)
    stages.say("families: " + answer)
    if comparison["all"] is not None:
        a = comparison["all"]
        stages.say(f"all {len(sources)} sources: Spearman(recall, -FID) = {a['fid']['spearman']['rho']:.3f}, "
                   f"Kendall tau = {a['fid']['kendall']['tau']:.3f}; orders agree: {a['fid']['orders_agree']}")
    if plots:
        plot_recall_vs_outcome(out / PLOT_NAME, sources)
    total = stages.finish()
    import fastgan

    results = {
        "format": RESULTS_FORMAT, "version": RESULTS_VERSION, "seed": seed, "config": config.as_dict(),
        "protocol": {
            "target": {"name": config.target, "num_images": int(real.shape[0]), "resolution": config.resolution},
            "extractor": ext.describe(),
            "selection": {"function": "fastgan.metrics.rank_sources (fastgan select-source)",
                          "samples_per_source": config.select_num, "latent_seeds": [seed, seed + config.select_num - 1],
                          "k": config.k, "inclusive": False, "bootstrap": config.bootstrap,
                          "confidence": config.confidence},
            "finetune": {"function": "fastgan.transfer.transfer (fastgan transfer)", "method": config.method,
                         "kimg": config.finetune_kimg, "train_seeds": [seed + r for r in range(config.finetune_seeds)]},
            "evaluation": {"samples": config.eval_num, "target_images": int(real.shape[0]),
                           "latent_seeds": [seed + EVAL_SEED_OFFSET, seed + EVAL_SEED_OFFSET + config.eval_num - 1],
                           "network": "G_ema of the final snapshot", "kid_subset_size": min(int(real.shape[0]),
                                                                                         config.eval_num, 1000),
                           "kid_subsets": 100, "prdc_k": config.k, "prdc_inclusive": True},
            "random_init": "the untrained G, G_ema and D built with torch.manual_seed(seed), as every pretraining "
                           "run starts" if config.random_init else None,
        },
        "sources": sources,
        "comparison": comparison,
        "answer": answer,
        "environment": {"fastgan": fastgan.__version__, "torch": torch.__version__,
                        "python": platform.python_version(), "device": str(device),
                        "device_name": _device_name(str(device)), "torch_threads": torch.get_num_threads(),
                        "load_average_at_start": load_start},
        "timings": stages.timings,
        "total_seconds": total,
        "files": ["results.json"] + ([PLOT_NAME] if plots else []),
    }
    _write_json(out / "results.json", results)
    stages.say(f"done in {total:.0f} s: {out / 'results.json'}")
    return json.loads(json.dumps(_json_safe(results)))


__all__ = ["ImageScaleConfig", "run_image_scale", "compare_rankings", "plot_recall_vs_outcome", "write_random_init"]

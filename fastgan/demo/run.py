"""``fastgan demo``: the whole story on one machine, no GPU and no network needed.

1. **data**      Primitives-PS images synthesised on the fly, and the real transfer target (``lfw-faces``: 100 face
                 crops that ship inside scikit-image), both as dataset zips.
2. **pretrain**  a small StyleGAN2-style generator trained on the synthetic images; every snapshot is a candidate
                 source.
3. **select**    the candidate with the highest recall of the target (When/Why/Which), with bootstrap intervals.
4. **transfer**  the chosen source moved to the target with AdaFM (+ a vision-aided discriminator on the
                 EfficientNet-Lite0 that ships in an installed package), and a from-scratch run on the same target
                 with the same budget for comparison.
5. **magnet**    a MaGNET pool (Jacobian log-volumes) of the transferred generator and volume-weighted samples.
6. **evaluate**  FID, KID, precision and recall (EfficientNet-Lite0 features) of from-scratch, transferred-naive and
                 transferred-MaGNET samples against the target.

Outputs in ``outdir``: ``reals.png``, ``fakes-*.png``, ``curves.png``, ``metrics.png``, ``summary.json``,
``summary.md``, the datasets, the run directories and the pool. Every number in the summary is computed in the run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import platform
import time
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
import torch

from .._io import atomic_path

PathLike = Union[str, os.PathLike]
EXTRACTOR = "efficientnet-lite0-offline"
VISION_BACKBONE = "efficientnet-lite0"
SUMMARY_FORMAT = "fastgan-demo-summary"
STAGES = ("data", "pretrain", "select", "transfer", "magnet", "evaluate")


@dataclass(frozen=True)
class DemoConfig:
    """One demo size. ``default`` fits 10 minutes on 2 CPU cores, ``quick`` 2 minutes, ``cuda`` is larger."""
    resolution: int
    synth_images: int
    batch: int
    pretrain_kimg: float
    pretrain_snapshots: int   # candidate sources (snapshots of the pretraining run)
    transfer_kimg: float
    select_num: int           # generated images per candidate for recall
    eval_num: int             # generated images per evaluated model
    pool_num: int             # MaGNET pool size
    proj_dim: int
    top_k: int
    vision: bool = True
    cfg: str = "tiny"


PRESETS: dict[str, DemoConfig] = {
    "quick": DemoConfig(resolution=16, synth_images=256, batch=16, pretrain_kimg=0.384, pretrain_snapshots=3,
                        transfer_kimg=0.128, select_num=48, eval_num=48, pool_num=64, proj_dim=32, top_k=16),
    "default": DemoConfig(resolution=32, synth_images=1000, batch=16, pretrain_kimg=3.0, pretrain_snapshots=4,
                          transfer_kimg=1.0, select_num=150, eval_num=200, pool_num=300, proj_dim=64, top_k=30),
    "cuda": DemoConfig(resolution=64, synth_images=20000, batch=32, pretrain_kimg=200.0, pretrain_snapshots=5,
                       transfer_kimg=60.0, select_num=1000, eval_num=2000, pool_num=8000, proj_dim=128, top_k=30),
}


class _Progress:
    """Stage lines with elapsed time on stdout (and nothing else), so the demo shows where it is."""

    def __init__(self, total_stages: int, quiet: bool = False):
        self.total, self.quiet, self.t0 = total_stages, quiet, time.time()
        self.index, self.timings = 0, {}
        self._stage_t0 = None
        self._name = None

    def stage(self, name: str, what: str) -> None:
        self._close()
        self.index += 1
        self._name, self._stage_t0 = name, time.time()
        self.say(f"[{self.index}/{self.total}] {what}")

    def _close(self) -> None:
        if self._name is not None:
            self.timings[self._name] = round(time.time() - self._stage_t0, 2)
            self._name = None

    def say(self, line: str) -> None:
        if not self.quiet:
            print(f"[demo {time.time() - self.t0:6.1f}s] {line}", flush=True)

    def finish(self) -> float:
        self._close()
        return time.time() - self.t0


def _write_json(path: pathlib.Path, obj) -> None:
    with atomic_path(path) as tmp:
        pathlib.Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _snapshots(run_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(run_dir.glob("network-snapshot-*.pt"))


def _snapshot_kimg(path: pathlib.Path) -> float:
    return float(path.stem.rsplit("-", 1)[-1])  # network-snapshot-<kimg>.pt


def _pick_candidates(snaps: list[pathlib.Path], count: int) -> list[pathlib.Path]:
    """``count`` snapshots spread over the run, the first and the last always among them."""
    if len(snaps) <= count:
        return snaps
    idx = sorted({round(i * (len(snaps) - 1) / (count - 1)) for i in range(count)})
    return [snaps[i] for i in idx]


def extractor_device(extractor) -> torch.device:
    return next(extractor.parameters()).device


def _images_from_latents(G, latents: torch.Tensor, noise_seeds) -> np.ndarray:
    from ..sampling.generate import generate_from_latents

    return np.stack(list(generate_from_latents(G, latents, noise_seeds=list(noise_seeds), batch_size=32)))


def _features_of(images: np.ndarray, extractor) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    dev = extractor_device(extractor)
    out = [extractor(x[i:i + 64].to(dev)) for i in range(0, x.shape[0], 64)]
    return torch.cat(out).double().cpu()


def _metrics(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict:
    from ..metrics import functional as F

    size = min(real.shape[0], fake.shape[0], 1000)
    kid, kid_std = F.kid_from_features(real, fake, num_subsets=100, subset_size=size, seed=0)
    pr = F.prdc(real, fake, k=k, inclusive=True)
    return {"fid": F.fid_from_features(real, fake), "kid": kid, "kid_std": kid_std,
            "precision": pr["precision"], "recall": pr["recall"], "density": pr["density"],
            "coverage": pr["coverage"], "num_real": int(real.shape[0]), "num_fake": int(fake.shape[0]), "k": k}


def _curves(run_dir: pathlib.Path) -> dict[str, list[tuple[float, float]]]:
    """{stat: [(kimg, mean), ...]} of the losses in a run's stats.jsonl."""
    out: dict[str, list[tuple[float, float]]] = {}
    path = run_dir / "stats.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        for key in ("Loss/G/loss", "Loss/D/loss", "Loss/vision/G", "Loss/vision/D"):
            st = rec["stats"].get(key)
            if st is not None and st.get("num", 0) > 0 and math.isfinite(st["mean"]):
                out.setdefault(key, []).append((float(rec["kimg"]), float(st["mean"])))
    return out


def _grid(images: np.ndarray, cols: int) -> np.ndarray:
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = img
    return canvas


def _save_grid(path: pathlib.Path, images: np.ndarray, cols: int = 8, scale: int = 1) -> None:
    from PIL import Image

    grid = _grid(images, cols)
    im = Image.fromarray(grid if grid.shape[2] == 3 else grid[..., 0])
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def _dataset_images(data: pathlib.Path, count: int) -> np.ndarray:
    from ..metrics.reference import iter_images

    out = []
    for x in iter_images(data, batch_size=64):
        out.append(x.permute(0, 2, 3, 1).numpy())
        if sum(len(o) for o in out) >= count:
            break
    return np.concatenate(out)[:count]


def _markdown(summary: dict) -> str:
    m = summary["metrics"]
    lines = [
        "# fastgan demo",
        "",
        f"Preset `{summary['preset']}` on {summary['environment']['device_name']}, "
        f"{summary['total_seconds']:.0f} s in all. Target: `{summary['target']['name']}` "
        f"({summary['target']['num_images']} real images, {summary['config']['resolution']} px); "
        f"features: `{summary['extractor']}`.",
        "",
        "## Source selection (recall of the target, higher is better)",
        "",
        "| candidate | kimg | recall | 95% CI | precision | chosen |",
        "|---|---|---|---|---|---|",
    ]
    for c in summary["selection"]:
        lines.append(f"| {c['name']} | {c['kimg']:g} | {c['recall']:.3f} | [{c['recall_ci'][0]:.3f}, "
                     f"{c['recall_ci'][1]:.3f}] | {c['precision']:.3f} | {'yes' if c['chosen'] else ''} |")
    lines += [
        "",
        "## Target metrics (lower FID / KID, higher precision / recall are better)",
        "",
        "| model | sampler | FID | KID x 1e3 | precision | recall | density | coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"scratch": ("from scratch", "naive"), "transfer": ("transferred (AdaFM)", "naive"),
             "transfer_magnet": ("transferred (AdaFM)", "MaGNET")}
    for key, (model, sampler) in names.items():
        r = m[key]
        lines.append(f"| {model} | {sampler} | {r['fid']:.2f} | {1e3 * r['kid']:.2f} ± {1e3 * r['kid_std']:.2f} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {r['density']:.3f} | {r['coverage']:.3f} |")
    lines += [
        "",
        "Stage timings (s): " + ", ".join(f"{k} {summary['timings'][k]:.1f}" for k in STAGES
                                          if k in summary["timings"]),
        "",
        "These are small models trained for minutes; the numbers show the workflow, not the methods' ceiling.",
        "",
    ]
    return "\n".join(lines)


def run_demo(outdir: PathLike = "fastgan-demo", *, preset: str = "default", device: Optional[str] = None,
             seed: int = 0, quiet: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run the demo into ``outdir`` and return the summary (also written to ``summary.json`` / ``summary.md``).

    ``preset``: ``default`` (CPU, about 10 minutes on 2 cores), ``quick`` (about 2 minutes) or ``cuda``
    (a larger configuration for a GPU). ``device`` defaults to CUDA when visible, else the CPU."""
    from ..metrics import functional as F  # noqa: F401  (import errors surface before any work)
    from ..metrics.extractors import get_extractor
    from ..metrics.reference import compute_reference
    from ..metrics.selection import rank_sources
    from ..nn.checkpoint import load_network
    from ..sampling import MagnetSampler, compute_pool
    from ..synth import PrimitivesPS
    from ..synth.dataset import write_dataset
    from ..train.loop import train
    from ..train.options import TrainOptions
    from ..transfer.recipe import transfer
    from .data import PACKAGED_SETS, write_packaged_set

    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose from {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is visible")
    out = pathlib.Path(outdir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; the demo writes a fresh folder (pass another --outdir "
                              "or remove it)")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    prog = _Progress(len(STAGES), quiet=quiet)
    runs = out / "runs"
    common = dict(cfg=cfg.cfg, batch=cfg.batch, seed=seed, aug="diffaug", progress=False, nobench=True,
                  keep_states=1)

    # 1. data -------------------------------------------------------------------------------------------------
    prog.stage("data", f"data: {cfg.synth_images} Primitives-PS images and the lfw-faces target at "
                       f"{cfg.resolution} px")
    synth_zip, target_zip = out / "primitives-ps.zip", out / "lfw-faces.zip"
    gen = PrimitivesPS(resolution=cfg.resolution, seed=seed, device=device)
    write_dataset(synth_zip, gen, cfg.synth_images, progress=False, log=lambda s: None)
    write_packaged_set("lfw-faces", target_zip, resolution=cfg.resolution, log=lambda s: None)

    # 2. pretrain ---------------------------------------------------------------------------------------------
    prog.stage("pretrain", f"pretrain: {cfg.pretrain_kimg:g} kimg on Primitives-PS ({cfg.cfg} config)")
    tick = cfg.pretrain_kimg / max(cfg.pretrain_snapshots - 1, 1) / 2
    res = train(TrainOptions(data=str(synth_zip), outdir=str(runs), kimg=cfg.pretrain_kimg, tick=tick, snap=1,
                             img_snap=10**6, desc="pretrain-primitives", **common), device=device, quiet=True)
    _check_run(res, "pretraining")
    pre_dir = res.run_dir
    candidates = _pick_candidates(_snapshots(pre_dir), cfg.pretrain_snapshots)
    prog.say(f"  {len(candidates)} candidate snapshots in {pre_dir.name}")

    # 3. select -----------------------------------------------------------------------------------------------
    prog.stage("select", f"select: recall of the target against {cfg.select_num} samples of each candidate")
    # the target is embedded once: its kept features serve the selection here and the evaluation (stage 6)
    target_stats, _ = compute_reference(target_zip, out / "lfw-faces-ref.npz", extractor=EXTRACTOR, device=device,
                                        keep_features=True, force=True, log=lambda s: None)
    scores = rank_sources([str(c) for c in candidates], ref=str(out / "lfw-faces-ref.npz"), num=cfg.select_num,
                          k=5, bootstrap=200, seed=seed, device=device, out=str(out / "selection.json"),
                          log=lambda s: None)
    by_name = {c.name: c for c in candidates}  # snapshot names are unique within one run
    best = by_name[scores[0].name]
    selection = [{"name": sc.name, "kimg": _snapshot_kimg(by_name[sc.name]), "recall": sc.recall,
                  "recall_ci": [sc.recall_low, sc.recall_high], "precision": sc.precision, "density": sc.density,
                  "coverage": sc.coverage, "chosen": sc.name == best.name} for sc in scores]
    prog.say(f"  chosen: {best.name} (recall {scores[0].recall:.3f})")

    # 4. transfer and from scratch ----------------------------------------------------------------------------
    vision = VISION_BACKBONE if cfg.vision else None
    prog.stage("transfer", f"transfer: AdaFM{' + vision-aided D (' + vision + ')' if vision else ''} and from "
                           f"scratch, {cfg.transfer_kimg:g} kimg each on the target")
    t_tick = cfg.transfer_kimg / 4
    extra = {"vision_aided": vision, "vision_warmup": 0.0} if vision else {}
    extra["adafm_front_res"] = min(16, cfg.resolution // 2)  # AdaFM needs transferred blocks above the front
    res_t = transfer(str(best), str(target_zip), str(runs), method="adafm", device=device, quiet=True,
                     kimg=cfg.transfer_kimg, tick=t_tick, snap=10**6, img_snap=10**6, desc="transfer-adafm",
                     **extra, **common)
    _check_run(res_t, "transfer")
    res_s = train(TrainOptions(data=str(target_zip), outdir=str(runs), kimg=cfg.transfer_kimg, tick=t_tick,
                               snap=10**6, img_snap=10**6, desc="scratch", **common), device=device, quiet=True)
    _check_run(res_s, "from-scratch training")
    snap_t, snap_s = _snapshots(res_t.run_dir)[-1], _snapshots(res_s.run_dir)[-1]

    # 5. MaGNET -----------------------------------------------------------------------------------------------
    prog.stage("magnet", f"magnet: Jacobian log-volumes of {cfg.pool_num} latents (proj_dim {cfg.proj_dim})")
    pool = compute_pool(str(snap_t), cfg.pool_num, out / "magnet-pool.npz", proj_dim=cfg.proj_dim, seed=seed + 10**6,
                        device=device, progress=False, log=lambda s: None)
    top_k = min(cfg.top_k, pool.log_sv.shape[1])
    sampler = MagnetSampler(pool, rho=1.0, top_k=top_k)
    gen_t = torch.Generator().manual_seed(seed)
    n_magnet = min(cfg.eval_num, int(sampler.valid.sum()))
    idx = sampler.sample_indices(n_magnet, replace=False, generator=gen_t)
    magnet_latents = pool.latents[idx]

    # 6. evaluate ---------------------------------------------------------------------------------------------
    prog.stage("evaluate", f"evaluate: FID / KID / precision / recall on {EXTRACTOR} features")
    ext = get_extractor(EXTRACTOR, device=device)
    real = target_stats.features()
    G_s = load_network(snap_s, "G_ema", device=device)
    G_t = load_network(snap_t, "G_ema", device=device)
    seeds = list(range(seed, seed + cfg.eval_num))
    from ..sampling.generate import seed_latents

    imgs_s = _images_from_latents(G_s, seed_latents(seeds, G_s.z_dim), seeds)
    imgs_t = _images_from_latents(G_t, seed_latents(seeds, G_t.z_dim), seeds)
    imgs_m = _images_from_latents(G_t, magnet_latents, seeds[:n_magnet])
    k = 5
    metrics = {"scratch": _metrics(real, _features_of(imgs_s, ext), k),
               "transfer": _metrics(real, _features_of(imgs_t, ext), k),
               "transfer_magnet": _metrics(real, _features_of(imgs_m, ext), k)}

    # outputs -------------------------------------------------------------------------------------------------
    from ..plots import bar_png, line_png

    n_show = 32
    scale = max(1, 64 // cfg.resolution)
    _save_grid(out / "reals.png", _dataset_images(target_zip, n_show), scale=scale)
    _save_grid(out / "fakes-pretrained.png", _images_from_latents(
        load_network(best, "G_ema", device=device), seed_latents(seeds[:n_show], G_t.z_dim), seeds[:n_show]),
        scale=scale)
    _save_grid(out / "fakes-scratch.png", imgs_s[:n_show], scale=scale)
    _save_grid(out / "fakes-transfer.png", imgs_t[:n_show], scale=scale)
    _save_grid(out / "fakes-transfer-magnet.png", imgs_m[:n_show], scale=scale)
    curves = {"pretrain": _curves(pre_dir), "transfer": _curves(res_t.run_dir), "scratch": _curves(res_s.run_dir)}
    series = []
    for run, stats in curves.items():
        for key in ("Loss/G/loss", "Loss/D/loss"):
            if stats.get(key):
                series.append({"label": f"{run} {key.split('/')[1]}", "points": stats[key]})
    line_png(out / "curves.png", series, xlabel="kimg", ylabel="loss", title="training losses")
    labels = ["scratch", "transfer", "transfer+MaGNET"]
    keys = ["scratch", "transfer", "transfer_magnet"]
    bar_png(out / "metrics.png", {
        "FID (lower is better)": [metrics[k_]["fid"] for k_ in keys],
        "precision": [metrics[k_]["precision"] for k_ in keys],
        "recall": [metrics[k_]["recall"] for k_ in keys],
    }, labels, title="target metrics")

    total = prog.finish()
    summary = {
        "format": SUMMARY_FORMAT, "version": 1, "preset": preset, "config": dataclasses.asdict(cfg), "seed": seed,
        "extractor": EXTRACTOR, "vision_backbone": vision,
        "target": {"name": "lfw-faces", "source": PACKAGED_SETS["lfw-faces"], "num_images": int(real.shape[0])},
        "runs": {"pretrain": pre_dir.name, "transfer": res_t.run_dir.name, "scratch": res_s.run_dir.name},
        "chosen_source": best.name, "selection": selection, "metrics": metrics,
        "magnet": {"pool": len(pool), "valid": int(sampler.valid.sum()), "proj_dim": cfg.proj_dim, "top_k": top_k,
                   "rho": 1.0, "samples": n_magnet},
        "timings": prog.timings, "total_seconds": round(total, 2),
        "environment": {"device": str(device), "device_name": _device_name(device), "torch": torch.__version__,
                        "python": platform.python_version(), "threads": torch.get_num_threads()},
        "files": ["reals.png", "fakes-pretrained.png", "fakes-scratch.png", "fakes-transfer.png",
                  "fakes-transfer-magnet.png", "curves.png", "metrics.png", "summary.json", "summary.md",
                  "selection.json", "lfw-faces-ref.npz", "magnet-pool.npz"],
    }
    _write_json(out / "summary.json", summary)
    with atomic_path(out / "summary.md") as tmp:
        pathlib.Path(tmp).write_text(_markdown(summary))
    prog.say(f"done in {total:.0f} s: {out / 'summary.md'}")
    if not quiet:
        print(_markdown(summary))
    return summary


def _device_name(device: str) -> str:
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    proc = platform.processor() or platform.machine()
    return f"CPU ({proc}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _check_run(res, what: str) -> None:
    if res.status != "finished":
        raise RuntimeError(f"the demo's {what} ended with status {res.status!r}; see {res.run_dir / 'log.txt'}")


__all__ = ["DemoConfig", "PRESETS", "run_demo"]

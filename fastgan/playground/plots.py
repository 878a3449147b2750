"""PNG figures of the playground drawn with Pillow (a core dependency), so no plotting library is needed.

- ``recall_vs_w1.png`` and ``gradsim_vs_w1.png``: one point per source checkpoint, coloured by family, with axes,
  ticks, labels and the Pearson r of each family in the legend (``gradsim`` uses the notebook's loss-gradient sign);
- ``samples.png``: Source-I, Source-II and the target, the last pretrained Source-I generator, and the fine-tuned
  generators started from the checkpoints with the best and the worst outcome (their samples at the step of min W1).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from PIL import Image, ImageDraw

from fastgan._io import atomic_path
from fastgan.plots import Axes as _Axes
from fastgan.plots import _font, nice_ticks, scatter_png
from fastgan.train.rng import derive

from . import models, toy

COLOURS = {"source-1": (31, 119, 180), "source-2": (44, 160, 44), "target": (214, 39, 40), "generated": (230, 160, 0)}


def samples_png(path, panels: Sequence[tuple[str, torch.Tensor, tuple]], limit: float = 32.0, cols: int = 3,
                panel: int = 260) -> None:
    """A grid of 2-D point clouds on [-limit, limit]²; ``panels``: (title, points (N, 2), colour)."""
    rows = max(1, math.ceil(len(panels) / cols))
    img = Image.new("RGB", (cols * panel, rows * (panel + 20)), (255, 255, 255))
    draw = ImageDraw.Draw(img, "RGBA")
    font = _font(11)
    ticks = nice_ticks(-limit, limit, 5)
    for i, (title, pts, colour) in enumerate(panels):
        r, c = divmod(i, cols)
        ox, oy = c * panel, r * (panel + 20)
        box = (ox + 34, oy + 20, ox + panel - 8, oy + panel - 14)
        ax = _Axes(draw, box, (-limit, limit), (-limit, limit))
        ax.frame(ticks, ticks, _font(9))
        p = pts.detach().cpu().double()
        ax.points(p[:, 0].tolist(), p[:, 1].tolist(), tuple(colour), radius=1.2, alpha=110)
        draw.text((ox + panel / 2 + 13, oy + 4), title, fill=(0, 0, 0), font=font, anchor="ma")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=True)


def _series(results: dict, prop: str) -> list[dict]:
    out = []
    for fam in results["protocol"]["families"]:
        rows = [r for r in results["checkpoints"] if r["family"] == fam]
        st = results["correlations"][fam][f"{prop}_vs_w1"]
        rtxt = "n/a" if st["r"] is None else f"{st['r']:+.2f}"
        out.append({"label": f"{fam} (r = {rtxt})", "colour": COLOURS[fam],
                    "x": [math.nan if r[prop] is None else r[prop] for r in rows],
                    "y": [math.nan if r["w1_min"] is None else r["w1_min"] for r in rows]})
    return out


def write_all(outdir, results: dict, ckpts: Optional[dict], samples: Optional[dict], seed: int) -> None:
    """Write the three figures of a study into ``outdir``."""
    import pathlib

    outdir = pathlib.Path(outdir)
    n = results["protocol"]["w1_points"]
    scatter_png(outdir / "recall_vs_w1.png", _series(results, "recall"), "recall of the target (k=5)",
                "fine-tuned W1 (min over steps)", "Source recall vs fine-tuned W1")
    scatter_png(outdir / "gradsim_vs_w1.png", _series(results, "grad_sim_loss_gradient"),
                "grad-D similarity (loss-gradient sign)", "fine-tuned W1 (min over steps)",
                "grad-D similarity vs fine-tuned W1")
    g = torch.Generator().manual_seed(derive(seed, 7) & (2**64 - 1))
    panels = [("Source-I", toy.source_1().sample(n, g), COLOURS["source-1"]),
              ("Source-II", toy.source_2().sample(n, g), COLOURS["source-2"]),
              ("Target", toy.target().sample(n, g), COLOURS["target"])]
    if ckpts:
        fam = results["protocol"]["families"][0]
        rec = ckpts[fam]
        last = len(rec["steps"]) - 1
        z = torch.randn(1, n, models.Z_DIM, generator=g)
        with torch.no_grad():
            pts = models.generator_forward(models.select_models(rec["generator"], [last]), z, training=False)[0]
        panels.append((f"{fam} G, step {rec['steps'][last]}", pts, COLOURS["generated"]))
    rows = [r for r in results["checkpoints"] if r["w1_min"] is not None]
    if samples and rows:
        best = min(rows, key=lambda r: r["w1_min"])
        worst = max(rows, key=lambda r: r["w1_min"])
        for tag, r in (("best", best), ("worst", worst)):
            pts = samples.get((r["family"], r["step"], r["w1_min_step"]))
            if pts is not None:
                panels.append((f"{tag}: tuned {r['family']}@{r['step']}, W1 {r['w1_min']:.2f}", pts,
                               COLOURS["generated"]))
    samples_png(outdir / "samples.png", panels)


__all__ = ["nice_ticks", "scatter_png", "samples_png", "write_all"]

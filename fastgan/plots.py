"""Small PNG charts drawn with Pillow (a core dependency), so no plotting library is needed: scatter, line and
grouped-bar charts with axes, round ticks, labels and a legend, written atomically. Used by the playground and the
demo.
"""
from __future__ import annotations

import math
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ._io import atomic_path

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got [{lo}, {hi}]")
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 0.5:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _fmt(v: float, step: float) -> str:
    decimals = next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * max(1.0, abs(step))), 6)
    return f"{v:.{decimals}f}"


class Axes:
    def __init__(self, draw: ImageDraw.ImageDraw, box, xlim, ylim):
        self.draw, self.box, self.xlim, self.ylim = draw, box, xlim, ylim

    def px(self, x: float, y: float) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        fx = (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

    def frame(self, xticks, yticks, font, grid=True):
        x0, y0, x1, y1 = self.box
        d = self.draw
        xstep = xticks[1] - xticks[0] if len(xticks) > 1 else 1.0
        ystep = yticks[1] - yticks[0] if len(yticks) > 1 else 1.0
        xticks = [t for t in xticks if self.xlim[0] <= t <= self.xlim[1]]
        yticks = [t for t in yticks if self.ylim[0] <= t <= self.ylim[1]]
        for t in xticks:
            px, _ = self.px(t, self.ylim[0])
            if grid:
                d.line([(px, y0), (px, y1)], fill=(225, 225, 225))
            d.line([(px, y1), (px, y1 + 4)], fill=(0, 0, 0))
            d.text((px, y1 + 6), _fmt(t, xstep), fill=(0, 0, 0), font=font, anchor="ma")
        for t in yticks:
            _, py = self.px(self.xlim[0], t)
            if grid:
                d.line([(x0, py), (x1, py)], fill=(225, 225, 225))
            d.line([(x0 - 4, py), (x0, py)], fill=(0, 0, 0))
            d.text((x0 - 6, py), _fmt(t, ystep), fill=(0, 0, 0), font=font, anchor="rm")
        d.rectangle(self.box, outline=(0, 0, 0))

    def points(self, xs, ys, colour, radius: float = 3.0, alpha: int = 255):
        fill = colour + (alpha,)
        for x, y in zip(xs, ys):
            if math.isfinite(x) and math.isfinite(y):
                px, py = self.px(x, y)
                self.draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=fill)


def limits(values: Sequence[float]) -> tuple[float, float]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return 0.0, 1.0
    lo, hi = min(v), max(v)
    pad = (hi - lo) * 0.05 or (abs(lo) * 0.05 or 0.5)
    return lo - pad, hi + pad


def scatter_png(path, series: Sequence[dict], xlabel: str, ylabel: str, title: str = "",
                size: tuple[int, int] = (560, 440)) -> None:
    """A scatter plot written atomically to ``path``. ``series``: dicts with label, colour (r, g, b), x, y."""
    w, h = size
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img, "RGBA")
    font, big = _font(12), _font(14)
    xs = [x for s in series for x in s["x"]]
    ys = [y for s in series for y in s["y"]]
    xticks = nice_ticks(*limits(xs))
    yticks = nice_ticks(*limits(ys))
    xlim = (min(xticks[0], limits(xs)[0]), max(xticks[-1], limits(xs)[1]))
    ylim = (min(yticks[0], limits(ys)[0]), max(yticks[-1], limits(ys)[1]))
    ax = Axes(draw, (70, 40, w - 20, h - 60), xlim, ylim)
    ax.frame(xticks, yticks, font)
    for s in series:
        ax.points(s["x"], s["y"], tuple(s["colour"]), radius=3.0, alpha=200)
    draw.text((w / 2, 12), title, fill=(0, 0, 0), font=big, anchor="ma")
    draw.text(((70 + w - 20) / 2, h - 22), xlabel, fill=(0, 0, 0), font=big, anchor="ma")
    label_img = Image.new("RGBA", (h, 20), (255, 255, 255, 0))
    ImageDraw.Draw(label_img).text((h / 2, 2), ylabel, fill=(0, 0, 0), font=big, anchor="ma")
    img.paste(label_img.rotate(90, expand=True), (4, 0), label_img.rotate(90, expand=True))
    ly = 46
    for s in series:
        draw.rectangle([w - 200, ly + 2, w - 190, ly + 12], fill=tuple(s["colour"]))
        draw.text((w - 184, ly), s["label"], fill=(0, 0, 0), font=font)
        ly += 16
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=True)




def _canvas(size: tuple[int, int]):
    img = Image.new("RGB", size, (255, 255, 255))
    return img, ImageDraw.Draw(img, "RGBA")


def _labels(img, draw, size, box, title: str, xlabel: str, ylabel: str) -> None:
    w, h = size
    big = _font(14)
    draw.text((w / 2, 12), title, fill=(0, 0, 0), font=big, anchor="ma")
    draw.text(((box[0] + box[2]) / 2, h - 22), xlabel, fill=(0, 0, 0), font=big, anchor="ma")
    label_img = Image.new("RGBA", (h, 20), (255, 255, 255, 0))
    ImageDraw.Draw(label_img).text((h / 2, 2), ylabel, fill=(0, 0, 0), font=big, anchor="ma")
    rotated = label_img.rotate(90, expand=True)
    img.paste(rotated, (4, 0), rotated)


def _legend(draw, entries: Sequence[tuple[str, tuple]], x: float, y: float) -> None:
    font = _font(12)
    for label, colour in entries:
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=tuple(colour))
        draw.text((x + 16, y), label, fill=(0, 0, 0), font=font)
        y += 16


def _save(img, path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=True)


def line_png(path, series: Sequence[dict], xlabel: str, ylabel: str, title: str = "",
             size: tuple[int, int] = (640, 440)) -> None:
    """A line chart written atomically to ``path``. ``series``: dicts with ``label``, ``points`` [(x, y), ...] and
    optionally ``colour`` (r, g, b); non-finite points break the line. An empty ``series`` draws empty axes."""
    img, draw = _canvas(size)
    w, h = size
    xs = [p[0] for s in series for p in s["points"]]
    ys = [p[1] for s in series for p in s["points"]]
    xl, yl = limits(xs), limits(ys)
    xticks, yticks = nice_ticks(*xl), nice_ticks(*yl)
    box = (70, 40, w - 190, h - 60)
    ax = Axes(draw, box, xl, yl)  # ticks outside the padded data range are not drawn
    ax.frame(xticks, yticks, _font(12))
    legend = []
    for i, s in enumerate(series):
        colour = tuple(s.get("colour") or PALETTE[i % len(PALETTE)])
        run: list = []
        for x, y in list(s["points"]) + [(math.nan, math.nan)]:
            if math.isfinite(x) and math.isfinite(y):
                run.append(ax.px(x, y))
                continue
            if len(run) > 1:
                draw.line(run, fill=colour, width=2)
            elif len(run) == 1:
                px, py = run[0]
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
            run = []
        legend.append((s["label"], colour))
    _labels(img, draw, size, box, title, xlabel, ylabel)
    _legend(draw, legend, w - 180, 46)
    _save(img, path)


def bar_png(path, groups: dict[str, Sequence[float]], labels: Sequence[str], title: str = "",
            size: tuple[int, int] = (300, 300)) -> None:
    """Grouped bars, one panel per entry of ``groups`` ({panel title: one value per label}), side by side, each
    with its own y axis starting at 0 (or at the smallest value when it is negative); written atomically."""
    if not groups:
        raise ValueError("bar_png needs at least one group")
    for name, values in groups.items():
        if len(values) != len(labels):
            raise ValueError(f"group {name!r} has {len(values)} values for {len(labels)} labels")
    pw, ph = size
    w, h = pw * len(groups), ph + 40
    img, draw = _canvas((w, h))
    font = _font(12)
    for g, (name, values) in enumerate(groups.items()):
        finite = [v for v in values if v is not None and math.isfinite(v)]
        lo = min([0.0] + finite)
        hi = max([0.0] + finite) or 1.0
        yticks = nice_ticks(lo, hi + (hi - lo) * 0.05)
        ox = g * pw
        box = (ox + 56, 40, ox + pw - 12, ph - 30)
        ax = Axes(draw, box, (0.0, float(len(values))), (min(yticks[0], lo), max(yticks[-1], hi)))
        ax.frame([], yticks, font)
        for i, v in enumerate(values):
            colour = PALETTE[i % len(PALETTE)]
            if v is None or not math.isfinite(v):
                continue
            x0, y0 = ax.px(i + 0.15, max(v, 0.0) if lo >= 0 else v)
            x1, y1 = ax.px(i + 0.85, 0.0 if lo >= 0 else min(v, 0.0))
            draw.rectangle([x0, min(y0, y1), x1, max(y0, y1)], fill=colour)
            draw.text(((x0 + x1) / 2, min(y0, y1) - 2), f"{v:.3g}", fill=(0, 0, 0), font=font, anchor="md")
        draw.text((ox + pw / 2 + 22, 20), name, fill=(0, 0, 0), font=_font(13), anchor="ma")
    x = 10.0
    for i, lab in enumerate(labels):  # one legend row under the panels
        colour = PALETTE[i % len(PALETTE)]
        draw.rectangle([x, ph + 12, x + 10, ph + 22], fill=colour)
        draw.text((x + 16, ph + 10), lab, fill=(0, 0, 0), font=font)
        x += 16 + draw.textlength(lab, font=font) + 18
    if title:
        draw.text((w / 2, 2), title, fill=(0, 0, 0), font=_font(14), anchor="ma")
    _save(img, path)


__all__ = ["Axes", "PALETTE", "bar_png", "limits", "line_png", "nice_ticks", "scatter_png"]

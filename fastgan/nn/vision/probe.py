"""Linear-probe backbone selection and the progressive schedule of vision-aided-gan (METHODS.md 2.5, 2.6).

:func:`linear_probe_accuracy` fits a logistic regression (``C = 0.2``, sklearn's objective
``C * sum(log-loss) + 0.5 * ||w||^2`` with an unpenalised intercept, solved by L-BFGS in float64 in torch) on a
backbone's pooled features of real vs. generated images, split 50/50 into train / validation, repeated 3 times
with different splits; the score is the mean validation accuracy. A backbone whose features separate real from
fake well is the one whose discriminator has the most to say, so :func:`rank_backbones` orders candidates by it.

Images (``real_images`` / ``fake_images``) are any of: a tensor (N, 3, H, W), float in [-1, 1] or uint8; a list
or tuple of such batches; a callable with no argument returning an iterable of batches (called once per
backbone, so large sets stream from a loader or a generator); any other iterable of batches (read once; in
:func:`rank_backbones` it is first gathered in memory, since every candidate needs it). At most ``max_images``
(default 10000, as the official script) are used from each side.

:class:`ProgressiveSchedule`: plain training for ``warmup_kimg``, then up to ``max_backbones`` backbones, each
picked by the probe among the remaining candidates and followed by a stage of ``stage_kimg[i]`` kimg.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ...train import rng
from .backbones import VisionBackbone, build_backbone, canonical_spec

Images = Union[Tensor, Sequence[Tensor], Callable[[], Iterable[Tensor]], Iterable[Tensor]]
_MASK63 = 0x7FFF_FFFF_FFFF_FFFF


def fit_logistic_regression(x: Tensor, y: Tensor, *, C: float = 0.2, max_iter: int = 1000,
                            tol: float = 1e-9) -> Tuple[Tensor, Tensor]:
    """Binary L2 logistic regression: argmin_w,b C * sum_i log(1 + exp(-s_i (x_i . w + b))) + 0.5 ||w||^2, with
    s_i = 2 y_i - 1 (sklearn ``LogisticRegression(C=C)``, intercept unpenalised). Solved in float64 by L-BFGS
    with a strong-Wolfe line search on the equivalent mean loss + ||w||^2 / (2 C n). Returns (w (D,), b ())."""
    if not (C > 0 and math.isfinite(C)):
        raise ValueError(f"C must be a positive number, got {C!r}")
    if x.dim() != 2 or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"x must be (N, D) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    x = x.detach().to(torch.float64)
    s = y.detach().to(device=x.device, dtype=torch.float64) * 2 - 1
    n, d = x.shape
    params = torch.zeros(d + 1, dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, tolerance_grad=tol,
                            tolerance_change=1e-16, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = x @ params[:d] + params[d]
        f = F.softplus(-s * z).mean() + params[:d].square().sum() / (2 * C * n)
        f.backward()
        return f

    with torch.enable_grad():
        opt.step(closure)
    return params[:d].detach(), params[d].detach()


def _as_float_images(batch, arg: str) -> Tensor:
    if not isinstance(batch, Tensor) or batch.dim() != 4 or batch.shape[1] != 3:
        got = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(f"{arg}: batches must be RGB images (N, 3, H, W), got {got}")
    if batch.dtype == torch.uint8:
        return batch.float() / 127.5 - 1
    if not batch.is_floating_point():
        raise ValueError(f"{arg}: images must be uint8 or float in [-1, 1], got {batch.dtype}")
    return batch


def iter_image_batches(images: Images, batch_size: int, max_images: int, arg: str) -> Iterator[Tensor]:
    """Float [-1, 1] batches of at most ``batch_size`` images, ``max_images`` in all (see the module doc)."""
    if isinstance(images, Tensor):
        source: Iterable = (images,)
    elif callable(images):
        source = images()
    else:
        try:
            source = iter(images)
        except TypeError:
            raise TypeError(f"{arg} must be a tensor, a sequence of batches, a callable returning batches or an "
                            f"iterable of batches, got {type(images).__name__}") from None
    left = max_images
    for batch in source:
        batch = _as_float_images(batch, arg)
        for start in range(0, batch.shape[0], batch_size):
            if left <= 0:
                return
            chunk = batch[start:start + min(batch_size, left)]
            left -= chunk.shape[0]
            yield chunk
        if left <= 0:
            return


@torch.no_grad()
def pooled_features(backbone: VisionBackbone, images: Images, *, batch_size: int = 64, max_images: int = 10000,
                    arg: str = "images") -> Tensor:
    """(N, F) float32 pooled features of ``images`` (no augmentation), on the backbone's device."""
    device = backbone.mean.device
    feats = [backbone.pooled(b.to(device, torch.float32)).float()
             for b in iter_image_batches(images, batch_size, max_images, arg)]
    if not feats:
        raise ValueError(f"{arg} yielded no images")
    return torch.cat(feats)


def linear_probe_accuracy(backbone: Union[VisionBackbone, str], real_images: Images, fake_images: Images, *,
                          C: float = 0.2, repeats: int = 3, seed: int = 0, batch_size: int = 64,
                          max_images: int = 10000, weights: Optional[str] = None, device=None) -> float:
    """Mean validation accuracy of a logistic regression separating the backbone's pooled features of real from
    fake images, over ``repeats`` random 50/50 train/validation splits (``seed`` fixes them). ``backbone``: a
    :class:`VisionBackbone`, or a spec built with ``weights`` on ``device``."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if isinstance(backbone, str):
        backbone = build_backbone(backbone, weights=weights, device=device)
    real = pooled_features(backbone, real_images, batch_size=batch_size, max_images=max_images, arg="real_images")
    fake = pooled_features(backbone, fake_images, batch_size=batch_size, max_images=max_images, arg="fake_images")
    for arg, f in (("real_images", real), ("fake_images", fake)):
        if f.shape[0] < 2:
            raise ValueError(f"{arg}: the probe needs at least 2 images per side (half to fit, half to validate), "
                             f"got {f.shape[0]}")
    accs = []
    for r in range(repeats):
        g = torch.Generator().manual_seed(rng.derive(seed, r) & _MASK63)
        pr = torch.randperm(real.shape[0], generator=g).to(real.device)
        pf = torch.randperm(fake.shape[0], generator=g).to(fake.device)
        hr, hf = real.shape[0] // 2, fake.shape[0] // 2
        x_tr = torch.cat([real[pr[:hr]], fake[pf[:hf]]])
        y_tr = torch.cat([torch.ones(hr), torch.zeros(hf)]).to(real.device)
        x_va = torch.cat([real[pr[hr:]], fake[pf[hf:]]])
        y_va = torch.cat([torch.ones(real.shape[0] - hr), torch.zeros(fake.shape[0] - hf)]).to(real.device)
        w, b = fit_logistic_regression(x_tr, y_tr, C=C)
        pred = (x_va.double() @ w + b > 0).to(y_va.dtype)
        accs.append(float((pred == y_va).double().mean()))
    return sum(accs) / len(accs)


def rank_backbones(candidates: Sequence[str], real_images: Images, fake_images: Images, *,
                   weights: Optional[Mapping[str, str]] = None, device=None,
                   **probe_kwargs) -> List[Tuple[str, float]]:
    """[(spec, probe accuracy)] for every candidate, best first (ties keep the candidates' order). Each backbone
    is built, probed and released in turn; ``probe_kwargs`` go to :func:`linear_probe_accuracy`."""
    if isinstance(candidates, str):
        raise TypeError(f"candidates must be a sequence of backbone specs, got the string {candidates!r}")
    if not candidates:
        raise ValueError("rank_backbones needs at least one candidate")
    specs = [canonical_spec(c) for c in candidates]
    weights = dict(weights or {})
    batch_size = probe_kwargs.get("batch_size", 64)
    max_images = probe_kwargs.get("max_images", 10000)
    reusable = []
    for arg, imgs in (("real_images", real_images), ("fake_images", fake_images)):
        if not (isinstance(imgs, (Tensor, list, tuple)) or callable(imgs)):
            imgs = list(iter_image_batches(imgs, batch_size, max_images, arg))  # a one-shot iterable: keep it
        reusable.append(imgs)
    scores = []
    for spec, given in zip(specs, candidates):
        bb = build_backbone(spec, weights=weights.get(given, weights.get(spec)), device=device)
        scores.append((spec, linear_probe_accuracy(bb, reusable[0], reusable[1], **probe_kwargs)))
        del bb
    return sorted(scores, key=lambda t: -t[1])


class ProgressiveSchedule:
    """When to probe and add the next backbone (vision-aided-gan's ``vision-aided-gan.py``).

    Backbone k (0-based) is due at ``warmup_kimg + sum(stage_kimg[:k])`` kimg, measured from the previous
    addition (so a late addition delays the next one), while fewer than ``max_backbones`` were added and
    candidates remain. ``stage_kimg``: one value for every stage or one per backbone (the official default is
    4000, 1000, 1000 for about 1k images). ``lambda_vis`` is 0 during the warmup and 1 after, the weight of the
    vision-aided losses. The state is plain JSON (``state_dict`` / ``load_state_dict``) for exact resume.
    """

    def __init__(self, candidates: Sequence[str], *, warmup_kimg: float, max_backbones: int,
                 stage_kimg: Union[Sequence[float], float]):
        if isinstance(candidates, str):
            raise TypeError(f"candidates must be a sequence of backbone specs, got the string {candidates!r}")
        specs = [canonical_spec(c) for c in candidates]
        if len(set(specs)) != len(specs):
            raise ValueError(f"candidates contain duplicates: {specs}")
        if not (warmup_kimg >= 0 and math.isfinite(warmup_kimg)):
            raise ValueError(f"warmup_kimg must be >= 0, got {warmup_kimg!r}")
        if isinstance(max_backbones, bool) or not isinstance(max_backbones, int) or max_backbones < 0:
            raise ValueError(f"max_backbones must be an int >= 0, got {max_backbones!r}")
        stages = [float(stage_kimg)] * max_backbones if isinstance(stage_kimg, (int, float)) else \
            [float(s) for s in stage_kimg]
        if len(stages) < max_backbones:
            raise ValueError(f"stage_kimg has {len(stages)} entries, fewer than max_backbones={max_backbones}")
        if any(not (s > 0 and math.isfinite(s)) for s in stages):
            raise ValueError(f"stage_kimg entries must be > 0, got {stages}")
        self.candidates = specs
        self.warmup_kimg = float(warmup_kimg)
        self.max_backbones = max_backbones
        self.stage_kimg = stages[:max_backbones]
        self.added: List[dict] = []   # {"name", "accuracy", "nimg"} in order

    def next_due_nimg(self) -> Optional[int]:
        """The image count at which the next backbone is due, or None when no more will be added."""
        k = len(self.added)
        if k >= self.max_backbones or not self.remaining():
            return None
        if k == 0:
            return int(round(self.warmup_kimg * 1000))
        return int(self.added[-1]["nimg"]) + int(round(self.stage_kimg[k - 1] * 1000))

    def due(self, cur_nimg: int) -> bool:
        """True when it is time to probe the remaining candidates and add the best one."""
        nxt = self.next_due_nimg()
        return nxt is not None and cur_nimg >= nxt

    def end_nimg(self) -> Optional[int]:
        """The image count at which the last stage ends (None until every backbone was added)."""
        if len(self.added) < self.max_backbones or not self.added:
            return None
        return int(self.added[-1]["nimg"]) + int(round(self.stage_kimg[len(self.added) - 1] * 1000))

    def record_added(self, name: str, accuracy: float, cur_nimg: int) -> None:
        spec = canonical_spec(name)
        if spec not in self.remaining():
            raise ValueError(f"backbone {spec!r} is not a remaining candidate ({self.remaining()})")
        if len(self.added) >= self.max_backbones:
            raise ValueError(f"already added max_backbones={self.max_backbones} backbones")
        if self.added and cur_nimg < self.added[-1]["nimg"]:
            raise ValueError(f"cur_nimg={cur_nimg} is before the previous addition at {self.added[-1]['nimg']}")
        self.added.append({"name": spec, "accuracy": float(accuracy), "nimg": int(cur_nimg)})

    def remaining(self) -> List[str]:
        used = {a["name"] for a in self.added}
        return [c for c in self.candidates if c not in used]

    def active(self) -> List[str]:
        return [a["name"] for a in self.added]

    def lambda_vis(self, cur_nimg: int) -> float:
        return 0.0 if cur_nimg < self.warmup_kimg * 1000 else 1.0

    def state_dict(self) -> dict:
        return {"candidates": list(self.candidates), "warmup_kimg": self.warmup_kimg,
                "max_backbones": self.max_backbones, "stage_kimg": list(self.stage_kimg),
                "added": [dict(a) for a in self.added]}

    def load_state_dict(self, d: Mapping) -> None:
        """Restore the additions; the configuration must match (a changed schedule is an error, not a resume)."""
        for key in ("candidates", "warmup_kimg", "max_backbones", "stage_kimg"):
            if key not in d:
                raise KeyError(f"ProgressiveSchedule state is missing {key!r}")
            mine = getattr(self, key)
            theirs = list(d[key]) if isinstance(mine, list) else type(mine)(d[key])
            if theirs != mine:
                raise ValueError(f"ProgressiveSchedule state has {key}={d[key]!r}, this schedule has {mine!r}")
        added = [{"name": str(a["name"]), "accuracy": float(a["accuracy"]), "nimg": int(a["nimg"])}
                 for a in d.get("added", [])]
        unknown = [a["name"] for a in added if a["name"] not in self.candidates]
        if unknown:
            raise ValueError(f"ProgressiveSchedule state adds backbones that are not candidates: {unknown}")
        self.added = added

    def __repr__(self) -> str:
        return (f"ProgressiveSchedule(added={self.active()}, remaining={self.remaining()}, "
                f"warmup_kimg={self.warmup_kimg}, stage_kimg={self.stage_kimg})")

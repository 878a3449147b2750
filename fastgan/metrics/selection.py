"""Choosing the pretrained source for transfer by recall (When, Why, and Which Pretrained GANs Are Useful?).

The recipe: sample each candidate generator, embed its samples and the target images with one extractor, and rank the
candidates by the *recall* of the target with respect to the candidate: the fraction of target samples that fall in
some sample's k-NN ball (radius: the distance from that sample to its k-th nearest other sample). A source that
covers the target's modes transfers best. Precision, density and coverage are reported beside it for context.

Recall of a target of ~100 images moves in 1 % steps, so every score carries a bootstrap confidence interval over
the target samples (the candidate's samples and their balls stay fixed). Use the same number of samples, k and
extractor for every candidate; ``select_source`` checks that the candidates' sample counts agree.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import torch
from torch import Tensor

from fastgan.ops import knn as _knn

from . import functional as F


@dataclass(frozen=True)
class SourceScore:
    name: str
    recall: float
    recall_low: float   # bootstrap confidence interval of the recall
    recall_high: float
    precision: float
    density: float
    coverage: float
    n_target: int
    n_samples: int

    def as_dict(self) -> dict:
        return asdict(self)


def select_source(target: Tensor, candidates: Mapping[str, Tensor], *, k: int = 5, inclusive: bool = False,
                  bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                  impl: str = "auto") -> list[SourceScore]:
    """Score every candidate's sample features against the target features; best recall first.

    ``target`` (N_t, D) and ``candidates`` {name: (N_s, D)} are features from one extractor. ``inclusive=False``
    counts a sample on a ball's boundary as outside (the paper's code, and the prdc package)."""
    if not candidates:
        raise ValueError("select_source needs at least one candidate")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 1:
        raise ValueError(f"bootstrap must be an int >= 1, got {bootstrap!r}")
    target = F._features(target, "target")
    if target.shape[0] < k + 1:
        raise ValueError(f"select_source with k={k} needs at least {k + 1} target samples, got {target.shape[0]}")
    sizes = {name: int(f.shape[0]) for name, f in candidates.items() if isinstance(f, Tensor) and f.dim() == 2}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"candidates must be scored on the same number of samples, got {sizes}")
    target_r = _knn.knn_radii(target, k, impl=impl)
    gen = torch.Generator().manual_seed(seed)
    boot_idx = torch.randint(0, target.shape[0], (bootstrap, target.shape[0]), generator=gen)
    lo_q, hi_q = (1.0 - confidence) / 2.0, 1.0 - (1.0 - confidence) / 2.0
    scores = []
    for name, feats in candidates.items():
        fake = F._features(feats, f"candidates[{name!r}]").to(target.device)
        if fake.shape[1] != target.shape[1]:
            raise ValueError(f"candidate {name!r} has features of width {fake.shape[1]}, the target {target.shape[1]}")
        if fake.shape[0] < k + 1:
            raise ValueError(f"candidate {name!r} needs at least {k + 1} samples, got {fake.shape[0]}")
        fake_r = _knn.knn_radii(fake, k, impl=impl)
        st = _knn.manifold_stats(target, fake, target_r, fake_r, inclusive=inclusive, impl=impl)
        inside = st["real_in_fake"].double().cpu()
        boot = inside[boot_idx].mean(dim=1)
        scores.append(SourceScore(
            name=name, recall=float(inside.mean()),
            recall_low=float(torch.quantile(boot, lo_q)), recall_high=float(torch.quantile(boot, hi_q)),
            precision=float(st["fake_in_real"].double().mean()),
            density=float(st["density_count"]) / (k * fake.shape[0]),
            coverage=float(st["real_covered"].double().mean()),
            n_target=int(target.shape[0]), n_samples=int(fake.shape[0])))
    return sorted(scores, key=lambda s: (-s.recall, -s.coverage, s.name))

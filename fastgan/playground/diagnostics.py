"""Properties of a source checkpoint measured before fine-tuning (METHODS.md §4.3, notebook cell 7), and the statistics
that relate them to the fine-tuned W1.

``recall`` of the target with respect to the generator's samples, in raw R²: the fraction of target points inside
some sample's k-NN ball (k = 5, radius = distance to the k-th nearest *other* sample, strict ``<``), i.e.
``fastgan.metrics.prdc(target, samples, k, inclusive=False)["recall"]``.

``∇D similarity``: for samples x = G(z) and the nearest target centre c(x), g(x) = ∇_x L_G with L_G = -mean log D(x);
the score is the mean over samples of cos(c(x) - x, g(x)), samples whose gradient is exactly zero (NaN after
normalisation in the original) left out. Two sign conventions are reported:

- ``loss_gradient``: cos(c - x, ∇_x L_G), the notebook's number;
- ``update_direction``: cos(c - x, -∇_x L_G), the direction a G step moves x, so +1 means "D pulls samples towards
  the nearest mode". It is exactly minus the other.

log D is computed as logsigmoid(logits): where the probability form rounds D to 1 and its gradient to exactly 0
(logits above ~17), this one keeps the (tiny but nonzero) gradient, so such samples count instead of being dropped.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fastgan.metrics.functional import prdc

from . import models


def recall(target: Tensor, samples: Tensor, k: int = 5) -> float:
    """Recall (strict <) of target points (N, 2) with respect to generated samples (N', 2)."""
    return float(prdc(target, samples, k=k, inclusive=False)["recall"])


def grad_similarity(d_state: Mapping[str, Tensor], samples: Tensor, centres: Tensor) -> Tensor:
    """Per-model ∇D similarity in the loss-gradient convention: float64 (M,) for stacked discriminators and samples
    (M, N, 2); NaN for a model whose gradients all vanish. The update-direction value is the negative."""
    if samples.dim() != 3 or samples.shape[-1] != models.DATA_DIM:
        raise ValueError(f"samples must be (M, N, 2), got {tuple(samples.shape)}")
    x = samples.detach().clone().requires_grad_(True)
    logits = models.discriminator_logits({k: v.detach() for k, v in d_state.items()}, x)
    loss = -F.logsigmoid(logits).mean(1).sum()
    (grad,) = torch.autograd.grad(loss, x)
    x = x.detach().double()
    grad = grad.double()
    dist = torch.cdist(x, centres.to(x).expand(x.shape[0], -1, -1))  # (M, N, K)
    toward = centres.to(x)[dist.argmin(-1)] - x
    gnorm = grad.norm(dim=-1)
    cos = (toward * grad).sum(-1) / (toward.norm(dim=-1) * gnorm)
    cos = torch.where(gnorm > 0, cos, torch.full_like(cos, math.nan))
    return torch.nanmean(cos, dim=1)


def pearson(x, y) -> dict:
    """Pearson r and two-sided p-value (scipy.stats.pearsonr) of paired values; NaN pairs left out."""
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got shapes {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": math.nan, "p": math.nan, "n": n}
    res = stats.pearsonr(x, y)
    return {"r": float(res.statistic), "p": float(res.pvalue), "n": n}


def bootstrap_pearson(x, y, reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap interval of Pearson r, resampling the (x, y) pairs with replacement ``reps`` times
    (numpy PCG64 seeded with ``seed``). Resamples with a constant side (r undefined) are dropped and counted."""
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps must be an int >= 1, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = x.size
    if n < 3:
        return {"low": math.nan, "high": math.nan, "reps": reps, "valid": 0, "confidence": confidence}
    rng = np.random.Generator(np.random.PCG64(seed & ((1 << 64) - 1)))
    idx = rng.integers(0, n, size=(reps, n))
    xs, ys = x[idx], y[idx]
    xs = xs - xs.mean(1, keepdims=True)
    ys = ys - ys.mean(1, keepdims=True)
    den = np.sqrt((xs * xs).sum(1) * (ys * ys).sum(1))
    valid = den > 0
    r = (xs * ys).sum(1)[valid] / den[valid]
    if r.size == 0:
        return {"low": math.nan, "high": math.nan, "reps": reps, "valid": 0, "confidence": confidence}
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.clip(r, -1.0, 1.0), [alpha, 1.0 - alpha])
    return {"low": float(low), "high": float(high), "reps": reps, "valid": int(r.size), "confidence": confidence}


__all__ = ["recall", "grad_similarity", "pearson", "bootstrap_pearson"]

"""MaGNET / polarity resampling of a pool of latents by their Jacobian volume.

A pool holds N candidate latents drawn from the generator's prior and, per latent, the top singular values of
the generator's Jacobian there (see :mod:`fastgan.sampling.pool`). With ``logvol(z) = Σ_{i ≤ top_k} log σ_i(z)``
the sampler draws pool entries with probability proportional to ``w(z)``:

* ``weights="official"``: ``log w = ρ · logvol`` — the released MaGNET / polarity code (``polSampler``: vol^ρ,
  vol from the top-k σ in float64, clipped to [1e-200, 1e200]). The MaGNET and polarity-sampling numbers
  (precision/recall, FID tables of the READMEs) were produced with these weights.
* ``weights="exact"``: ``log w = ρ · logvol − log p(z)`` with the standard normal prior of z. Candidates are
  prior draws, so official weights give a latent density ∝ p(z)·vol(z)^ρ and, for ρ = 1, an output density
  ∝ p(z) on the manifold rather than a constant one; dividing by p(z) is the importance weight that makes the
  output density uniform (ρ = 1) on the region the pool covers. Only for pools whose Jacobian is w.r.t. z.

In both cases the log weights are clipped to [ln 1e-200, ln 1e200], as the official code clips vol^ρ, so a
rank-deficient entry (some σ = 0 among the top k) keeps the smallest (ρ > 0) or largest (ρ < 0) weight instead of
0 or infinity. "official" also reproduces the float64 range of vol = exp(logvol) in the released code:
logvol above ln(max float64) ≈ 709.8 counts as vol = inf and below ≈ −745.1 as vol = 0 (so such entries get the
clip values; "exact" has no such saturation). Entries whose σ are all zero (log σ = −inf everywhere: the
official marker of a failed computation, and what :func:`~fastgan.sampling.jacobian_log_singular_values` returns for a non-finite Jacobian)
are dropped before sampling.

Sampling without replacement is Gumbel-top-k on the log weights (exactly sequential sampling ∝ w, i.e. what
``numpy.random.choice(p=w/Σw, replace=False)`` does); with replacement it is a categorical draw on the
normalised weights. Everything is in float64 log space.
"""
from __future__ import annotations

import math
import sys
from typing import Optional, Union

import torch
from torch import Tensor

from .pool import MagnetPool

__all__ = ["MagnetSampler", "LOG_WEIGHT_CLIP"]

LOG_WEIGHT_CLIP = math.log(1e200)  # |log w| bound, the official code's clip of vol^rho to [1e-200, 1e200]
LOG_F64_MAX = math.log(sys.float_info.max)  # exp() of more overflows to inf in float64 (~709.78)
LOG_F64_ZERO = -1075 * math.log(2)  # exp() of less rounds to 0 in float64 (~-745.13)
WEIGHTS = ("official", "exact")


def _check_rho(rho) -> float:
    if isinstance(rho, bool) or not isinstance(rho, (int, float)):
        raise TypeError(f"rho must be a number, got {type(rho).__name__}")
    if not math.isfinite(rho):
        raise ValueError(f"rho must be finite, got {rho}")
    return float(rho)


class MagnetSampler:
    """Draw pool entries ∝ vol^ρ (``weights="official"``) or ∝ vol^ρ / p(z) (``weights="exact"``).

    Args:
        pool: a :class:`~fastgan.sampling.pool.MagnetPool`.
        rho: polarity ρ (finite). 1 = MaGNET (uniform on the manifold), < 0 favours modes (quality), > 0
            anti-modes (diversity), 0 = uniform over the pool (naive sampling).
        top_k: how many of the largest singular values make the volume (30 in the official StyleGAN2-FFHQ
            notebook, 10 for StyleGAN3/BigGAN); must not exceed the pool's columns.
        weights: ``"official"`` or ``"exact"`` (see the module docstring; paper numbers use "official").
        mix: fraction of each draw that is MaGNET-weighted; the rest is drawn uniformly from the pool (naive:
            pool latents are prior draws), as in the MaGNET README's Appendix F table (e.g. ``mix=0.041`` at ψ = 1).

    Entries with all σ = 0 (failed computations) are never drawn, neither by the weighted nor the naive part.
    For a conditional pool every class is normalised separately and :meth:`sample_indices` draws ``n //
    num_classes`` per class, the remainder ``n % num_classes`` going one each to the lowest class indices
    (or all ``n`` from ``class_idx`` when given).
    """

    def __init__(self, pool: MagnetPool, rho: float = 1.0, top_k: int = 30, weights: str = "official",
                 mix: float = 1.0):
        if not isinstance(pool, MagnetPool):
            raise TypeError(f"pool must be a MagnetPool, got {type(pool).__name__}")
        if len(pool) == 0:
            raise ValueError("pool is empty: nothing to sample from")
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        if top_k > pool.log_sv.shape[1]:
            raise ValueError(f"top_k={top_k} but the pool has only {pool.log_sv.shape[1]} singular values per "
                             f"latent; pass top_k <= {pool.log_sv.shape[1]}")
        if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0.0 <= mix <= 1.0:
            raise ValueError(f"mix must be a fraction in [0, 1], got {mix!r}")
        if weights == "exact" and pool.meta.get("wrt", "z") != "z":
            raise ValueError(f"weights='exact' divides by the standard normal prior of z, but this pool's Jacobian is "
                             f"w.r.t. {pool.meta.get('wrt')!r}; use weights='official'")
        self.pool, self.top_k, self.weights, self.mix = pool, top_k, weights, float(mix)
        self.valid = pool.valid  # (N,) bool: not a failed row
        if not bool(self.valid.any()):
            raise ValueError("every pool entry has all singular values 0 (failed computations): nothing to sample")
        self.num_classes = pool.num_classes
        self._class_index = None
        if self.num_classes:
            cls = pool.classes
            self._class_index = [torch.nonzero((cls == k) & self.valid).flatten() for k in range(self.num_classes)]
        self.rho = _check_rho(rho)
        self.log_weights = self._log_weights()

    # ------------------------------------------------------------------ weights
    def logvol(self) -> Tensor:
        """(N,) float64 Σ of the top_k log σ (−inf for failed or rank-deficient rows)."""
        return self.pool.log_sv[:, :self.top_k].sum(dim=1)

    def _log_weights(self) -> Tensor:
        lv = self.logvol()
        if self.weights == "official":  # vol = exp(logvol) in float64 first: it saturates to inf or 0
            lv = lv.masked_fill(lv > LOG_F64_MAX, math.inf).masked_fill(lv < LOG_F64_ZERO, -math.inf)
        logw = self.rho * lv if self.rho != 0 else torch.zeros_like(lv)
        if self.weights == "exact":
            z = self.pool.latents.double()
            logw = logw + 0.5 * (z * z).sum(dim=1) + 0.5 * z.shape[1] * math.log(2 * math.pi)
        logw = torch.nan_to_num(logw, nan=-LOG_WEIGHT_CLIP).clamp(-LOG_WEIGHT_CLIP, LOG_WEIGHT_CLIP)
        return logw.masked_fill(~self.valid, -math.inf)

    def update_rho(self, rho: float) -> None:
        """Recompute the weights for a new ρ (the official sampler's ``update_rho``)."""
        self.rho = _check_rho(rho)
        self.log_weights = self._log_weights()

    def probabilities(self, class_idx: Optional[int] = None) -> Tensor:
        """(N,) float64 probability of each entry for one weighted draw (within ``class_idx`` for conditional
        pools: each class sums to 1 there; the entries of other classes are 0)."""
        lw = self.log_weights
        if self.num_classes:
            if class_idx is None:
                out = torch.zeros_like(lw)
                for idx in self._class_index:
                    if idx.numel():
                        out[idx] = torch.softmax(lw[idx], dim=0)
                return out
            idx = self._class_members(class_idx)
            out = torch.zeros_like(lw)
            out[idx] = torch.softmax(lw[idx], dim=0)
            return out
        if class_idx is not None:
            raise ValueError("class_idx given, but the pool is unconditional")
        return torch.softmax(lw, dim=0)

    def _class_members(self, class_idx: int) -> Tensor:
        if isinstance(class_idx, bool) or not isinstance(class_idx, int) or not 0 <= class_idx < self.num_classes:
            raise ValueError(f"class_idx must be an int in [0, {self.num_classes}), got {class_idx!r}")
        return self._class_index[class_idx]

    # ------------------------------------------------------------------ drawing
    @staticmethod
    def _draw(logw: Tensor, n: int, replace: bool, generator: Optional[torch.Generator]) -> Tensor:
        """Positions into ``logw`` (finite entries only): Gumbel-top-k, or categorical with replacement."""
        if n == 0:
            return torch.zeros(0, dtype=torch.int64)
        if replace:
            p = torch.softmax(logw, dim=0)
            return torch.multinomial(p, n, replacement=True, generator=generator)
        u = torch.rand(logw.shape, dtype=torch.float64, generator=generator).clamp_min(1e-300)
        keys = logw - torch.log(-torch.log(u))  # + Gumbel(0, 1)
        return torch.topk(keys, n, sorted=True).indices

    def _draw_group(self, members: Tensor, n: int, replace: bool, generator, what: str) -> Tensor:
        """``n`` pool indices among ``members``: round(mix·n) weighted, the rest uniform, all distinct when
        sampling without replacement."""
        avail = members.numel()
        if avail == 0:
            raise ValueError(f"{what} has no valid pool entries to draw {n} samples from")
        if not replace and n > avail:
            raise ValueError(f"cannot draw {n} samples without replacement from {what}: it has {avail} valid "
                             f"entries (pass replace=True or a larger pool)")
        m = int(round(self.mix * n))
        lw = self.log_weights[members]
        pos = self._draw(lw, m, replace, generator)
        if n > m:
            flat = torch.zeros_like(lw)
            if not replace:
                flat[pos] = -math.inf  # naive draws come from the entries not yet taken
            rest = self._draw(flat, n - m, replace, generator)
            pos = torch.cat([pos, rest])
        return members[pos]

    def sample_indices(self, n: int, replace: bool = False, generator: Optional[torch.Generator] = None,
                       class_idx: Optional[int] = None) -> Tensor:
        """(n,) int64 pool indices. Per class (in class order) for conditional pools; within a group the
        round(mix·n) weighted draws come first, then the naive ones. Reproducible with a seeded ``generator``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if not self.num_classes:
            if class_idx is not None:
                raise ValueError("class_idx given, but the pool is unconditional")
            members = torch.nonzero(self.valid).flatten()
            return self._draw_group(members, n, replace, generator, "the pool")
        if class_idx is not None:
            return self._draw_group(self._class_members(class_idx), n, replace, generator, f"class {class_idx}")
        q, r = divmod(n, self.num_classes)
        parts = [self._draw_group(self._class_index[k], q + (k < r), replace, generator, f"class {k}")
                 for k in range(self.num_classes) if q + (k < r) > 0]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)

    def sample(self, n: int, replace: bool = False, generator: Optional[torch.Generator] = None,
               class_idx: Optional[int] = None) -> Union[Tensor, tuple[Tensor, Tensor]]:
        """Latents (n, z_dim) of :meth:`sample_indices`, and their labels (n, num_classes) for conditional pools."""
        idx = self.sample_indices(n, replace=replace, generator=generator, class_idx=class_idx)
        if self.pool.labels is None:
            return self.pool.latents[idx]
        return self.pool.latents[idx], self.pool.labels[idx]

    def __repr__(self) -> str:
        return (f"MagnetSampler(N={len(self.pool)}, rho={self.rho}, top_k={self.top_k}, weights={self.weights!r}, "
                f"mix={self.mix}, classes={self.num_classes})")

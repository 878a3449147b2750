"""Feature-space GAN metrics: Frechet distance (FID), kernel distance (KID), precision / recall / density / coverage.

All of them take features (N, D) of any float dtype and device and compute in float64: a float32 Frechet trace is off
by whole FID points in the rank-deficient (few-shot) case. Nothing here loads a network; extractors produce features.

Frechet distance  ``||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2)``. ``tr sqrt(S1 S2)`` is the sum of the
square roots of the eigenvalues of the symmetric ``L^T S2 L`` with ``S1 = L L^T`` (Cholesky; S1 S2 is similar to it):
one Cholesky and one ``eigvalsh`` instead of scipy's ``sqrtm``. When a side has no more samples than dimensions its
covariance ``A^T A / c`` (A = centred features) is singular; then the nonzero eigenvalues of S1 S2 are those of the
small ``A S2 A^T / c`` (n x n), which is exact and much faster (the "one-sided Gram" route).

KID  the unbiased MMD^2 with the cubic polynomial kernel ``(x.y / d + 1)^3`` averaged over random subsets of
``m = min(n_a, n_b, subset_size)`` samples per side (NVlabs' closed form); ``strict=True`` raises instead of shrinking
m (torch-fidelity / torchmetrics behaviour). Returns (mean, population std) over subsets.

PRDC  radii are k-th nearest-neighbour distances within each set (``fastgan.ops.knn_radii``); precision = fraction
of fake samples inside some real ball, recall = fraction of real samples inside some fake ball, density = mean over
fake samples of the number of real balls holding it, / k, coverage = fraction of real samples whose nearest fake is
inside their ball. ``inclusive=False`` uses ``<`` (the prdc package), ``True`` uses ``<=`` (NVlabs / Kynkaanniemi).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fastgan.ops import knn as _knn

COV_NORMS = ("unbiased", "biased")


def _features(x: Tensor, name: str) -> Tensor:
    return _knn._check_features(x, name).to(torch.float64)


def _pair(a: Tensor, b: Tensor, names=("a", "b")) -> tuple[Tensor, Tensor]:
    a, b = _features(a, names[0]), _features(b, names[1])
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} features differ in width: {a.shape[1]} vs {b.shape[1]}")
    return a, b.to(a.device)


def _denominator(n: int, cov_norm: str, name: str) -> int:
    if cov_norm not in COV_NORMS:
        raise ValueError(f"cov_norm must be one of {COV_NORMS}, got {cov_norm!r}")
    if cov_norm == "unbiased":
        if n < 2:
            raise ValueError(f"{name}: an unbiased covariance needs at least 2 samples, got {n}")
        return n - 1
    return n


def mean_cov(x: Tensor, *, cov_norm: str = "unbiased") -> tuple[Tensor, Tensor]:
    """float64 mean (D,) and covariance (D, D) of features x (N, D); cov_norm "unbiased" (1/(N-1)) or "biased" (1/N)."""
    x = _features(x, "x")
    c = _denominator(x.shape[0], cov_norm, "x")
    mu = x.mean(dim=0)
    xc = x - mu
    return mu, (xc.T @ xc) / c


def _sqrt_eig_sum(m: Tensor) -> Tensor:
    """sum sqrt(eigenvalues) of a symmetric PSD matrix (rounding-level negative eigenvalues count as 0)."""
    w = torch.linalg.eigvalsh((m + m.T) * 0.5)
    return w.clamp(min=0).sqrt().sum()


def _trace_sqrt_product(s1: Tensor, s2: Tensor) -> Tensor:
    """tr sqrt(S1 S2) for symmetric PSD S1, S2 (float64)."""
    for a, b in ((s1, s2), (s2, s1)):  # tr sqrt(S1 S2) = tr sqrt(S2 S1)
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            return _sqrt_eig_sum(chol.T @ b @ chol)
    # both singular: S1^(1/2) from an eigendecomposition
    w, v = torch.linalg.eigh((s1 + s1.T) * 0.5)
    root = (v * w.clamp(min=0).sqrt()) @ v.T
    return _sqrt_eig_sum(root @ s2 @ root)


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64 (see the module docstring)."""
    args = [mu1, sigma1, mu2, sigma2]
    names = ["mu1", "sigma1", "mu2", "sigma2"]
    for name, t in zip(names, args):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or Inf values")
    mu1, sigma1, mu2, sigma2 = (t.to(torch.float64).to(mu1.device) for t in args)
    d = mu1.shape[0] if mu1.dim() == 1 else -1
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"expected mu (D,) and sigma (D, D) for one D, got {tuple(mu1.shape)}, {tuple(sigma1.shape)}, "
                         f"{tuple(mu2.shape)}, {tuple(sigma2.shape)}")
    diff = mu1 - mu2
    tr = _trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + torch.trace(sigma1) + torch.trace(sigma2) - 2.0 * tr)


def fid_from_features(a: Tensor, b: Tensor, *, cov_norm: str = "unbiased") -> float:
    """Frechet distance between the Gaussians fitted to features a and b (FID on Inception pool3 features).

    A side with no more samples than dimensions goes through the exact one-sided Gram route."""
    a, b = _pair(a, b)
    ca, cb = _denominator(a.shape[0], cov_norm, "a"), _denominator(b.shape[0], cov_norm, "b")
    d = a.shape[1]
    if min(a.shape[0], b.shape[0]) > d:
        return frechet_distance(*mean_cov(a, cov_norm=cov_norm), *mean_cov(b, cov_norm=cov_norm))
    if a.shape[0] > b.shape[0]:  # the small side goes through the Gram matrix
        a, b, ca, cb = b, a, cb, ca
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)
    xa = a - mu_a  # (n_a, D), S_a = xa^T xa / ca
    xb = b - mu_b
    if b.shape[0] > d:
        s_b = (xb.T @ xb) / cb
        gram = (xa @ s_b @ xa.T) / ca  # (n_a, n_a)
    else:  # both small: A S_b A^T = (A B^T)(B A^T) / cb
        cross = xa @ xb.T
        gram = (cross @ cross.T) / (ca * cb)
    tr = _sqrt_eig_sum(gram)
    diff = mu_a - mu_b
    return float(diff @ diff + (xa * xa).sum() / ca + (xb * xb).sum() / cb - 2.0 * tr)


def kid_from_features(a: Tensor, b: Tensor, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0, *,
                      degree: int = 3, gamma: Optional[float] = None, coef0: float = 1.0,
                      strict: bool = False) -> tuple[float, float]:
    """(mean, population std) of the unbiased polynomial-kernel MMD^2 over random subsets. See the module docstring.

    Subset s draws ``randperm(n_a)[:m]`` then ``randperm(n_b)[:m]`` from one ``torch.Generator`` seeded with ``seed``.
    """
    a, b = _pair(a, b)
    for name, v in (("num_subsets", num_subsets), ("subset_size", subset_size), ("degree", degree)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if strict and min(a.shape[0], b.shape[0]) < subset_size:
        raise ValueError(f"strict KID needs at least subset_size = {subset_size} samples per side, got "
                         f"{a.shape[0]} and {b.shape[0]}")
    m = min(a.shape[0], b.shape[0], subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per side, got {a.shape[0]} and {b.shape[0]}")
    g = 1.0 / a.shape[1] if gamma is None else float(gamma)
    gen = torch.Generator().manual_seed(seed)
    values = torch.empty(num_subsets, dtype=torch.float64)
    for s in range(num_subsets):
        x = a[torch.randperm(a.shape[0], generator=gen)[:m].to(a.device)]
        y = b[torch.randperm(b.shape[0], generator=gen)[:m].to(b.device)]
        values[s] = _poly_mmd(x, y, degree, g, coef0)
    return float(values.mean()), float(values.std(unbiased=False)) if num_subsets > 1 else 0.0


def _poly_mmd(x: Tensor, y: Tensor, degree: int, gamma: float, coef0: float) -> Tensor:
    """Unbiased MMD^2 of two equal-size samples with the kernel (gamma x.y + coef0)^degree."""
    m = x.shape[0]
    kxx = (x @ x.T * gamma + coef0) ** degree
    kyy = (y @ y.T * gamma + coef0) ** degree
    kxy = (x @ y.T * gamma + coef0) ** degree
    within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m - 1)
    return (within - 2.0 * kxy.sum() / m) / m


def prdc(real: Tensor, fake: Tensor, k: int = 5, inclusive: bool = False, *, impl: str = "auto") -> dict:
    """precision, recall, density and coverage of fake features against real ones (floats in a dict).

    Needs at least k + 1 samples on each side. Distances are computed in tiles (no N x N matrix)."""
    real, fake = _pair(real, fake, ("real", "fake"))
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] < k + 1:
            raise ValueError(f"prdc with k={k} needs at least {k + 1} {name} samples, got {x.shape[0]}")
    real_r = _knn.knn_radii(real, k, impl=impl)
    fake_r = _knn.knn_radii(fake, k, impl=impl)
    st = _knn.manifold_stats(real, fake, real_r, fake_r, inclusive=inclusive, impl=impl)
    return {
        "precision": float(st["fake_in_real"].double().mean()),
        "recall": float(st["real_in_fake"].double().mean()),
        "density": float(st["density_count"]) / (k * fake.shape[0]),
        "coverage": float(st["real_covered"].double().mean()),
    }


__all__ = ["frechet_distance", "fid_from_features", "kid_from_features", "prdc", "mean_cov", "COV_NORMS"]

"""Streaming feature statistics for FID: count, mean and covariance in float64, mergeable across ranks and files.

``FeatureStats`` keeps the moments about a *shift* (the mean of the first batch): ``sum (x - s)`` and
``sum (x - s)(x - s)^T``. The shift keeps the moments small, so that no precision is lost when the mean is large
next to the spread (raw moments lose ~1e-4 relative in float32; shifted ones with float64 accumulation ~1e-8, and
exact float64 here by default). ``keep_features=True`` also keeps the features themselves (on the CPU), which the
few-shot FID route, KID and precision / recall need.

    stats = FeatureStats()
    for batch in loader:
        stats.update(extractor(batch))
    stats.all_reduce()                    # under torch.distributed: every rank gets the global statistics
    stats.save("refs/ffhq.npz", extractor="inception-fid", protocol="nvlabs")
    fid = fid_from_stats(stats, FeatureStats.load("refs/ffhq.npz"))
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from .._io import atomic_path
from . import functional as F

FORMAT = "fastgan.FeatureStats/1"


class FeatureStats:
    """Streaming float64 moments of (N, D) feature batches. See the module docstring."""

    def __init__(self, *, keep_features: bool = False, metadata: Optional[dict] = None):
        self.keep_features = bool(keep_features)
        self.metadata: dict = dict(metadata or {})
        self.n = 0
        self.dim: Optional[int] = None
        self.shift: Optional[Tensor] = None  # float64 (D,)
        self.sum: Optional[Tensor] = None    # float64 (D,): sum of x - shift
        self.outer: Optional[Tensor] = None  # float64 (D, D): sum of (x - shift)(x - shift)^T
        self._features: list[Tensor] = []

    # ---- accumulation --------------------------------------------------------------------------------------------
    def update(self, x: Tensor) -> "FeatureStats":
        """Add a batch of features (N, D) of any float dtype and device."""
        x = F._features(x, "features")
        if self.dim is None:
            self.dim = x.shape[1]
            self.shift = x.mean(dim=0)
            self.sum = torch.zeros(self.dim, dtype=torch.float64, device=x.device)
            self.outer = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=x.device)
        elif x.shape[1] != self.dim:
            raise ValueError(f"features of width {x.shape[1]} added to statistics of width {self.dim}")
        xs = x.to(self.shift.device) - self.shift
        self.sum += xs.sum(dim=0)
        self.outer += xs.T @ xs
        self.n += x.shape[0]
        if self.keep_features:
            self._features.append(x.cpu())
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add another FeatureStats (re-centred on this one's shift)."""
        if other.n == 0:
            return self
        if self.n == 0:
            self.dim, self.shift = other.dim, other.shift.clone()
            self.sum, self.outer = other.sum.clone(), other.outer.clone()
            self.n = other.n
        else:
            if other.dim != self.dim:
                raise ValueError(f"cannot merge statistics of width {other.dim} into width {self.dim}")
            s1, s2 = _recentre(other.sum.to(self.sum.device), other.outer.to(self.sum.device), other.n,
                               other.shift.to(self.sum.device) - self.shift)
            self.sum += s1
            self.outer += s2
            self.n += other.n
        if self.keep_features:
            if not other.keep_features:
                raise ValueError("these statistics keep features but the merged ones do not")
            self._features.extend(f.clone() for f in other._features)
        return self

    def all_reduce(self, group=None) -> "FeatureStats":
        """Sum the statistics over the ranks of ``group`` (torch.distributed), in rank order for kept features.

        Every rank must have called update() with the same feature width (an empty rank is fine)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("FeatureStats.all_reduce needs an initialised torch.distributed process group")
        dev = self.sum.device if self.sum is not None else torch.device("cpu")
        if dist.get_backend(group) == "nccl" and dev.type != "cuda":
            dev = torch.device("cuda", torch.cuda.current_device())
        # 1) a common width and shift: the first rank holding data sends its shift
        meta = torch.tensor([self.n, self.dim or 0], dtype=torch.int64, device=dev)
        metas = [torch.zeros_like(meta) for _ in range(dist.get_world_size(group))]
        dist.all_gather(metas, meta, group=group)
        widths = {int(m[1]) for m in metas if int(m[0]) > 0}
        if len(widths) > 1:
            raise ValueError(f"ranks hold features of different widths: {sorted(widths)}")
        if not widths:
            return self
        d = widths.pop()
        src = next(r for r, m in enumerate(metas) if int(m[0]) > 0)
        shift = self.shift.to(dev).clone() if self.n > 0 else torch.zeros(d, dtype=torch.float64, device=dev)
        dist.broadcast(shift, src=dist.get_global_rank(group, src) if group is not None else src, group=group)
        if self.n > 0:
            s1, s2 = _recentre(self.sum.to(dev), self.outer.to(dev), self.n, self.shift.to(dev) - shift)
        else:
            s1 = torch.zeros(d, dtype=torch.float64, device=dev)
            s2 = torch.zeros(d, d, dtype=torch.float64, device=dev)
        # 2) sum the moments
        dist.all_reduce(s1, group=group)
        dist.all_reduce(s2, group=group)
        local_features = self.features() if self.keep_features and self.n > 0 else None
        self.dim, self.shift, self.sum, self.outer = d, shift, s1, s2
        self.n = int(sum(int(m[0]) for m in metas))
        # 3) kept features, gathered in rank order
        if self.keep_features:
            gathered: list = [None] * dist.get_world_size(group)
            dist.all_gather_object(gathered, None if local_features is None else local_features.numpy(), group=group)
            self._features = [torch.from_numpy(g) for g in gathered if g is not None]
        return self

    # ---- results -------------------------------------------------------------------------------------------------
    def mean(self) -> Tensor:
        self._need_data()
        return self.shift + self.sum / self.n

    def cov(self, cov_norm: str = "unbiased") -> Tensor:
        """float64 (D, D) covariance: "unbiased" divides by N - 1, "biased" by N (NVlabs)."""
        self._need_data()
        c = F._denominator(self.n, cov_norm, "statistics")
        m = self.sum / self.n
        return (self.outer - self.n * torch.outer(m, m)) / c

    def features(self) -> Tensor:
        """float64 (N, D) kept features (CPU), in the order they were added."""
        if not self.keep_features:
            raise ValueError("these statistics do not keep features; create them with keep_features=True")
        self._need_data()
        return torch.cat(self._features).to(torch.float64)

    def _need_data(self) -> None:
        if self.n == 0:
            raise ValueError("no features have been added to these statistics")

    # ---- files ---------------------------------------------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike], **metadata) -> pathlib.Path:
        """Write an npz (moments, optional features, metadata as JSON) atomically: temporary name, then rename."""
        self._need_data()
        meta = dict(self.metadata, **metadata)
        path = pathlib.Path(path)
        arrays = {"format": np.array(FORMAT), "n": np.array(self.n, dtype=np.int64),
                  "shift": self.shift.cpu().numpy(), "sum": self.sum.cpu().numpy(),
                  "outer": self.outer.cpu().numpy(), "metadata": np.array(json.dumps(meta, sort_keys=True))}
        if self.keep_features:
            arrays["features"] = self.features().numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        self.metadata = meta
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu") -> "FeatureStats":
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no statistics file at {path}")
        try:
            z = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ValueError(f"{path} is not a FeatureStats npz file: {exc}") from None
        with z:
            if "format" not in z.files or str(z["format"]) != FORMAT:
                raise ValueError(f"{path} is not a FeatureStats file (format {FORMAT!r} expected)")
            st = cls(keep_features="features" in z.files, metadata=json.loads(str(z["metadata"])))
            st.n = int(z["n"])
            st.shift, st.sum, st.outer = (torch.from_numpy(z[k]).to(device) for k in ("shift", "sum", "outer"))
            st.dim = st.shift.shape[0]
            if st.keep_features:
                st._features = [torch.from_numpy(z["features"])]
        return st

    def __repr__(self) -> str:
        return (f"FeatureStats(n={self.n}, dim={self.dim}, keep_features={self.keep_features}, "
                f"metadata={self.metadata})")


def _recentre(s1: Tensor, s2: Tensor, n: int, delta: Tensor) -> tuple[Tensor, Tensor]:
    """Moments about a shift s' re-expressed about s, where delta = s' - s (so x - s = (x - s') + delta)."""
    return s1 + n * delta, s2 + torch.outer(s1, delta) + torch.outer(delta, s1) + n * torch.outer(delta, delta)


def fid_from_stats(a: FeatureStats, b: FeatureStats, *, cov_norm: str = "unbiased") -> float:
    """FID between two FeatureStats. When a side has no more samples than dimensions and both keep their features,
    the exact few-shot (Gram) route of ``fid_from_features`` is used."""
    if a.dim != b.dim:
        raise ValueError(f"statistics differ in width: {a.dim} vs {b.dim}")
    if min(a.n, b.n) <= (a.dim or 0) and a.keep_features and b.keep_features:
        return F.fid_from_features(a.features(), b.features(), cov_norm=cov_norm)
    return F.frechet_distance(a.mean(), a.cov(cov_norm), b.mean(), b.cov(cov_norm))

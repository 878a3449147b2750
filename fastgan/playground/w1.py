"""Exact 1-Wasserstein distance between two equal-size 2-D point sets, and a process pool to compute many.

W1 between the empirical measures of N real and N generated points (uniform weights) is the mean Euclidean length of
the optimal one-to-one matching: with equal uniform masses an optimal transport plan can be taken to be a permutation
(a vertex of the Birkhoff polytope), so ``scipy.optimize.linear_sum_assignment`` on the Euclidean cost matrix solves
it exactly. The original code (``playground/test.py``) calls POT's network simplex ``ot.emd`` on M / max(M) and averages
M over the plan's nonzero entries, which is the same number.

Two exact solvers give the same number (the LP optimum), at very different speeds:

* ``"network-simplex"``: POT's ``ot.emd`` (the original's solver; optional dependency ``pot``, the ``playground``
  extra). About 0.6-0.8 s of one core for 2048 x 2048 whatever the point sets look like.
* ``"assignment"``: ``scipy.optimize.linear_sum_assignment`` (shortest augmenting paths). Under a second when the
  fake points cover the target's modes, but 6-10 s for collapsed or few-mode samples against the 10-mode target,
  which are common among early checkpoints.

``"auto"`` (the default) takes the network simplex when POT is installed and the assignment otherwise. Both hold the
GIL, so ``W1Pool`` spreads the solves over worker processes, and ``w1_lower_bound`` gives a cheap certificate that
lets a study skip solves that cannot be the minimum it reports.
"""
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Hashable, Optional

import numpy as np


def _points(x, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an (N, D) array of numbers: {exc}") from None
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or Inf values")
    return a


SOLVERS = ("auto", "network-simplex", "assignment")


def _have_pot() -> bool:
    try:
        import ot  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_solver(solver: str = "auto") -> str:
    """The exact W1 solver that ``solver`` names: "network-simplex" (needs POT), "assignment" (scipy), or for "auto" the
    network simplex when POT is installed, else the assignment."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if solver == "auto":
        return "network-simplex" if _have_pot() else "assignment"
    if solver == "network-simplex" and not _have_pot():
        raise ImportError("the network-simplex W1 solver needs POT: pip install pot (or solver='assignment')")
    return solver


def w1_exact(real, fake, solver: str = "auto") -> float:
    """Exact W1 between point sets real (N, D) and fake (N, D) with uniform weights: the mean Euclidean distance of
    the optimal assignment, i.e. the optimum of the transport LP. Accepts numpy arrays or CPU tensors; computes in
    float64. ``solver``: "auto", "network-simplex" (POT) or "assignment" (scipy); see the module docstring."""
    from scipy.spatial.distance import cdist

    which = resolve_solver(solver)
    a, b = _points(real, "real"), _points(fake, "fake")
    if a.shape != b.shape:
        raise ValueError(f"real and fake must have the same shape (equal-size sets), got {a.shape} and {b.shape}")
    cost = cdist(a, b)
    if which == "network-simplex":
        import ot

        n = a.shape[0]
        weights = np.full(n, 1.0 / n)
        # the simplex needs O(n^2) pivots on hard instances; POT's default cap (1e5) is too low for n = 2048
        plan, log = ot.emd(weights, weights, cost, numItermax=max(100_000, 50 * n * n), log=True)
        if log.get("result_code", 1) != 1:
            raise RuntimeError(f"POT's network simplex did not reach the optimum: {log.get('warning')!r}")
        return float((plan * cost).sum())
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def w1_lower_bound(real, fake, centres=None, directions: int = 64) -> float:
    """A cheap lower bound of ``w1_exact(real, fake)`` (no assignment): the largest of

    - the 1-D W1 of the projections onto ``directions`` unit vectors at angles πk/directions (projection is
      1-Lipschitz, so each is <= W1; 1-D W1 is the mean gap of the sorted projections), and
    - |E_real f - E_fake f| for f(x) = distance to the nearest of ``centres`` (a 1-Lipschitz function; Kantorovich-
      Rubinstein duality makes it <= W1), when centres are given.

    Used to skip assignments that cannot change a minimum over steps (see ``study``)."""
    a, b = _points(real, "real"), _points(fake, "fake")
    if a.shape != b.shape:
        raise ValueError(f"real and fake must have the same shape (equal-size sets), got {a.shape} and {b.shape}")
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise ValueError(f"directions must be an int >= 1, got {directions!r}")
    bound = 0.0
    if a.shape[1] == 2:
        ang = np.arange(directions) * (np.pi / directions)
        dirs = np.stack([np.cos(ang), np.sin(ang)])  # (2, K)
        pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
        bound = float(np.abs(pa - pb).mean(axis=0).max())
    if centres is not None:
        c = _points(centres, "centres")
        if c.shape[1] != a.shape[1]:
            raise ValueError(f"centres must have {a.shape[1]} columns, got {c.shape}")
        fa = np.sqrt(((a[:, None, :] - c[None]) ** 2).sum(-1)).min(1)
        fb = np.sqrt(((b[:, None, :] - c[None]) ** 2).sum(-1)).min(1)
        bound = max(bound, float(abs(fa.mean() - fb.mean())))
    return bound


def _timed_w1(real: np.ndarray, fake: np.ndarray, solver: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    value = w1_exact(real, fake, solver)
    return value, time.perf_counter() - t0


class W1Pool:
    """Compute many ``w1_exact`` values, in ``workers`` spawned processes (0: inline, in the calling process).

    Use as a context manager: ``submit(key, real, fake)`` as point sets become available, ``results()`` at the end
    returns {key: W1}. ``cpu_seconds`` sums the time the solves took; ``solver`` is resolved once (see
    :func:`resolve_solver`) and recorded."""

    def __init__(self, workers: int = 1, solver: str = "auto"):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an int >= 0, got {workers!r}")
        self.workers = workers
        self.solver = resolve_solver(solver)
        self._executor: Optional[ProcessPoolExecutor] = None
        self._pending: dict[Hashable, Future] = {}
        self._done: dict[Hashable, float] = {}
        self.cpu_seconds = 0.0

    def __enter__(self) -> "W1Pool":
        if self.workers > 0:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=exc[0] is None, cancel_futures=exc[0] is not None)
            self._executor = None

    def submit(self, key: Hashable, real, fake) -> None:
        if key in self._pending or key in self._done:
            raise ValueError(f"W1 for {key!r} was already submitted")
        a = _points(real, f"real[{key!r}]")
        b = _points(fake, f"fake[{key!r}]")
        if self._executor is None:
            value, secs = _timed_w1(a, b, self.solver)
            self._done[key] = value
            self.cpu_seconds += secs
        else:
            self._pending[key] = self._executor.submit(_timed_w1, a, b, self.solver)

    def results(self) -> dict:
        """Wait for every submitted assignment; {key: W1}."""
        for key, fut in list(self._pending.items()):
            value, secs = fut.result()
            self._done[key] = value
            self.cpu_seconds += secs
            del self._pending[key]
        return dict(self._done)


__all__ = ["SOLVERS", "resolve_solver", "w1_exact", "w1_lower_bound", "W1Pool"]

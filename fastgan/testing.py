"""Helpers to judge a kernel against its reference (used by the tests, `fastgan doctor` and benchmarks).

The rule (DESIGN.md, op contract 5): compare against a float64 reference; in low precision the kernel's
error may be at most ``factor`` times the error of the reference computed in that precision, plus a small
absolute slack scaled by the magnitude of the result.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

# absolute slack per dtype, relative to max(1, max|reference|)
ATOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def max_abs_err(a: Tensor, b: Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item() if a.numel() else 0.0


def check_against_ref(name: str, got: Tensor, ref64: Tensor, ref_lowp: Optional[Tensor] = None,
                      factor: float = 2.0) -> Optional[str]:
    """None when ``got`` is close enough to the float64 ``ref64``; otherwise a message saying how far it is.

    ``ref_lowp`` is the reference evaluated in ``got``'s dtype; its error sets the budget for low precision.
    """
    if got.shape != ref64.shape:
        return f"{name}: shape {tuple(got.shape)} != reference {tuple(ref64.shape)}"
    if not torch.isfinite(got).all():
        bad = (~torch.isfinite(got)).nonzero()[:3].tolist()
        return f"{name}: non-finite values at {bad}"
    scale = max(1.0, ref64.abs().max().item() if ref64.numel() else 1.0)
    budget = ATOL.get(got.dtype, 1e-3) * scale
    if ref_lowp is not None and got.dtype in (torch.float16, torch.bfloat16):
        budget += factor * max_abs_err(ref_lowp, ref64)
    err = max_abs_err(got, ref64)
    if err > budget:
        idx = (got.detach().double() - ref64.double()).abs().flatten().argmax().item()
        return (f"{name}: max abs error {err:.3g} > budget {budget:.3g} (dtype {got.dtype}, |ref| max {scale:.3g}, "
                f"worst flat index {idx})")
    return None


def assert_against_ref(name: str, got: Tensor, ref64: Tensor, ref_lowp: Optional[Tensor] = None,
                       factor: float = 2.0) -> None:
    msg = check_against_ref(name, got, ref64, ref_lowp, factor)
    if msg is not None:
        raise AssertionError(msg)

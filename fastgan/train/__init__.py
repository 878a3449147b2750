"""Training: the loop, losses, augmentation, run directory, exact resume and torchrun helpers.

``fastgan.train.train(TrainOptions(...))`` is what ``fastgan train`` calls. Submodules load lazily so that
``fastgan.nn`` can use :mod:`fastgan.train.rng` without importing the loop.
"""
from __future__ import annotations

import importlib

_LAZY = {"train": "loop", "Trainer": "loop", "TrainResult": "loop", "NonFiniteError": "loop",
         "TrainOptions": "options", "CFG_SPECS": "options", "resolve": "options"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

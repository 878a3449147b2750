"""Primitives-PS synthetic pretraining data (Baek & Shim, CVPR 2022), made on the device.

``PrimitivesPS``      the batched, deterministic synthesizer (``.images``, ``.batch``, ``.iter_batches``)
``write_dataset``     the dataset zip used by training (``fastgan data primitives``)
``official``          a faithful numpy + OpenCV re-implementation of the original CPU generator (baseline)
``params``            the device-side shape-parameter sampler (compat "official" / "fastgan")
"""
from .dataset import write_dataset
from .pipeline import VARIANTS, PrimitivesPS, resolve_variant

__all__ = ["PrimitivesPS", "VARIANTS", "resolve_variant", "write_dataset"]

"""fastgan's public functional ops. Each takes ``impl="auto" | "ref" | "cpp" | "cuda" | "triton"``.

``available_impls(op_name, device)`` lists what can run here, ``dispatch_report()`` what ``auto`` chose and why.
"""
from ._dispatch import FastganFallbackWarning, available_impls, dispatch_report, list_ops, why_unavailable
from .jacvol import log_singular_values, random_projection
from .knn import knn_radii, manifold_stats
from .modconv import adafm_conv2d, modulated_conv2d
from .synth import minmax_quantize, power_spectrum_noise, rasterize_shapes, spectral_exponents
from .vision_preprocess import vision_preprocess

__all__ = [
    "modulated_conv2d",
    "adafm_conv2d",
    "power_spectrum_noise",
    "rasterize_shapes",
    "minmax_quantize",
    "spectral_exponents",
    "knn_radii",
    "manifold_stats",
    "random_projection",
    "log_singular_values",
    "vision_preprocess",
    "available_impls",
    "dispatch_report",
    "list_ops",
    "why_unavailable",
    "FastganFallbackWarning",
]

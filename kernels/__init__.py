"""Triton kernels of fastgan, one module per op family (installed as ``fastgan.kernels``)."""

"""Counter-based random numbers in plain torch: every draw is a pure function of (key, counter).

Training randomness (latents, per-pixel noise, augmentation parameters, path-length directions) is keyed by
(seed, step, phase, global sample index), so a sample gets the same numbers whether it is processed in a batch
of 4 on one process or of 2 on each of two processes, and a resumed run replays exactly the numbers an
uninterrupted run would have drawn. The mixer is splitmix64's finaliser on int64 tensors (multiplication wraps
modulo 2**64; logical right shifts are emulated with a mask), which runs on any device and under autograd-free
code paths without a generator object.

Public helpers:
- :func:`derive` folds integers into one 64-bit key (python ints, cheap).
- :func:`sample_keys` gives a per-sample int64 key tensor for global indices.
- :func:`uniform` / :func:`normal` / :func:`randint` draw ``(N, *shape)`` tensors from per-sample keys.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


def _signed(v: int) -> int:
    v &= _M64
    return v - (1 << 64) if v >= 1 << 63 else v


def _mix_int(z: int) -> int:
    z &= _M64
    z = ((z ^ (z >> 30)) * _C1) & _M64
    z = ((z ^ (z >> 27)) * _C2) & _M64
    return z ^ (z >> 31)


def derive(*parts: int) -> int:
    """One signed 64-bit key from any number of integers (order matters); ``derive(seed, step, phase)``."""
    h = 0x6A09E667F3BCC908
    for p in parts:
        if isinstance(p, bool) or not isinstance(p, int):
            raise TypeError(f"derive() takes ints, got {type(p).__name__}")
        h = _mix_int(h ^ _mix_int(p + _GOLDEN))
    return _signed(h)


def _shr(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix(x: Tensor) -> Tensor:
    x = (x ^ _shr(x, 30)) * _signed(_C1)
    x = (x ^ _shr(x, 27)) * _signed(_C2)
    return x ^ _shr(x, 31)


def sample_keys(key: int, index: Union[Tensor, Sequence[int], range], device=None) -> Tensor:
    """Per-sample int64 keys ``mix(key + index * golden)`` for global sample indices ``index``."""
    if not isinstance(index, Tensor):
        index = torch.as_tensor(list(index), dtype=torch.int64, device=device)
    elif index.dtype != torch.int64:
        raise TypeError(f"index must be int64, got {index.dtype}")
    if index.dim() != 1:
        raise ValueError(f"index must be 1-D, got shape {tuple(index.shape)}")
    return _mix(index * _signed(_GOLDEN) + _signed(key))


def _bits(keys: Tensor, numel: int, stream: int) -> Tensor:
    if keys.dtype != torch.int64 or keys.dim() != 1:
        raise ValueError(f"keys must be a 1-D int64 tensor, got {keys.dtype} of shape {tuple(keys.shape)}")
    base = _mix(keys ^ derive(stream))
    ctr = torch.arange(numel, dtype=torch.int64, device=keys.device) * _signed(_GOLDEN)
    return _mix(base[:, None] + ctr[None, :])


def uniform(keys: Tensor, shape: Union[int, Sequence[int]] = (), stream: int = 0) -> Tensor:
    """float32 ``(N, *shape)`` uniform in [0, 1) with 24 random bits each; a function of (keys, stream) only."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = math.prod(shape)
    u = _shr(_bits(keys, n, stream), 40).to(torch.float32) * (1.0 / (1 << 24))
    return u.view(keys.shape[0], *shape)


def normal(keys: Tensor, shape: Union[int, Sequence[int]] = (), stream: int = 0) -> Tensor:
    """float32 ``(N, *shape)`` standard normal: Box-Muller on two 24-bit uniforms of one 64-bit draw, both of its
    outputs used (the cosine ones fill the first half of each sample's values, the sine ones the second)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = math.prod(shape)
    half = (n + 1) // 2
    b = _bits(keys, half, stream)
    u1 = (_shr(b, 40).to(torch.float32) + 1.0) * (1.0 / (1 << 24))  # (0, 1]
    theta = (b & 0xFFFFFF).to(torch.float32) * (2.0 * math.pi / (1 << 24))
    r = torch.sqrt(-2.0 * torch.log(u1))
    z = torch.cat([r * torch.cos(theta), r * torch.sin(theta)], dim=1)[:, :n]
    return z.reshape(keys.shape[0], *shape)


def randint(keys: Tensor, high: int, shape: Union[int, Sequence[int]] = (), stream: int = 0) -> Tensor:
    """int64 ``(N, *shape)`` in [0, high) (modulo bias below 2**-40 for high < 2**24)."""
    if high < 1:
        raise ValueError(f"high must be positive, got {high}")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return (_shr(_bits(keys, math.prod(shape), stream), 1) % high).view(keys.shape[0], *shape)

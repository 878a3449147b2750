"""StyleGAN2 losses for one round of one phase: non-saturating G and D losses, R1 and path-length penalties.

Each function returns the round's loss already divided by the phase's global sample count, so summing the
gradients of all rounds on all processes gives the gradient of the global-batch mean: the same update for any
``--batch-gpu`` split and any process count (StyleGAN2 sums per-round means instead, which scales with the number
of rounds). Lazy regularisation multiplies by the interval, as in StyleGAN2.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def generator_ws(G, z: Tensor, c: Optional[Tensor], mix_keys: Tensor, style_mixing: float, z2: Tensor) -> Tensor:
    """Mapped ws with per-sample style mixing: with probability ``style_mixing`` the ws after a random cutoff
    come from a second latent ``z2`` (StyleGAN2 draws one cutoff per batch; per sample keeps batches splittable)."""
    from . import rng

    ws = G.mapping(z, c)
    if style_mixing > 0 and ws.shape[1] > 1:
        u = rng.uniform(mix_keys, 2, stream=5)
        cutoff = 1 + (u[:, 0] * (ws.shape[1] - 1)).long().clamp_max(ws.shape[1] - 2)
        cutoff = torch.where(u[:, 1] < style_mixing, cutoff, torch.full_like(cutoff, ws.shape[1]))
        ws2 = G.mapping(z2, c)
        layer = torch.arange(ws.shape[1], device=ws.device)[None, :, None]
        ws = torch.where(layer >= cutoff[:, None, None], ws2, ws)
    return ws


def g_main(logits: Tensor, denom: int) -> Tensor:
    return F.softplus(-logits).sum() / denom


def d_fake(logits: Tensor, denom: int) -> Tensor:
    return F.softplus(logits).sum() / denom


def d_real(logits: Tensor, denom: int) -> Tensor:
    return F.softplus(-logits).sum() / denom


def r1_penalty(real_in: Tensor, logits: Tensor) -> Tensor:
    """Per-sample ||d D / d x||^2 at the real images (before augmentation), with a graph for backward."""
    (grad,) = torch.autograd.grad(logits.sum(), real_in, create_graph=True, only_inputs=True)
    return grad.square().sum(dim=[1, 2, 3])


def path_lengths(synthesis: Callable[[Tensor], Tensor], ws: Tensor, noise: Tensor) -> Tensor:
    """Per-sample ||J^T y|| with y ~ N(0, I)/sqrt(H*W) (StyleGAN2's path-length regulariser), differentiable."""
    img = synthesis(ws)
    h, w = img.shape[2:]
    (grad,) = torch.autograd.grad((img * (noise / math.sqrt(h * w))).sum(), ws, create_graph=True,
                                  only_inputs=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()

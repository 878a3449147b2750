"""Training many independent playground GANs at once (the original ``playground/train.py`` loop, batched).

One ``BatchedGAN`` holds M (G, D) pairs as stacked states (see ``models``). The loss is the original "vanila" one:
D minimises -log D(x) - log(1 - D(G(z))), G minimises -log D(G(z)); each model's loss is the mean over its own batch
and the losses of the M models are **summed**, so the gradient of model m's slice is exactly model m's own gradient.
Adam (lr 2e-4, betas (0.5, 0.999)) is elementwise with one step counter shared by all models, so
``torch.optim.Adam`` over the stacked tensors performs the per-model Adam updates exactly (tests/test_playground.py
checks both against per-model reference modules and optimizers).

Schedule (as the original loop): iteration ``g`` (g = 0, 1, ...) runs D steps until 4g + 1 of them are done (one D
step before G step 0, then four before every later one), then G step g, then the optional G-EMA update
(ema = α·ema + (1 - α)·G over parameters *and* BatchNorm statistics, α = 0.99). "After step g" below means after
G step g; a run of ``steps`` G steps ends after step ``steps - 1``.

Randomness: every model owns a ``torch.Generator`` (``ModelStreams``). Per D step a model draws its real batch, then
its latents; per G step its latents. A model's numbers therefore depend only on its own seed, never on how many or
which models are trained beside it. G's forward in the D step runs without gradient (the original computes G's
gradient there and discards it) but in training mode, so BatchNorm running statistics move 5 times per G step as in
the original.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import models


@dataclass(frozen=True)
class TrainParams:
    """Optimiser and schedule of the playground (``TrainParams`` of the original with the notebook's values)."""

    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 64
    disc_steps: int = 4
    ema: Optional[float] = None   # G-EMA coefficient α (0.99 in the original), None: no EMA

    def __post_init__(self):
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ValueError(f"batch_size must be an int >= 2 (BatchNorm), got {self.batch_size!r}")
        if isinstance(self.disc_steps, bool) or not isinstance(self.disc_steps, int) or self.disc_steps < 1:
            raise ValueError(f"disc_steps must be an int >= 1, got {self.disc_steps!r}")
        if self.ema is not None and not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be None or in [0, 1), got {self.ema}")


class ModelStreams:
    """One ``torch.Generator`` per model, seeded with ``seeds[m]`` (any 64-bit ints)."""

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(int(s) & ((1 << 64) - 1)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def normal(self, *shape: int) -> Tensor:
        """(M, *shape) standard normals, slice m from model m's generator."""
        out = torch.empty(len(self.generators), *shape)
        for m, g in enumerate(self.generators):
            out[m].normal_(generator=g)
        return out

    def data(self, distributions: Sequence, n: int) -> Tensor:
        """(M, n, 2) points, slice m drawn from ``distributions[m]`` with model m's generator."""
        return torch.stack([d.sample(n, generator=g) for d, g in zip(distributions, self.generators)])


class BatchedGAN:
    """M playground GANs trained in lockstep. ``g_state`` / ``d_state`` are stacked states (copied in)."""

    def __init__(self, g_state: Mapping[str, Tensor], d_state: Mapping[str, Tensor],
                 params: TrainParams = TrainParams()):
        m = models.check_state("generator", g_state, "g_state")
        if models.check_state("discriminator", d_state, "d_state") != m:
            raise ValueError(f"g_state holds {m} models but d_state {models.num_models(d_state)}")
        self.params = params
        self.num_models = m
        self.g = {k: v.detach().clone().float() if v.is_floating_point() else v.clone() for k, v in g_state.items()}
        self.d = {k: v.detach().clone().float() for k, v in d_state.items()}
        self.g_keys = models.parameter_keys("generator")
        self.d_keys = models.parameter_keys("discriminator")
        for k in self.g_keys:
            self.g[k].requires_grad_(True)
        for k in self.d_keys:
            self.d[k].requires_grad_(True)
        kw = dict(lr=params.lr, betas=params.betas, fused=True)
        self.opt_g = torch.optim.Adam([self.g[k] for k in self.g_keys], **kw)
        self.opt_d = torch.optim.Adam([self.d[k] for k in self.d_keys], **kw)
        self.ema = None
        if params.ema is not None:
            self.ema = {k: v.detach().clone() for k, v in self.g.items()}
        self.d_steps_done = 0
        self.g_steps_done = 0

    # -- one step each ---------------------------------------------------------------------------------------------
    def d_step(self, real: Tensor, z: Tensor) -> Tensor:
        """One D update on real (M, B, 2) and G(z), z (M, B, 64); returns the per-model losses (M,)."""
        with torch.no_grad():
            fake = models.generator_forward(self.g, z, training=True)
        b = real.shape[1]
        logits = models.discriminator_logits(self.d, torch.cat([real, fake], dim=1))
        loss = -F.logsigmoid(logits[:, :b]).mean(1) - F.logsigmoid(-logits[:, b:]).mean(1)
        grads = torch.autograd.grad(loss.sum(), [self.d[k] for k in self.d_keys])
        for k, gr in zip(self.d_keys, grads):
            self.d[k].grad = gr.contiguous()  # fused Adam reads grads in the parameter's memory order
        self.opt_d.step()
        self.d_steps_done += 1
        return loss.detach()

    def g_step(self, z: Tensor) -> Tensor:
        """One G update on latents z (M, B, 64); returns the per-model losses (M,)."""
        fake = models.generator_forward(self.g, z, training=True)
        loss = -F.logsigmoid(models.discriminator_logits(self.d, fake)).mean(1)
        grads = torch.autograd.grad(loss.sum(), [self.g[k] for k in self.g_keys])
        for k, gr in zip(self.g_keys, grads):
            self.g[k].grad = gr.contiguous()
        self.opt_g.step()
        if self.ema is not None:
            with torch.no_grad():
                a = self.params.ema
                for k, v in self.g.items():
                    e = self.ema[k]
                    if e.is_floating_point():
                        e.mul_(a).add_(v.detach(), alpha=1.0 - a)
                    else:  # the original blends the integer counter too and stores it back as an integer
                        e.copy_((a * e.double() + (1.0 - a) * v.double()).to(e.dtype))
        self.g_steps_done += 1
        return loss.detach()

    def train_step(self, streams: ModelStreams, distributions: Sequence) -> None:
        """G step ``g_steps_done``, preceded by the D steps the schedule puts before it."""
        if len(streams) != self.num_models or len(distributions) != self.num_models:
            raise ValueError(f"need one stream and one distribution per model ({self.num_models}), got "
                             f"{len(streams)} and {len(distributions)}")
        b = self.params.batch_size
        while self.d_steps_done < self.params.disc_steps * self.g_steps_done + 1:
            real = streams.data(distributions, b)
            self.d_step(real, streams.normal(b, models.Z_DIM))
        self.g_step(streams.normal(b, models.Z_DIM))

    # -- evaluation ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, z: Tensor, *, ema: bool = False) -> Tensor:
        """Points (M, N, 2) of the generators in eval mode (BatchNorm running statistics) for z (M, N, 64)."""
        state = self.ema if ema else self.g
        if state is None:
            raise ValueError("sample(ema=True) needs TrainParams(ema=...)")
        return models.generator_forward(state, z, training=False)

    def states(self) -> dict[str, dict[str, Tensor]]:
        """Copies of the stacked states: generator, discriminator and (when kept) generator_ema."""
        out = {"generator": {k: v.detach().clone() for k, v in self.g.items()},
               "discriminator": {k: v.detach().clone() for k, v in self.d.items()}}
        if self.ema is not None:
            out["generator_ema"] = {k: v.clone() for k, v in self.ema.items()}
        return out


def train(gan: BatchedGAN, streams: ModelStreams, distributions: Sequence, steps: int,
          callback: Optional[Callable[[int], None]] = None) -> None:
    """Run G steps ``gan.g_steps_done .. steps - 1``; ``callback(g)`` after each G step g."""
    while gan.g_steps_done < steps:
        g = gan.g_steps_done
        gan.train_step(streams, distributions)
        if callback is not None:
            callback(g)


__all__ = ["TrainParams", "ModelStreams", "BatchedGAN", "train"]

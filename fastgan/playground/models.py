"""The playground's generator and discriminator (METHODS.md §4.2), one at a time and many at once.

Reference modules (``Generator``, ``Discriminator``) have the original layout and state-dict keys
(``module.<i>.weight`` ...):

- G: z ∈ R^64 → Linear 64 → BN → ReLU → 128 → BN → ReLU → 128 → BN → ReLU → 128 → BN → ReLU → 64 → BN → ReLU → Linear → R²
- D: R² → 64 → 128 → 128 → 64 → 1 with ReLU between the layers and a final sigmoid (probabilities).

The batched form holds M independent models as one **stacked state**: a dict with the reference keys whose tensors
carry a leading model dimension (weight (M, out, in), BatchNorm affine and running statistics (M, C)). Linear layers
are ``torch.baddbmm`` over the model dimension, BatchNorm normalises each model over its *own* batch and keeps its own
running statistics (momentum 0.1, unbiased running variance, as ``nn.BatchNorm1d``), so model m of the stack computes
exactly what the reference module with state m computes. ``stack_states`` / ``unstack_state`` convert between the two.

The discriminator is evaluated as **logits**; the probability the original returns is ``sigmoid(logits)``. Losses use
``logsigmoid`` so that log D and log(1 - D) never round to -inf (the same function, computed stably).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

Z_DIM = 64
DATA_DIM = 2
WIDTH = 64
BN_MOMENTUM = 0.1
BN_EPS = 1e-5


def _g_widths(width: int = WIDTH) -> list[int]:
    return [Z_DIM, width, 2 * width, 2 * width, 2 * width, width, DATA_DIM]


def _d_widths(width: int = WIDTH) -> list[int]:
    return [DATA_DIM, width, 2 * width, 2 * width, width, 1]


class Generator(nn.Module):
    """Reference single generator: z (N, 64) → points (N, 2)."""

    def __init__(self, width: int = WIDTH):
        super().__init__()
        self.dim_z = Z_DIM
        w = _g_widths(width)
        layers: list[nn.Module] = []
        for i in range(len(w) - 2):
            layers += [nn.Linear(w[i], w[i + 1]), nn.BatchNorm1d(w[i + 1]), nn.ReLU()]
        layers.append(nn.Linear(w[-2], w[-1]))
        self.module = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.module(z)


class Discriminator(nn.Module):
    """Reference single discriminator: points (N, 2) → probabilities (N, 1)."""

    def __init__(self, width: int = WIDTH):
        super().__init__()
        w = _d_widths(width)
        layers: list[nn.Module] = []
        for i in range(len(w) - 1):
            layers.append(nn.Linear(w[i], w[i + 1]))
            layers.append(nn.ReLU() if i < len(w) - 2 else nn.Sigmoid())
        self.module = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)


# Layer tables of the reference layouts: (Sequential index of the Linear, index of its BatchNorm or None).
_G_LAYERS = [(3 * i, 3 * i + 1) for i in range(5)] + [(15, None)]
_D_LAYERS = [(2 * i, None) for i in range(5)]


def parameter_keys(kind: str) -> list[str]:
    """The trainable state-dict keys of ``kind`` ("generator" or "discriminator"), in module order."""
    layers = _layers(kind)
    keys = []
    for lin, bn in layers:
        keys += [f"module.{lin}.weight", f"module.{lin}.bias"]
        if bn is not None:
            keys += [f"module.{bn}.weight", f"module.{bn}.bias"]
    return keys


def _layers(kind: str):
    if kind == "generator":
        return _G_LAYERS
    if kind == "discriminator":
        return _D_LAYERS
    raise ValueError(f"kind must be 'generator' or 'discriminator', got {kind!r}")


def init_state(kind: str, generators: Sequence[torch.Generator], width: int = WIDTH) -> dict[str, Tensor]:
    """A stacked state of ``len(generators)`` freshly initialised models, model m drawn from ``generators[m]``.

    The distribution is PyTorch's default for ``nn.Linear`` (weight and bias ~ U(±1/sqrt(fan_in)), which is what
    kaiming_uniform with a = sqrt(5) gives) and identity BatchNorm (γ = 1, β = 0, running mean 0, variance 1)."""
    widths = _g_widths(width) if kind == "generator" else _d_widths(width)
    layers = _layers(kind)
    m = len(generators)
    if m < 1:
        raise ValueError("init_state needs at least one generator")
    state: dict[str, Tensor] = {}
    for li, (lin, bn) in enumerate(layers):
        fan_in, fan_out = widths[li], widths[li + 1]
        bound = 1.0 / math.sqrt(fan_in)
        w = torch.empty(m, fan_out, fan_in)
        b = torch.empty(m, fan_out)
        for j, g in enumerate(generators):
            w[j].uniform_(-bound, bound, generator=g)
            b[j].uniform_(-bound, bound, generator=g)
        state[f"module.{lin}.weight"], state[f"module.{lin}.bias"] = w, b
        if bn is not None:
            state[f"module.{bn}.weight"] = torch.ones(m, fan_out)
            state[f"module.{bn}.bias"] = torch.zeros(m, fan_out)
            state[f"module.{bn}.running_mean"] = torch.zeros(m, fan_out)
            state[f"module.{bn}.running_var"] = torch.ones(m, fan_out)
            state[f"module.{bn}.num_batches_tracked"] = torch.zeros(m, dtype=torch.int64)
    return state


def stack_states(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Stack reference state dicts (same keys) into one stacked state with a leading model dimension."""
    if not states:
        raise ValueError("stack_states needs at least one state")
    keys = list(states[0].keys())
    for i, s in enumerate(states[1:], 1):
        if list(s.keys()) != keys:
            raise ValueError(f"states[{i}] has different keys from states[0]")
    return {k: torch.stack([s[k].detach() for s in states]).clone() for k in keys}


def unstack_state(state: Mapping[str, Tensor], index: int) -> dict[str, Tensor]:
    """The reference state dict of model ``index`` of a stacked state (copies)."""
    return {k: v[index].detach().clone() for k, v in state.items()}


def select_models(state: Mapping[str, Tensor], index) -> dict[str, Tensor]:
    """The stacked state of the models ``index`` (a list or 1-D index tensor) of a stacked state (copies)."""
    idx = torch.as_tensor(index, dtype=torch.int64)
    return {k: v.detach().index_select(0, idx).clone() for k, v in state.items()}


def num_models(state: Mapping[str, Tensor]) -> int:
    return int(next(iter(state.values())).shape[0])


def _linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    # x (M, B, in), weight (M, out, in), bias (M, out) -> (M, B, out)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _batch_norm(x: Tensor, state: Mapping[str, Tensor], prefix: str, training: bool) -> Tensor:
    """Per-model BatchNorm1d of x (M, B, C); in training mode also updates the running statistics in ``state``."""
    weight, bias = state[prefix + "weight"], state[prefix + "bias"]
    rm, rv = state[prefix + "running_mean"], state[prefix + "running_var"]
    if training:
        n = x.shape[1]
        if n < 2:
            raise ValueError(f"BatchNorm in training mode needs at least 2 samples per model, got {n}")
        mean = x.mean(1)  # two passes (mean, then mean square deviation): much faster than var_mean over dim 1
        centred = x - mean.unsqueeze(1)
        var = (centred * centred).mean(1)
        with torch.no_grad():
            rm.mul_(1.0 - BN_MOMENTUM).add_(mean, alpha=BN_MOMENTUM)
            rv.mul_(1.0 - BN_MOMENTUM).add_(var * (n / (n - 1)), alpha=BN_MOMENTUM)
            state[prefix + "num_batches_tracked"].add_(1)
        scale = torch.rsqrt(var + BN_EPS) * weight
        return torch.addcmul(bias.unsqueeze(1), centred, scale.unsqueeze(1))
    scale = torch.rsqrt(rv + BN_EPS) * weight
    return torch.addcmul((bias - rm * scale).unsqueeze(1), x, scale.unsqueeze(1))


def generator_forward(state: Mapping[str, Tensor], z: Tensor, *, training: bool) -> Tensor:
    """Points (M, B, 2) of the stacked generators for latents z (M, B, 64).

    ``training=True`` normalises with each model's batch statistics and updates its running statistics in place
    (the module's train mode); ``training=False`` uses the running statistics (eval mode)."""
    h = z
    for lin, bn in _G_LAYERS:
        h = _linear(h, state[f"module.{lin}.weight"], state[f"module.{lin}.bias"])
        if bn is not None:
            h = torch.relu(_batch_norm(h, state, f"module.{bn}.", training))
    return h


def discriminator_logits(state: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Logits (M, B) of the stacked discriminators for points x (M, B, 2); D(x) = sigmoid(logits)."""
    h = x
    for lin, _ in _D_LAYERS[:-1]:
        h = torch.relu(_linear(h, state[f"module.{lin}.weight"], state[f"module.{lin}.bias"]))
    lin = _D_LAYERS[-1][0]
    # the 64 -> 1 layer as multiply-and-sum: a one-model baddbmm with one output column takes a GEMV path that
    # rounds differently from the batched one, and results must not depend on how many models run together
    w, b = state[f"module.{lin}.weight"], state[f"module.{lin}.bias"]
    return (h * w).sum(-1) + b


def load_reference(kind: str, state: Mapping[str, Tensor], width: int = WIDTH) -> nn.Module:
    """A reference module (``Generator`` or ``Discriminator``) holding one unstacked state dict."""
    module = Generator(width) if kind == "generator" else Discriminator(width) if kind == "discriminator" else None
    if module is None:
        raise ValueError(f"kind must be 'generator' or 'discriminator', got {kind!r}")
    module.load_state_dict(dict(state))
    return module


def check_state(kind: str, state: Mapping[str, Tensor], name: Optional[str] = None) -> int:
    """Validate a stacked state of ``kind``; returns the number of models. Raises naming the bad key."""
    name = name or kind
    want = set(Generator().state_dict() if kind == "generator" else Discriminator().state_dict())
    got = set(state)
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        raise ValueError(f"{name}: not a playground {kind} state (missing {missing}, unexpected {extra})")
    ref = (Generator() if kind == "generator" else Discriminator()).state_dict()
    m = None
    for k, v in state.items():
        if not isinstance(v, Tensor) or v.dim() != ref[k].dim() + 1 or tuple(v.shape[1:]) != tuple(ref[k].shape):
            raise ValueError(f"{name}[{k!r}] must have shape (M, {', '.join(map(str, ref[k].shape))}), "
                             f"got {tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}")
        if m is None:
            m = v.shape[0]
        elif v.shape[0] != m:
            raise ValueError(f"{name}[{k!r}] holds {v.shape[0]} models, other entries {m}")
    return int(m)


__all__ = ["Z_DIM", "DATA_DIM", "WIDTH", "Generator", "Discriminator", "parameter_keys", "init_state", "stack_states",
           "unstack_state", "select_models", "num_models", "generator_forward", "discriminator_logits",
           "load_reference", "check_state"]

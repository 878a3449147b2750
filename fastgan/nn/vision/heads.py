"""Trainable discriminator heads on frozen backbone features, and the vision-aided losses.

Heads (vision-aided-gan's ``cv_discriminator.py`` topologies; every conv and linear spectral-normalised with
``torch.nn.utils.parametrizations.spectral_norm``, LeakyReLU(0.2), BlurPool = depthwise [1,3,3,1]x[1,3,3,1]/64
with zero padding):

- :class:`MultiLevelHead` (CLIP / DINO multi-level features): per spatial level
  [Blur(pad 2) if down=2] -> Conv3x3 (stride 1 pad 1 when down=1, stride 2 pad 0 when down=2) -> LReLU ->
  Blur(pad 1) -> Conv1x1 stride 2 -> a 1-channel logit map (3 x 3 for CLIP's 7 x 7 and DINO's 14 x 14 tokens);
  per vector level Linear -> LReLU -> Linear -> (N, 1).
- :class:`SimpleHead` (one feature map): Blur(pad 2) -> Conv3x3 stride 2 -> LReLU -> flatten -> Linear(256) ->
  LReLU -> Linear(1).
- :class:`MLPHead` (one vector): Linear(256) -> LReLU -> Linear(1).

With ``c_dim > 0`` a projection term <embed(c), h> is added to each vector-level logit (h: the last hidden
layer), as in the pip package's class-conditional heads.

Losses (:func:`vision_loss`) always return a scalar: the batch mean, summed over levels for the multi-level
ones. ``sigmoid``: BCE-with-logits with targets real 1, fake 0, generator 1; ``sigmoid_s``: one-sided label
smoothing, real and generator targets 0.8; ``hinge``: mean relu(1 - x) real, mean relu(1 + x) fake, -mean x
generator; ``multilevel_*``: the same summed over the levels (a spatial map counts as one level, averaged over
its positions). A multi-level head needs a ``multilevel_*`` loss and a single-output head a plain one
(:func:`check_pairing`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

LRELU_SLOPE = 0.2
SMOOTH_ALPHA = 0.8
HIDDEN = 256
LOSSES = ("sigmoid", "sigmoid_s", "multilevel_sigmoid", "multilevel_sigmoid_s", "hinge", "multilevel_hinge")
TARGETS = ("real", "fake", "gen")


def _sn(module: nn.Module) -> nn.Module:
    return spectral_norm(module)


class Blur(nn.Module):
    """Depthwise [1, 3, 3, 1] x [1, 3, 3, 1] / 64 filter with ``pad`` zeros on every side and ``stride``."""

    def __init__(self, pad: int, stride: int = 1):
        super().__init__()
        self.pad, self.stride = pad, stride
        t = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("kernel", (t[:, None] * t[None, :] / 64.0)[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        k = self.kernel.to(x.dtype).expand(c, 1, 4, 4)
        return F.conv2d(F.pad(x, [self.pad] * 4), k, stride=self.stride, groups=c)


def _conv_out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


class _VectorBranch(nn.Module):
    """Linear -> LReLU -> Linear(1) with an optional class projection on the hidden layer."""

    def __init__(self, dim: int, hidden: int, c_dim: int):
        super().__init__()
        self.fc = _sn(nn.Linear(dim, hidden))
        self.out = _sn(nn.Linear(hidden, 1))
        self.embed = _sn(nn.Linear(c_dim, hidden, bias=False)) if c_dim > 0 else None

    def forward(self, x: Tensor, c: Optional[Tensor]) -> Tensor:
        h = F.leaky_relu(self.fc(x), LRELU_SLOPE)
        logit = self.out(h)
        if self.embed is not None:
            logit = logit + (self.embed(c) * h).sum(dim=1, keepdim=True)
        return logit


class _MapBranch(nn.Module):
    """One spatial level of the multi-level head -> (N, 1, h, w) logits."""

    def __init__(self, channels: int, size: int, hidden: int, down: int):
        super().__init__()
        layers: List[nn.Module] = []
        if down == 2:
            layers.append(Blur(pad=2))
            size = size + 1
            layers.append(_sn(nn.Conv2d(channels, hidden, 3, stride=2, padding=0)))
            size = _conv_out(size, 3, 2, 0)
        else:
            layers.append(_sn(nn.Conv2d(channels, hidden, 3, stride=1, padding=1)))
        layers += [nn.LeakyReLU(LRELU_SLOPE), Blur(pad=1)]
        size = size - 1
        layers.append(_sn(nn.Conv2d(hidden, 1, 1, stride=2)))
        self.out_size = _conv_out(size, 1, 2, 0)
        if self.out_size < 1:
            raise ValueError(f"feature map of size {size} is too small for the multi-level head")
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MultiLevelHead(nn.Module):
    """One branch per feature level: maps get :class:`_MapBranch`, vectors a two-layer MLP. Returns a list of
    logits, one per level."""

    def __init__(self, kinds: Sequence[str], shapes: Sequence[Tuple[int, ...]], *, channels: int = 256,
                 down: int = 1, c_dim: int = 0):
        super().__init__()
        if down not in (1, 2):
            raise ValueError(f"MultiLevelHead: down must be 1 or 2, got {down}")
        self.kinds = tuple(kinds)
        self.branches = nn.ModuleList()
        for kind, shape in zip(kinds, shapes):
            if kind == "map":
                self.branches.append(_MapBranch(shape[0], shape[1], channels, down))
            else:
                self.branches.append(_VectorBranch(shape[0], channels, c_dim))

    def forward(self, feats: Sequence[Tensor], c: Optional[Tensor] = None) -> List[Tensor]:
        return [b(f) if k == "map" else b(f, c) for k, b, f in zip(self.kinds, self.branches, feats)]


class SimpleHead(nn.Module):
    """Blur(pad 2) -> SN Conv3x3 s2 -> LReLU -> flatten -> SN Linear(256) -> LReLU -> SN Linear(1) (+ projection)."""

    def __init__(self, shape: Tuple[int, int, int], *, hidden: int = HIDDEN, c_dim: int = 0):
        super().__init__()
        channels, size = shape[0], shape[1]
        out = _conv_out(size + 1, 3, 2, 0)
        if out < 1:
            raise ValueError(f"SimpleHead: feature map {tuple(shape)} is too small")
        self.blur = Blur(pad=2)
        self.conv = _sn(nn.Conv2d(channels, hidden, 3, stride=2, padding=0))
        self.vec = _VectorBranch(hidden * out * out, hidden, c_dim)

    def forward(self, feats: Sequence[Tensor], c: Optional[Tensor] = None) -> List[Tensor]:
        h = F.leaky_relu(self.conv(self.blur(feats[0])), LRELU_SLOPE)
        return [self.vec(h.flatten(1), c)]


class MLPHead(nn.Module):
    """SN Linear(256) -> LReLU -> SN Linear(1) (+ projection) on one feature vector."""

    def __init__(self, dim: int, *, hidden: int = HIDDEN, c_dim: int = 0):
        super().__init__()
        self.vec = _VectorBranch(dim, hidden, c_dim)

    def forward(self, feats: Sequence[Tensor], c: Optional[Tensor] = None) -> List[Tensor]:
        return [self.vec(feats[0], c)]


def build_head(head: str, kinds: Sequence[str], shapes: Sequence[Tuple[int, ...]], *, c_dim: int = 0,
               **options) -> nn.Module:
    """The head named ``head`` ("multilevel", "conv" or "mlp") for features of the given kinds and shapes."""
    if head == "multilevel":
        return MultiLevelHead(kinds, shapes, c_dim=c_dim, **options)
    if len(kinds) != 1:
        raise ValueError(f"head {head!r} takes one feature level, got {len(kinds)}")
    if head == "conv":
        return SimpleHead(shapes[0], c_dim=c_dim, **options)
    if head == "mlp":
        return MLPHead(shapes[0][0], c_dim=c_dim, **options)
    raise ValueError(f"unknown head {head!r}; expected 'multilevel', 'conv' or 'mlp'")


# ------------------------------------------------------------------------------------------------------------
# losses


def check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"unknown vision-aided loss {loss!r}; expected one of {', '.join(LOSSES)}")
    return loss


def check_pairing(loss: str, multilevel: bool, where: str = "") -> None:
    """Raise when ``loss`` does not fit the head's output: a multi-level head (a list of several logits) needs a
    ``multilevel_*`` loss, a single-output head a plain one."""
    check_loss(loss)
    at = f" for {where}" if where else ""
    if multilevel and not loss.startswith("multilevel_"):
        raise ValueError(f"loss {loss!r}{at} does not fit a multi-level head (one logit per feature level); use "
                         f"'multilevel_{loss}' (or a single-output backbone such as '<name>:pool')")
    if not multilevel and loss.startswith("multilevel_"):
        raise ValueError(f"loss {loss!r}{at} needs a multi-level head but this head has one output; use "
                         f"{loss[len('multilevel_'):]!r}")


def _bce_level(x: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(x.float(), torch.full_like(x, target, dtype=torch.float32))


def vision_loss(logits: Sequence[Tensor], loss: str, target: str) -> Tensor:
    """Scalar loss of a head's ``logits`` (one tensor per level) for ``target`` "real", "fake" or "gen"."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    check_pairing(loss, len(logits) > 1)
    base = loss[len("multilevel_"):] if loss.startswith("multilevel_") else loss
    total = None
    for x in logits:
        if base.startswith("sigmoid"):
            alpha = SMOOTH_ALPHA if base == "sigmoid_s" else 1.0
            term = _bce_level(x, 0.0 if target == "fake" else alpha)
        elif target == "real":
            term = F.relu(1.0 - x.float()).mean()
        elif target == "fake":
            term = F.relu(1.0 + x.float()).mean()
        else:
            term = -x.float().mean()
        total = term if total is None else total + term
    return total


def default_loss(multilevel: bool, augment: str, probe_accuracy: Optional[float] = None) -> str:
    """vision-aided-gan's StyleGAN2 recipe: ``multilevel_sigmoid`` for a multi-level head, ``sigmoid`` otherwise,
    with ``_s`` (label smoothing 0.8) appended when the heads use DiffAugment or the probe accuracy is > 0.9."""
    name = "multilevel_sigmoid" if multilevel else "sigmoid"
    if augment == "diffaugment" or (probe_accuracy is not None and probe_accuracy > 0.9):
        name += "_s"
    return name

"""Feature extractors: a registry of networks that map images to features, with local, hash-checked weights.

Nothing here downloads. A network with pretrained weights takes ``weights=<path>`` (or finds its file name in
``$FASTGAN_WEIGHTS_DIR``) and checks the file's sha256 prefix before loading it; a missing or different file is a
clear error that names the file, where it was looked for and the expected hash prefix.

    ext = get_extractor("random-conv", dim=64, seed=0)
    feats = ext(images)        # uint8 or [-1, 1] float (N, 3, H, W) -> float32 (N, dim)

Built in: ``pixels`` (the preprocessed pixels, flattened: for tests on tiny images) and ``random-conv`` (a seeded,
untrained convolutional network: deterministic features for tests and smoke runs). Anything else registers with
``register_extractor(name, factory)``; any ``nn.Module`` / callable on preprocessed images can also be wrapped with
``FeatureExtractor(net, name=..., dim=..., input_size=...)``.
"""
from __future__ import annotations

import os
import pathlib
from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

from .._io import sha256_file
from . import protocols as P

WEIGHTS_ENV = "FASTGAN_WEIGHTS_DIR"


def sha256_of(path: Union[str, os.PathLike]) -> str:
    return sha256_file(path).hexdigest()


def find_weights(filename: str, sha256_prefix: str, weights: Optional[Union[str, os.PathLike]] = None) -> pathlib.Path:
    """The checked path of a weight file: ``weights`` if given, else ``$FASTGAN_WEIGHTS_DIR/<filename>``."""
    if weights is not None:
        path = pathlib.Path(weights)
        where = "the weights= path"
    else:
        root = os.environ.get(WEIGHTS_ENV)
        if not root:
            raise FileNotFoundError(
                f"weight file {filename} (sha256 {sha256_prefix}...) is needed; pass weights=<path> or put it in the "
                f"folder named by ${WEIGHTS_ENV}. fastgan never downloads weights.")
        path = pathlib.Path(root) / filename
        where = f"${WEIGHTS_ENV}={root}"
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} not found ({where}); expected {filename} with sha256 "
                                f"{sha256_prefix}...")
    digest = sha256_of(path)
    if not digest.startswith(sha256_prefix):
        raise ValueError(f"weight file {path} has sha256 {digest[:12]}..., expected {sha256_prefix}...: a different "
                         f"file or version than {filename}")
    return path


class FeatureExtractor(nn.Module):
    """Images -> float32 features. Wraps ``net`` (which sees preprocessed float32 images of input_size pixels)."""

    def __init__(self, net: Callable[[Tensor], Tensor], *, name: str, dim: int, input_size: int,
                 protocol: str = "clean", weights_sha256: str = ""):
        super().__init__()
        P.get_protocol(protocol)
        self.net = net
        self.name, self.dim, self.input_size = name, int(dim), int(input_size)
        self.protocol, self.weights_sha256 = protocol, weights_sha256

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def forward(self, images: Tensor, protocol: Optional[str] = None) -> Tensor:
        x = P.preprocess(images.to(self.device), protocol or self.protocol, self.input_size)
        out = self.net(x)
        if out.dim() != 2 or out.shape[1] != self.dim:
            raise RuntimeError(f"extractor {self.name} returned shape {tuple(out.shape)}, expected (N, {self.dim})")
        return out.float()

    def describe(self) -> dict:
        """What statistics record about the extractor."""
        return {"extractor": self.name, "dim": self.dim, "input_size": self.input_size, "protocol": self.protocol,
                "weights_sha256": self.weights_sha256}


class _RandomConv(nn.Module):
    def __init__(self, dim: int, seed: int, width: int = 32):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        chans = [3, width, width * 2, dim]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans[:-1], chans[1:]))
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = torch.relu(x)
        return x.mean(dim=(2, 3))


def _pixels(size: int = 8, protocol: str = "clean", **_) -> FeatureExtractor:
    return FeatureExtractor(lambda x: x.flatten(1), name=f"pixels-{size}", dim=3 * size * size, input_size=size,
                            protocol=protocol)


def _random_conv(dim: int = 64, seed: int = 0, input_size: int = 64, protocol: str = "clean",
                 **_) -> FeatureExtractor:
    return FeatureExtractor(_RandomConv(dim, seed), name=f"random-conv-{dim}-s{seed}", dim=dim,
                            input_size=input_size, protocol=protocol)


_REGISTRY: dict[str, Callable[..., FeatureExtractor]] = {"pixels": _pixels, "random-conv": _random_conv}


def register_extractor(name: str, factory: Callable[..., FeatureExtractor], *, replace: bool = False) -> None:
    if name in _REGISTRY and not replace:
        raise ValueError(f"an extractor named {name!r} is already registered (pass replace=True)")
    _REGISTRY[name] = factory


def list_extractors() -> list[str]:
    return sorted(_REGISTRY)


def get_extractor(name: str, *, device: Union[str, torch.device] = "cpu", **kwargs) -> FeatureExtractor:
    """Build a registered extractor (``weights=`` for those with pretrained weights) on ``device``, in eval mode."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown extractor {name!r}; registered: {', '.join(list_extractors())}")
    return _REGISTRY[name](**kwargs).to(device).eval()


# pretrained extractors register themselves on import (after the registry exists: they import from here)
from . import efficientnet as _efficientnet  # noqa: E402,F401  (efficientnet-lite0-offline)
from . import inception as _inception  # noqa: E402,F401  (inception-fid, inception-nvlabs-ts, vgg16-nvlabs)

"""Inception-v3 (FID) and the NVlabs TorchScript detectors as feature extractors, without torchvision.

Three registered extractors, all reading local, hash-checked files (``weights=<path>`` or ``$FASTGAN_WEIGHTS_DIR``);
nothing is downloaded:

``inception-fid``
    :class:`FIDInceptionV3`, written here: the TensorFlow Inception-v3 graph of 2015-12-05 as ported to PyTorch by
    pytorch-fid (``src/pytorch_fid/inception.py``: torchvision's Inception-v3 layout with 1008 classes, no aux
    logits, BatchNorm eps 0.001, and the FID blocks whose pooling differs from torchvision's). It loads pytorch-fid's
    file ``pt_inception-2015-12-05-6726825d.pth`` (sha256 prefix ``6726825d``; torch-fidelity's
    ``weights-inception-2015-12-05-6726825d.pth`` carries the same prefix and can be passed as ``weights=``) with
    ``load_state_dict(strict=True)``; module and parameter names are those of the file (torchvision names:
    ``Conv2d_1a_3x3.conv.weight``, ``Mixed_7c.branch_pool.bn.running_var``, ..., ``fc.weight``). The network
    returns the 2048-d pool3 features. The default protocol ``pytorch-fid`` feeds it
    what pytorch-fid does: [0, 1] images resized to 299 with torch bilinear (no antialias), then ``2 x - 1``.

``inception-nvlabs-ts``
    NVlabs' TorchScript ``inception-2015-12-05.pt`` (StyleGAN2-ADA / StyleGAN3 / EDM metrics, clean-fid's
    ``legacy_tensorflow`` mode). Called exactly as stylegan2-ada-pytorch ``metrics/metric_utils.py`` calls it:
    ``detector(images, return_features=True)`` on **uint8** (N, 3, H, W) images of any size; the module casts to
    float, resizes to 299 x 299 itself (TF1-compatible bilinear) and normalises itself. So the extractor only
    quantises (the protocol's quantisation, NVlabs round-half-up for float input) and repeats grey images to 3
    channels; it never resizes or normalises (no double resize). Protocols ``nvlabs`` (default) and ``tf1`` are
    accepted (they share quantisation and TF1 resize and differ only in the covariance the statistics record);
    others are refused, since their resize would not be the one that happens inside the module.

``vgg16-nvlabs``
    NVlabs' TorchScript ``vgg16.pt`` (StyleGAN2-ADA ``metrics/precision_recall.py``: improved precision / recall
    features), called the same way, ``detector(uint8 images, return_features=True)`` -> (N, 4096) on images of any
    size: its forward has a ``resize_images`` switch (NVlabs' projector.py turns it off for LPIPS), which the metric
    leaves at its default, so the module resizes inside. ``input_size`` records 224, the VGG16 input size, only;
    fastgan does not resize for it.

None of the sources read (stylegan2-ada-pytorch, clean-fid) states a sha256 for the two NVlabs TorchScript files,
and their URLs carry none. Their factories therefore take ``sha256=`` (a hex prefix, checked like every other weight
file: a different file is refused); without it the file is accepted, its full sha256 is recorded in
``describe()["weights_sha256"]`` (and so in the saved statistics) and a warning says so. Statistics computed from
different files then carry different hashes.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import protocols as P
from .extractors import FeatureExtractor, find_weights, register_extractor, sha256_of

PathLike = Union[str, os.PathLike]

FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
FID_SHA256_PREFIX = "6726825d"
FID_DIM = 2048
FID_NUM_CLASSES = 1008
FID_INPUT_SIZE = 299
BN_EPS = 0.001

NVLABS_INCEPTION = "inception-2015-12-05.pt"
NVLABS_VGG16 = "vgg16.pt"
NVLABS_PROTOCOLS = ("nvlabs", "tf1")

# The pooling of the 3x3 branch_pool path of the Inception blocks:
#   "avg"      TensorFlow average pooling: padded zeros are not counted (count_include_pad=False);
#   "avg_pad"  torchvision's average pooling (padded zeros counted): NOT what the FID graph does;
#   "max"      max pooling, which the FID graph uses in its last block (Mixed_7c; an oddity of that graph).
POOLS = ("avg", "avg_pad", "max")


def pool3x3(x: Tensor, how: str) -> Tensor:
    """3x3, stride 1, padding 1 pooling of the Inception ``branch_pool`` path (see ``POOLS``)."""
    if how == "avg":
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    if how == "avg_pad":
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=True)
    if how == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    raise ValueError(f"unknown pooling {how!r}; choose one of {', '.join(POOLS)}")


class ConvBN(nn.Module):
    """Bias-free convolution, BatchNorm (eps 0.001), ReLU: torchvision's ``BasicConv2d`` (keys ``conv``, ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class _PoolBranchBlock(nn.Module):
    """A block whose ``branch_pool`` path pools 3x3 (``self.pool``, one of ``POOLS``) before a 1x1 ConvBN."""

    pool: str

    def _pool_branch(self, x: Tensor) -> Tensor:
        return self.branch_pool(pool3x3(x, self.pool))


class FIDInceptionA(_PoolBranchBlock):
    """Mixed_5b/5c/5d (35 x 35): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | pool -> 1x1. Output 224 + pool_features."""

    def __init__(self, cin: int, pool_features: int, pool: str = "avg"):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b1, b5, b3, self._pool_branch(x)], 1)


class InceptionB(nn.Module):
    """Mixed_6a, 35 -> 17: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2. Output 384 + 96 + cin."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(_PoolBranchBlock):
    """Mixed_6b..6e (17 x 17), factorised 7x7: 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 |
    pool -> 1x1. Output 768."""

    def __init__(self, cin: int, channels_7x7: int, pool: str = "avg"):
        super().__init__()
        c7 = channels_7x7
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        return torch.cat([b1, b7, bd, self._pool_branch(x)], 1)


class InceptionD(nn.Module):
    """Mixed_7a, 17 -> 8: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max pool 3x3/2. Output 320 + 192 + cin."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(_PoolBranchBlock):
    """Mixed_7b/7c (8 x 8), expanded filter bank: 1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1) |
    pool -> 1x1. Output 320 + 768 + 768 + 192 = 2048."""

    def __init__(self, cin: int, pool: str = "avg"):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        return torch.cat([b1, b3, bd, self._pool_branch(x)], 1)


class FIDInceptionE_1(FIDInceptionE):  # noqa: N801 (pytorch-fid's name)
    """Mixed_7b: average pooling without the padded zeros, as TensorFlow."""

    def __init__(self, cin: int):
        super().__init__(cin, pool="avg")


class FIDInceptionE_2(FIDInceptionE):  # noqa: N801 (pytorch-fid's name)
    """Mixed_7c: the FID graph max-pools in its pool branch here (other Inception-v3 graphs average)."""

    def __init__(self, cin: int):
        super().__init__(cin, pool="max")


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 (TF graph 2015-12-05), input (N, 3, H, W) in [-1, 1] (299 x 299 for FID; any size
    >= 75 runs), output the (N, 2048) pool3 features, or ``(features, logits)`` with ``return_logits=True``
    (1008 classes, as the graph).

    ``state_dict()`` keys are those of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (torchvision names),
    plus one ``num_batches_tracked`` buffer per BatchNorm, which that file does not need to carry: a plain dict
    without those keys (what a converter from the TF graph writes) loads strictly, because BatchNorm fills the
    counter in for a state_dict without version metadata, as in pytorch-fid's strict load into torchvision."""

    def __init__(self, num_classes: int = FID_NUM_CLASSES):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)
        self.fc = nn.Linear(FID_DIM, num_classes)

    def forward(self, x: Tensor, return_logits: bool = False):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # 32 x 149, 32 x 147, 64 x 147
        x = F.max_pool2d(x, kernel_size=3, stride=2)                        # 64 x 73
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                       # 80 x 73, 192 x 71
        x = F.max_pool2d(x, kernel_size=3, stride=2)                        # 192 x 35
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d,         # 256, 288, 288 x 35
                      self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,         # 768 x 17
                      self.Mixed_6d, self.Mixed_6e,
                      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):        # 1280, 2048, 2048 x 8
            x = block(x)
        features = F.adaptive_avg_pool2d(x, 1).flatten(1)                   # pool3: (N, 2048)
        if return_logits:
            return features, self.fc(features)                               # dropout is the identity in eval
        return features


def load_fid_inception(path: PathLike, *, map_location: Union[str, torch.device] = "cpu") -> FIDInceptionV3:
    """:class:`FIDInceptionV3` with the state_dict file at ``path`` loaded strictly (no hash check here; the
    ``inception-fid`` extractor checks it). The file is read with ``torch.load(weights_only=True)``."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict; the inception-fid extractor "
                         f"reads pytorch-fid's {FID_WEIGHTS} (NVlabs' TorchScript {NVLABS_INCEPTION} is "
                         f"'inception-nvlabs-ts')")
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        net = FIDInceptionV3()
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval().requires_grad_(False)


def _inception_fid(weights: Optional[PathLike] = None, protocol: str = "pytorch-fid", **_) -> FeatureExtractor:
    path = find_weights(FID_WEIGHTS, FID_SHA256_PREFIX, weights)
    return FeatureExtractor(load_fid_inception(path), name="inception-fid", dim=FID_DIM, input_size=FID_INPUT_SIZE,
                            protocol=protocol, weights_sha256=sha256_of(path))


class NVlabsTorchScriptExtractor(FeatureExtractor):
    """An NVlabs TorchScript detector: ``net(uint8 images (N, 3, H, W), return_features=True) -> (N, dim)``.

    The module resizes and normalises inside, so this only quantises float input (the protocol's quantisation) and
    repeats grey images to 3 channels (as the later NVlabs metric code, stylegan3 and EDM, does)."""

    @torch.no_grad()
    def forward(self, images: Tensor, protocol: Optional[str] = None) -> Tensor:
        name = protocol or self.protocol
        if name not in NVLABS_PROTOCOLS:
            raise ValueError(f"extractor {self.name} resizes and normalises inside the TorchScript module; it takes "
                             f"protocol {' or '.join(NVLABS_PROTOCOLS)}, not {name!r}")
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
        x = P.quantise(images.to(self.device), P.get_protocol(name).quantise)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        out = self.net(x, return_features=True)
        if out.dim() != 2 or out.shape[1] != self.dim:
            raise RuntimeError(f"extractor {self.name} returned shape {tuple(out.shape)}, expected (N, {self.dim})")
        return out.float()


def _nvlabs_torchscript(filename: str, name: str, dim: int, input_size: int, weights: Optional[PathLike],
                        sha256: Optional[str], protocol: str) -> NVlabsTorchScriptExtractor:
    if protocol not in NVLABS_PROTOCOLS:
        raise ValueError(f"extractor {name} takes protocol {' or '.join(NVLABS_PROTOCOLS)}, not {protocol!r}")
    path = find_weights(filename, (sha256 or "").lower(), weights)
    digest = sha256_of(path)
    if not sha256:
        warnings.warn(f"{name}: no published sha256 for {filename}; accepted {path} and recorded its sha256 "
                      f"{digest} (pass sha256=<hex prefix> to pin it)", UserWarning, stacklevel=3)
    with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated; these files are TorchScript
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning)
        net = torch.jit.load(str(path), map_location="cpu")
    return NVlabsTorchScriptExtractor(net.eval(), name=name, dim=dim, input_size=input_size, protocol=protocol,
                                      weights_sha256=digest)


def _inception_nvlabs_ts(weights: Optional[PathLike] = None, sha256: Optional[str] = None,
                         protocol: str = "nvlabs", **_) -> NVlabsTorchScriptExtractor:
    return _nvlabs_torchscript(NVLABS_INCEPTION, "inception-nvlabs-ts", FID_DIM, FID_INPUT_SIZE, weights, sha256,
                               protocol)


def _vgg16_nvlabs(weights: Optional[PathLike] = None, sha256: Optional[str] = None, protocol: str = "nvlabs",
                  **_) -> NVlabsTorchScriptExtractor:
    return _nvlabs_torchscript(NVLABS_VGG16, "vgg16-nvlabs", 4096, 224, weights, sha256, protocol)


register_extractor("inception-fid", _inception_fid, replace=True)
register_extractor("inception-nvlabs-ts", _inception_nvlabs_ts, replace=True)
register_extractor("vgg16-nvlabs", _vgg16_nvlabs, replace=True)

__all__ = ["FIDInceptionV3", "FIDInceptionA", "InceptionB", "FIDInceptionC", "InceptionD", "FIDInceptionE",
           "FIDInceptionE_1", "FIDInceptionE_2", "ConvBN", "pool3x3", "POOLS", "load_fid_inception",
           "NVlabsTorchScriptExtractor", "FID_WEIGHTS", "FID_SHA256_PREFIX", "NVLABS_INCEPTION", "NVLABS_VGG16"]

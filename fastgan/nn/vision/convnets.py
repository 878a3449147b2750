"""VGG16 feature networks for the vision-aided discriminator (written here, no torchvision).

Two layouts, both ``features.N.{weight,bias}`` with N the index in an ``nn.Sequential``:

``vgg16``
    torchvision's ``vgg16().features``: 13 conv3x3+ReLU, 2x2 stride-2 max-pooling after conv blocks 2, 4, 7, 10
    and 13 (convs at indices 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28). Loads ``vgg16-397923af.pth``;
    its ``classifier.*`` entries are ignored.
``vgg16-lpf4``
    antialiased-cnns ``vgg16(filter_size=4).features``, the network vision-aided-gan uses: each max-pool is a
    2x2 stride-1 max-pool followed by a BlurPool (depthwise [1, 3, 3, 1] x [1, 3, 3, 1] / 64, reflect padding
    (1, 2, 1, 2), stride 2), so every pool takes two sequence slots and the conv indices shift (0, 2, 6, 8, 12,
    14, 16, 20, 22, 24, 28, 30, 32). Loads antialiased-cnns' ``vgg16_lpf4`` file; stored ``filt`` buffers are
    checked against the filter and dropped.

The weights differ (anti-aliased training vs. torchvision's ImageNet run), so the two are separate backbones.
At 224 x 224 both end in a 512 x 7 x 7 map.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Schema = Dict[str, Tuple[int, ...]]

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
INPUT_SIZE = 224
OUT_CHANNELS = 512


def blur_filter(channels: int, taps=(1.0, 3.0, 3.0, 1.0)) -> Tensor:
    """(channels, 1, k, k) normalised separable binomial filter, float32 on the CPU."""
    t = torch.tensor(taps, dtype=torch.float32, device="cpu")
    f = t[:, None] * t[None, :]
    return (f / f.sum()).expand(channels, 1, len(taps), len(taps)).clone()


class AntialiasBlurPool(nn.Module):
    """antialiased-cnns ``BlurPool(channels, filt_size=4, stride=2)``: reflect pad (1, 2, 1, 2), depthwise blur,
    stride 2. The filter is a non-persistent buffer named ``filt``."""

    def __init__(self, channels: int, stride: int = 2):
        super().__init__()
        self.stride = stride
        self.register_buffer("filt", blur_filter(channels), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (1, 2, 1, 2), mode="reflect")
        return F.conv2d(x, self.filt.to(x.dtype), stride=self.stride, groups=x.shape[1])


def _layers(antialiased: bool) -> List[nn.Module]:
    layers: List[nn.Module] = []
    cin = 3
    for v in VGG16_CFG:
        if v == "M":
            if antialiased:
                layers += [nn.MaxPool2d(kernel_size=2, stride=1), AntialiasBlurPool(cin)]
            else:
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return layers


class VGG16Features(nn.Module):
    """``features`` of VGG16 (``antialiased``: the antialiased-cnns filter_size=4 variant)."""

    def __init__(self, antialiased: bool = False):
        super().__init__()
        self.antialiased = antialiased
        self.features = nn.Sequential(*_layers(antialiased))

    def feature_map(self, x: Tensor) -> Tensor:
        return self.features(x)

    def levels(self, x: Tensor, output: str) -> List[Tensor]:
        m = self.feature_map(x)
        return [m] if output == "conv" else [m.mean(dim=(2, 3))]

    def pooled(self, x: Tensor) -> Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


def vgg16_schema(antialiased: bool = False) -> Schema:
    """Name -> shape of the ``features.*`` parameters, from the layer recipe (independent of the module)."""
    s: Schema = {}
    idx, cin = 0, 3
    for v in VGG16_CFG:
        if v == "M":
            idx += 2 if antialiased else 1
            continue
        s[f"features.{idx}.weight"] = (v, cin, 3, 3)
        s[f"features.{idx}.bias"] = (v,)
        idx += 2
        cin = v
    return s


def vgg16_state_from_file(state: Mapping[str, Tensor], antialiased: bool = False) -> Dict[str, Tensor]:
    """The ``features.*`` tensors of a VGG16 file (unwrapping ``{"state_dict": ...}``, dropping ``module.``
    prefixes and ``classifier.*``). For the anti-aliased layout, ``features.N.filt`` buffers must equal the
    [1, 3, 3, 1] blur and are dropped."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    out = {}
    for k, v in state.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if not k.startswith("features."):
            continue
        if k.endswith(".filt"):
            if not antialiased:
                raise ValueError(f"vgg16: the file has a blur-pool buffer {k}: it is an anti-aliased VGG16; use "
                                 "the backbone 'vgg16-lpf4'")
            if v.dim() != 4 or not torch.allclose(v.float(), blur_filter(v.shape[0]), atol=1e-6):
                raise ValueError(f"vgg16-lpf4: the file's {k} is not the filter_size=4 blur [1, 3, 3, 1]")
            continue
        out[k] = v
    return out

"""Module wrappers of the modulated-conv family: :class:`ModulatedConv2d` and :class:`AdaFMConv2d`."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..ops.modconv import _pair, adafm_conv2d, modulated_conv2d

IntPair = Union[int, tuple[int, int]]


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution with an equalised learning rate.

    ``forward(x, styles)``: x (N, Cin, H, W), styles (N, Cin). The stored weight is N(0, 1) and is scaled by
    1/sqrt(Cin*kh*kw) at run time (folded into the styles, which is exact). With ``demodulate=True`` the output
    of each sample and output channel has unit expected variance for unit-variance inputs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair = 3, *, demodulate: bool = True,
                 padding: Optional[IntPair] = None, eps: float = 1e-8, impl: str = "auto",
                 device=None, dtype=None):
        super().__init__()
        kh, kw = _pair(kernel_size, None, "kernel_size")
        if in_channels < 1 or out_channels < 1 or kh < 1 or kw < 1:
            raise ValueError(f"channels and kernel_size must be positive, got in={in_channels}, "
                             f"out={out_channels}, kernel={(kh, kw)}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.demodulate, self.eps, self.impl = demodulate, eps, impl
        self.padding = _pair(padding, (kh // 2, kw // 2), "padding")
        self.weight_gain = 1.0 / math.sqrt(in_channels * kh * kw)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kh, kw, device=device, dtype=dtype))

    def forward(self, x: Tensor, styles: Tensor) -> Tensor:
        return modulated_conv2d(x, self.weight, styles * self.weight_gain, demodulate=self.demodulate,
                                padding=self.padding, eps=self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"demodulate={self.demodulate}, padding={self.padding}, impl={self.impl!r}")


class AdaFMConv2d(nn.Module):
    """AdaFM convolution (Zhao et al., ICML'20): W' = gamma * W + beta with per-(Cout, Cin) gamma and beta.

    The wrapped weight is frozen by default (the transfer recipe) and gamma = 1, beta = 0 reproduce the source
    convolution exactly. :meth:`from_conv` wraps a pretrained ``nn.Conv2d``; :meth:`fold` bakes gamma/beta back
    into a plain ``nn.Conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair = 3, *, stride: IntPair = 1,
                 padding: Optional[IntPair] = None, bias: bool = True, freeze_weight: bool = True,
                 impl: str = "auto", device=None, dtype=None):
        super().__init__()
        kh, kw = _pair(kernel_size, None, "kernel_size")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride = _pair(stride, None, "stride")
        self.padding = _pair(padding, (kh // 2, kw // 2), "padding")
        self.impl = impl
        fk = dict(device=device, dtype=dtype)
        w = torch.empty(out_channels, in_channels, kh, kw, **fk)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        self.weight = nn.Parameter(w, requires_grad=not freeze_weight)
        self.gamma = nn.Parameter(torch.ones(out_channels, in_channels, **fk))
        self.beta = nn.Parameter(torch.zeros(out_channels, in_channels, **fk))
        self.bias = nn.Parameter(torch.zeros(out_channels, **fk)) if bias else None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, freeze_weight: bool = True, freeze_bias: bool = True,
                  impl: str = "auto") -> "AdaFMConv2d":
        """Wrap a (pretrained) ``nn.Conv2d`` with identity gamma/beta: the output is unchanged at init."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv expects an nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1):
            raise ValueError(f"AdaFM supports groups=1 and dilation=1 convolutions, got groups={conv.groups}, "
                             f"dilation={tuple(conv.dilation)}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"AdaFM supports zero padding only, got padding_mode={conv.padding_mode!r}")
        if isinstance(conv.padding, str):
            if conv.padding == "valid":
                padding = (0, 0)
            elif tuple(conv.stride) == (1, 1) and all(k % 2 == 1 for k in conv.kernel_size):
                padding = (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2)
            else:
                raise ValueError(f"padding={conv.padding!r} needs stride 1 and odd kernels to be symmetric")
        else:
            padding = tuple(conv.padding)
        w = conv.weight
        m = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=tuple(conv.stride), padding=padding,
                bias=conv.bias is not None, freeze_weight=freeze_weight, impl=impl, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            m.weight.copy_(w)
            if conv.bias is not None:
                m.bias.copy_(conv.bias)
        if m.bias is not None:
            m.bias.requires_grad_(not freeze_bias)
        return m

    def modulated_weight(self) -> Tensor:
        """W' = gamma * W + beta (shape of the weight)."""
        return self.gamma[:, :, None, None] * self.weight + self.beta[:, :, None, None]

    @torch.no_grad()
    def fold(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` computing the same function with gamma/beta baked in."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                         padding=self.padding, bias=self.bias is not None, device=self.weight.device,
                         dtype=self.weight.dtype)
        conv.weight.copy_(self.modulated_weight())
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv

    def forward(self, x: Tensor) -> Tensor:
        return adafm_conv2d(x, self.weight, self.gamma, self.beta, self.bias, stride=self.stride,
                            padding=self.padding, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}, "
                f"weight_frozen={not self.weight.requires_grad}, impl={self.impl!r}")

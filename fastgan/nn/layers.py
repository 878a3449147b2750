"""Building blocks of the StyleGAN2-style networks, in plain torch plus fastgan's modulated conv.

Parameter and buffer names follow StyleGAN2-ADA's ``training/networks.py`` so that its checkpoints map onto
these modules name for name (``affine.weight``, ``noise_strength``, ``resample_filter``, ...), and the
arithmetic follows it too (equalised learning rate, lrelu gain sqrt(2), FIR [1, 3, 3, 1] resampling,
``conv_clamp``); tests check the resampling against a direct transcription of its definitions.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.modconv import modulated_conv2d
from ..train import rng

LRELU_GAIN = math.sqrt(2.0)


def setup_filter(taps: Sequence[float] = (1, 3, 3, 1), device=None) -> Tensor:
    """2-D separable FIR filter (outer product of ``taps``) normalised to sum 1, float32."""
    f = torch.as_tensor(taps, dtype=torch.float32, device=device)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def upfirdn2d(x: Tensor, f: Tensor, up: int = 1, down: int = 1, padding: Sequence[int] = (0, 0, 0, 0),
              gain: float = 1.0) -> Tensor:
    """Upsample by zero insertion, pad (negative values crop), convolve with the 2-D FIR ``f``, downsample.

    ``padding`` = (x0, x1, y0, y1). The filter is applied as a true convolution (flipped), scaled by ``gain``.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = padding
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    k = (f * gain).to(x.dtype).flip([0, 1])
    x = F.conv2d(x, k[None, None].expand(c, 1, *k.shape), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: Tensor, f: Tensor, up: int = 2) -> Tensor:
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def bias_act(x: Tensor, b: Optional[Tensor], act: str = "linear", gain: Optional[float] = None,
             clamp: Optional[float] = None) -> Tensor:
    """x + b (over dim 1), then the activation ('linear' or 'lrelu' with slope 0.2), times ``gain`` (default:
    sqrt(2) for lrelu, 1 for linear), clamped to [-clamp, clamp] when given."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([1, -1] + [1] * (x.dim() - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = LRELU_GAIN if gain is None else gain
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}; expected 'linear' or 'lrelu'")
    gain = 1.0 if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def act_slope(x: Tensor, b: Optional[Tensor], act: str = "linear", gain: Optional[float] = None,
              clamp: Optional[float] = None) -> Optional[Tensor]:
    """The elementwise derivative of :func:`bias_act` with respect to x (same arguments): the gain times the
    activation's slope at x + b, zero where the clamp saturates; None when it is the constant 1 (linear, gain 1,
    no clamp). Where the derivative is ambiguous it follows torch's autograd (lrelu: slope 1 only for x + b > 0;
    clamp: 1 on the closed interval)."""
    if act not in ("linear", "lrelu"):
        raise ValueError(f"unknown activation {act!r}; expected 'linear' or 'lrelu'")
    gain = (LRELU_GAIN if act == "lrelu" else 1.0) if gain is None else float(gain)
    has_clamp = clamp is not None and clamp >= 0
    if act == "linear" and gain == 1 and not has_clamp:
        return None
    z = x if b is None else x + b.to(x.dtype).reshape([1, -1] + [1] * (x.dim() - 2))
    if act == "lrelu":
        slope = torch.where(z > 0, gain, gain * 0.2).to(z.dtype)
        v = F.leaky_relu(z, 0.2)
    else:
        slope = torch.full_like(z, gain)
        v = z
    if has_clamp:
        v = v * gain if gain != 1 else v
        slope = slope * ((v >= -clamp) & (v <= clamp)).to(slope.dtype)
    return slope


def _tangent_input(x: Tensor, dx: Optional[Tensor], styles: Tensor, dstyles: Tensor) -> Tensor:
    """(V, B, C, H, W) tangent of the modulated input x * s: x * ds + dx * s (dx None means zero)."""
    a = x * dstyles[..., None, None]
    if dx is not None:
        a.addcmul_(dx, styles[:, :, None, None])
    return a


def _check_tangent_args(x: Tensor, dx: Optional[Tensor], w: Tensor, dw: Tensor, noise_mode: str) -> None:
    if x.dtype != torch.float32:
        raise ValueError(f"forward_tangents runs in float32 (the force_fp32 path), got x of dtype {x.dtype}")
    if dw.dim() != 3 or dw.shape[1:] != w.shape:
        raise ValueError(f"dw must have shape (V, {w.shape[0]}, {w.shape[1]}) (tangents of w), got {tuple(dw.shape)}")
    if dx is not None and dx.shape != (dw.shape[0],) + tuple(x.shape):
        raise ValueError(f"dx must have shape {(dw.shape[0],) + tuple(x.shape)} (tangents of x), got {tuple(dx.shape)}")
    if noise_mode not in ("const", "none"):
        raise ValueError(f"forward_tangents needs a deterministic layer: noise_mode 'const' or 'none', got "
                         f"{noise_mode!r}")


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Dense layer with an equalised learning rate (weight stored as N(0, 1/lr_multiplier^2))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def tangent(self, dx: Tensor) -> Tensor:
        """Forward-mode derivative of a linear layer along tangents ``dx`` (..., in_features): dx @ W_eff^T."""
        if self.activation != "linear":
            raise ValueError(f"tangent() needs a linear layer, this one has activation={self.activation!r}")
        return dx.matmul((self.weight.to(dx.dtype) * self.weight_gain).t())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Conv with an equalised learning rate, optional FIR down-sampling by 2, activation and clamp (D side)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, conv_clamp: Optional[float] = None):
        super().__init__()
        if down not in (1, 2):
            raise ValueError(f"down must be 1 or 2, got {down}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter())
        self.padding = kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        f = self.resample_filter
        if self.down == 1:
            x = F.conv2d(x, w, padding=self.padding)
        elif self.kernel_size == 1:  # blur-and-drop, then the 1x1 conv
            x = F.conv2d(upfirdn2d(x, f, down=2, padding=(1, 1, 1, 1)), w)
        else:  # blur, then a strided conv
            p = self.padding + 1
            x = F.conv2d(upfirdn2d(x, f, padding=(p, p, p, p)), w, stride=2)
        act_gain = (LRELU_GAIN if self.activation == "lrelu" else 1.0) * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=act_gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"activation={self.activation}, down={self.down}")


class MinibatchStdLayer(nn.Module):
    """Appends the per-group standard deviation of the features as extra channels.

    ``grouping="consecutive"`` (fastgan's default) forms groups from runs of G consecutive samples, so D's output
    does not depend on how a batch is split into rounds or processes as long as every split is a multiple of G.
    ``"strided"`` is StyleGAN2's (sample i in group i mod N/G); imported StyleGAN2-ADA discriminators use it, so
    their logits match the original exactly.
    """

    def __init__(self, group_size: Optional[int], num_channels: int = 1, grouping: str = "consecutive"):
        super().__init__()
        if grouping not in ("consecutive", "strided"):
            raise ValueError(f"grouping must be 'consecutive' or 'strided', got {grouping!r}")
        self.group_size, self.num_channels, self.grouping = group_size, num_channels, grouping

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size else n
        if n % g:
            raise ValueError(f"the minibatch-std group size {g} must divide the batch per step ({n}); "
                             f"choose a --batch-gpu that is a multiple of {g}")
        f = self.num_channels
        if self.grouping == "consecutive":
            y = x.float().reshape(n // g, g, f, c // f, h, w).transpose(0, 1)
        else:
            y = x.float().reshape(g, n // g, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # (N/G, F, c, H, W)
        y = y.mean(dim=[2, 3, 4]).reshape(1, n // g, f, 1, 1).expand(g, n // g, f, h, w)
        if self.grouping == "consecutive":
            y = y.transpose(0, 1)
        return torch.cat([x, y.reshape(n, f, h, w).to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}, grouping={self.grouping!r}"


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally up-sampling by 2), per-pixel noise, bias, lrelu, clamp.

    Stride-1 layers go through :func:`fastgan.ops.modulated_conv2d` (the fused kernels). The up-sampling layer
    modulates the activations, runs one shared-weight transposed convolution and the FIR blur, then applies the
    demodulation coefficients: the same function as StyleGAN2's, at a quarter of the FLOPs of blurring first.

    ``adafm=True`` (AdaFM transfer, Zhao et al. ICML'20) adds ``adafm_gamma`` and ``adafm_beta`` of shape
    (out_channels, in_channels), initialised to 1 and 0. The layer then convolves with
    W' = adafm_gamma * weight + adafm_beta (broadcast over the kernel taps) in place of ``weight``, followed by the
    usual per-sample modulation and demodulation. At the identity init W' equals ``weight`` bit for bit, so the
    layer computes exactly what the plain layer computes; :meth:`folded_weight` is the W' a plain layer needs to
    compute the same function (:func:`fastgan.transfer.fold`).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, conv_clamp: Optional[float] = None, impl: str = "auto",
                 layer_id: int = 0, adafm: bool = False):
        super().__init__()
        if up not in (1, 2):
            raise ValueError(f"up must be 1 or 2, got {up}")
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.up, self.use_noise, self.conv_clamp, self.impl, self.layer_id = up, use_noise, conv_clamp, impl, layer_id
        self.adafm = bool(adafm)
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter())
        fw = self.resample_filter.shape[-1]  # FIR padding after the stride-2 transposed conv (StyleGAN2's)
        p0 = self.padding + (fw + up - 1) // 2 - (kernel_size - 1)
        p1 = self.padding + (fw - up) // 2 - (kernel_size - up)
        self._up_pad = (p0, p1, p0, p1)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if self.adafm:
            self.adafm_gamma = nn.Parameter(torch.ones(out_channels, in_channels))
            self.adafm_beta = nn.Parameter(torch.zeros(out_channels, in_channels))

    def folded_weight(self) -> Tensor:
        """The convolution weight in use: W' = adafm_gamma * weight + adafm_beta with AdaFM, else ``weight``."""
        if not self.adafm:
            return self.weight
        return self.adafm_gamma[:, :, None, None] * self.weight + self.adafm_beta[:, :, None, None]

    def _up_conv(self, x: Tensor, weight: Tensor) -> Tensor:
        """The up-sampling layer's linear part on (already modulated) x: the stride-2 transposed convolution with
        ``weight`` (Cout, Cin, k, k), then the FIR blur."""
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        return upfirdn2d(x, self.resample_filter, padding=self._up_pad, gain=4)

    def _noise(self, x: Tensor, noise_mode: str, noise_keys: Optional[Tensor]) -> Optional[Tensor]:
        if not self.use_noise or noise_mode == "none":
            return None
        if noise_mode == "const":  # (1, 1, r, r): same-rank broadcasting keeps torch.func's batched adds cheap
            return (self.noise_const * self.noise_strength).to(x.dtype)[None, None]
        if noise_mode != "random":
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        r = self.resolution
        if noise_keys is not None:
            noise = rng.normal(noise_keys, (1, r, r), stream=1000 + self.layer_id)
        else:
            noise = torch.randn(x.shape[0], 1, r, r, device=x.device)
        return (noise * self.noise_strength).to(x.dtype)

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "random", noise_keys: Optional[Tensor] = None,
                gain: float = 1.0) -> Tensor:
        styles = self.affine(w)
        weight = self.folded_weight()
        if x.dtype == torch.float16:  # demodulation is scale-invariant: pre-scale to keep fp16 in range
            weight = weight * (1 / math.sqrt(weight[0].numel()) / weight.norm(float("inf"), dim=[1, 2, 3],
                                                                               keepdim=True))
            styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
        if self.up == 1:
            x = modulated_conv2d(x, weight.to(x.dtype), styles.to(x.dtype), demodulate=True,
                                 padding=self.padding, impl=self.impl)
        else:
            dt = torch.promote_types(x.dtype, torch.float32)
            dcoefs = (styles.to(dt).square() @ weight.to(dt).square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
            x = self._up_conv(x * styles.to(x.dtype)[:, :, None, None], weight.to(x.dtype))
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        noise = self._noise(x, noise_mode, noise_keys)
        if noise is not None:
            x = x + noise
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act="lrelu", gain=LRELU_GAIN * gain, clamp=clamp)

    @torch.no_grad()
    def forward_tangents(self, x: Tensor, dx: Optional[Tensor], w: Tensor, dw: Tensor, noise_mode: str = "const",
                         gain: float = 1.0) -> tuple[Tensor, Tensor]:
        """The output (as :meth:`forward` in float32) and its forward-mode derivatives along V tangents at once.

        x (B, Cin, h, w) float32 and its tangents dx (V, B, Cin, h, w) (None: zero), w (B, w_dim) and dw
        (V, B, w_dim). Returns y (B, Cout, H, W) and dy (V, B, Cout, H, W). With s the styles, d the demodulation
        coefficients and M the slope of bias_act at the pre-activation, dy = M * (u * d + out * dlog d) where u
        is the convolution of the tangent input x * ds + dx * s (one shared-weight convolution for all V·B
        tangents) and out the demodulated convolution: two tangent-sized passes before the convolution and two
        after it, where ``torch.func.jvp`` through :meth:`forward` runs about a dozen. Values only: the result
        is not differentiable."""
        _check_tangent_args(x, dx, w, dw, noise_mode)
        styles, dstyles = self.affine(w), self.affine.tangent(dw)
        weight = self.folded_weight()
        q = weight.square().sum(dim=[2, 3])  # (Cout, Cin)
        d = (styles.square() @ q.t() + 1e-8).rsqrt()  # (B, Cout)
        a = _tangent_input(x, dx, styles, dstyles).flatten(0, 1)
        if self.up == 1:
            out = modulated_conv2d(x, weight, styles, demodulate=True, padding=self.padding, impl=self.impl)
            u = F.conv2d(a, weight, padding=self.padding)
        else:
            out = self._up_conv(x * styles[:, :, None, None], weight) * d[:, :, None, None]
            u = self._up_conv(a, weight)
        u = u.unflatten(0, dw.shape[:2])
        dlogd = -d.square() * ((styles * dstyles) @ q.t())  # (V, B, Cout): d(log d) along each tangent
        noise = self._noise(out, noise_mode, None)
        pre = out if noise is None else out + noise
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        y = bias_act(pre, self.bias, act="lrelu", gain=LRELU_GAIN * gain, clamp=clamp)
        slope = act_slope(pre, self.bias, act="lrelu", gain=LRELU_GAIN * gain, clamp=clamp)
        u.mul_(slope * d[:, :, None, None]).addcmul_(slope * out, dlogd[..., None, None])
        return y, u

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, resolution={self.resolution}, up={self.up}, "
                f"use_noise={self.use_noise}" + (", adafm=True" if self.adafm else ""))


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation (through the fused op), bias, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: Optional[float] = None,
                 impl: str = "auto"):
        super().__init__()
        self.in_channels, self.out_channels, self.conv_clamp, self.impl = in_channels, out_channels, conv_clamp, impl
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight.to(x.dtype), styles.to(x.dtype), demodulate=False, padding=0,
                             impl=self.impl)
        return bias_act(x, self.bias, clamp=self.conv_clamp)

    @torch.no_grad()
    def forward_tangents(self, x: Tensor, dx: Optional[Tensor], w: Tensor, dw: Tensor) -> tuple[Tensor, Tensor]:
        """The output (float32) and its derivatives along V tangents, as
        :meth:`SynthesisLayer.forward_tangents`: one 1x1 convolution of x * ds + dx * s, masked where the clamp
        saturates."""
        _check_tangent_args(x, dx, w, dw, "none")
        styles = self.affine(w) * self.weight_gain
        dstyles = self.affine.tangent(dw) * self.weight_gain
        out = modulated_conv2d(x, self.weight, styles, demodulate=False, padding=0, impl=self.impl)
        y = bias_act(out, self.bias, clamp=self.conv_clamp)
        u = F.conv2d(_tangent_input(x, dx, styles, dstyles).flatten(0, 1), self.weight).unflatten(0, dw.shape[:2])
        slope = act_slope(out, self.bias, clamp=self.conv_clamp)
        if slope is not None:
            u.mul_(slope)
        return y, u

"""StyleGAN2-style generator (mapping network, modulated-conv synthesis, noise, toRGB skips) and residual
discriminator (minibatch-std, projection conditioning), built only from fastgan ops and torch.

Every network is fully described by a plain ``config`` dict (ints, floats, strings), so a checkpoint is that dict
plus a state_dict and loads with ``torch.load(weights_only=True)`` without this source tree:
``Generator(**cfg)``, ``Discriminator(**cfg)``, or :func:`build_network` for either.

Mixed precision follows StyleGAN2: the ``num_fp16_res`` highest resolutions run in float16 on CUDA (with
``conv_clamp``), everything else — and everything on CPU — in float32.

AdaFM transfer: ``Generator(adafm_resolutions=[32, 64, ...])`` gives the synthesis blocks at those resolutions
AdaFM layers (per-(out, in) ``adafm_gamma`` / ``adafm_beta`` on both convolutions, see
:class:`~fastgan.nn.layers.SynthesisLayer`). The key is part of ``G.config`` only when it is non-empty, so plain
generators keep their config; :func:`fastgan.transfer.fold` turns an AdaFM generator back into a plain one.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .layers import (Conv2dLayer, FullyConnectedLayer, MinibatchStdLayer, SynthesisLayer, ToRGBLayer,
                     normalize_2nd_moment, setup_filter, upsample2d)

__all__ = ["MappingNetwork", "SynthesisNetwork", "Generator", "Discriminator", "build_network",
           "channels_at", "check_resolution", "check_adafm_resolutions"]


def check_resolution(resolution: int, name: str = "resolution", minimum: int = 4) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise TypeError(f"{name} must be an int, got {type(resolution).__name__}")
    if resolution < minimum or resolution & (resolution - 1):
        raise ValueError(f"{name} must be a power of two >= {minimum}, got {resolution}")
    return resolution


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at resolution ``res``: min(channel_base // res, channel_max), at least 1."""
    return max(1, min(channel_base // res, channel_max))


def _fp16_resolution(img_resolution: int, num_fp16_res: int) -> int:
    return max(2 ** (int(np.log2(img_resolution)) + 1 - num_fp16_res), 8) if num_fp16_res > 0 else 1 << 30


def check_adafm_resolutions(resolutions: Sequence[int], block_resolutions: Sequence[int]) -> list[int]:
    """Sorted, de-duplicated AdaFM block resolutions; each must be one of the synthesis blocks'."""
    if isinstance(resolutions, (str, bytes)) or not hasattr(resolutions, "__iter__"):
        raise TypeError(f"adafm_resolutions must be a list of ints, got {resolutions!r}")
    out = set()
    for r in resolutions:
        if isinstance(r, bool) or not isinstance(r, int) or r not in block_resolutions:
            raise ValueError(f"adafm_resolutions: {r!r} is not a synthesis block resolution "
                             f"(the blocks are {list(block_resolutions)})")
        out.add(r)
    return sorted(out)


class MappingNetwork(nn.Module):
    """z (and one-hot/vector label c) -> w, with a tracked average w for truncation."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: Optional[int], num_layers: int = 8,
                 embed_features: Optional[int] = None, layer_features: Optional[int] = None,
                 lr_multiplier: float = 0.01, w_avg_beta: Optional[float] = 0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        embed_features = w_dim if embed_features is None else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        if c_dim == 0:
            embed_features = 0
        feats = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(feats[i], feats[i + 1], activation="lrelu",
                                                        lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Optional[Tensor], c: Optional[Tensor], truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> Tensor:
        parts = []
        if self.z_dim > 0:
            if z is None or z.dim() != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must have shape (N, {self.z_dim}), got "
                                 f"{None if z is None else tuple(z.shape)}")
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim > 0:
            if c is None or c.dim() != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"this network is conditional: c must have shape (N, {self.c_dim}), got "
                                 f"{None if c is None else tuple(c.shape)}")
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_emas and self.w_avg_beta is not None and self.num_ws is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if self.num_ws is None:
                raise ValueError("truncation needs a mapping network with num_ws")
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = x.clone()
            x[:, :cut] = self.w_avg.lerp(x[:, :cut], truncation_psi)
        return x


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (const | up conv0), conv1, toRGB added to the up-sampled image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, use_fp16: bool = False, conv_clamp: Optional[float] = None,
                 use_noise: bool = True, impl: str = "auto", first_layer_id: int = 0, adafm: bool = False):
        super().__init__()
        self.in_channels, self.resolution, self.is_last, self.use_fp16 = in_channels, resolution, is_last, use_fp16
        self.adafm = adafm
        self.register_buffer("resample_filter", setup_filter())
        self.num_conv = 0
        lid = first_layer_id
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, use_noise=use_noise,
                                        conv_clamp=conv_clamp, impl=impl, layer_id=lid, adafm=adafm)
            self.num_conv += 1
            lid += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, use_noise=use_noise,
                                    conv_clamp=conv_clamp, impl=impl, layer_id=lid, adafm=adafm)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp, impl=impl)
        self.num_torgb = 1

    def forward(self, x: Optional[Tensor], img: Optional[Tensor], ws: Tensor, noise_mode: str = "random",
                noise_keys: Optional[Tensor] = None, force_fp32: bool = False):
        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and ws.device.type == "cuda") else torch.float32
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x.to(dtype), next(w_iter), noise_mode=noise_mode, noise_keys=noise_keys)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode, noise_keys=noise_keys)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter)).float()
        img = y if img is None else img + y
        return x, img

    @torch.no_grad()
    def forward_tangents(self, x: Optional[Tensor], dx: Optional[Tensor], img: Optional[Tensor],
                         dimg: Optional[Tensor], ws: Tensor, dws: Tensor, noise_mode: str = "const"):
        """:meth:`forward` in float32 plus forward-mode derivatives along V tangents: ws (B, n, w_dim) and dws
        (V, B, n, w_dim); x / img and their tangents dx / dimg (V, B, ...) as :meth:`forward` returns them
        (tangents None: zero). Returns (x, dx, img, dimg)."""
        k = 0
        if self.in_channels == 0:
            x, dx = self.const.float().unsqueeze(0).repeat(ws.shape[0], 1, 1, 1), None
        else:
            x, dx = self.conv0.forward_tangents(x.float(), dx, ws[:, k], dws[:, :, k], noise_mode=noise_mode)
            k += 1
        x, dx = self.conv1.forward_tangents(x, dx, ws[:, k], dws[:, :, k], noise_mode=noise_mode)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
            if dimg is not None:
                dimg = upsample2d(dimg.flatten(0, 1), self.resample_filter).unflatten(0, dimg.shape[:2])
        y, dy = self.torgb.forward_tangents(x, dx, ws[:, k + 1], dws[:, :, k + 1])
        img = y if img is None else img + y
        dimg = dy if dimg is None else dimg.add_(dy)
        return x, dx, img, dimg


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 0, conv_clamp: Optional[float] = None,
                 use_noise: bool = True, impl: str = "auto", adafm_resolutions: Sequence[int] = ()):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.adafm_resolutions = check_adafm_resolutions(adafm_resolutions, self.block_resolutions)
        fp16_res = _fp16_resolution(img_resolution, num_fp16_res)
        self.num_ws = 0
        lid = 0
        for res in self.block_resolutions:
            cin = channels_at(res // 2, channel_base, channel_max) if res > 4 else 0
            cout = channels_at(res, channel_base, channel_max)
            block = SynthesisBlock(cin, cout, w_dim, res, img_channels, is_last=res == img_resolution,
                                   use_fp16=res >= fp16_res, conv_clamp=conv_clamp, use_noise=use_noise,
                                   impl=impl, first_layer_id=lid, adafm=res in self.adafm_resolutions)
            lid += block.num_conv
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: Tensor, noise_mode: str = "random", noise_keys: Optional[Tensor] = None,
                force_fp32: bool = False) -> Tensor:
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        ws = ws.float()
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode=noise_mode,
                           noise_keys=noise_keys, force_fp32=force_fp32)
            w_idx += block.num_conv
        return img

    @torch.no_grad()
    def forward_tangents(self, ws: Tensor, dws: Tensor, noise_mode: str = "const") -> tuple[Tensor, Tensor]:
        """The image (as ``forward(ws, noise_mode, force_fp32=True)``) and its forward-mode derivatives along V
        tangents of ws at once: ws (B, num_ws, w_dim), dws (V, B, num_ws, w_dim) -> img (B, C, R, R), dimg
        (V, B, C, R, R).

        The derivatives are written out per layer (:meth:`SynthesisLayer.forward_tangents`) rather than traced
        by ``torch.func.jvp``: every convolution runs once on all V·B tangents and the elementwise work around
        it is a few fused passes, about half the time of the traced transform on the CPU. MaGNET's engine
        (:func:`fastgan.sampling.jacobian_log_singular_values`, forward mode) uses it for fastgan generators.
        Deterministic noise only (``noise_mode`` ``"const"`` or ``"none"``); values only, not differentiable."""
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        if dws.dim() != 4 or dws.shape[1:] != ws.shape:
            raise ValueError(f"dws must have shape (V, {ws.shape[0]}, {self.num_ws}, {self.w_dim}) (V tangents of "
                             f"ws), got {tuple(dws.shape)}")
        ws, dws = ws.float(), dws.float()
        x = dx = img = dimg = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            n = block.num_conv + block.num_torgb
            x, dx, img, dimg = block.forward_tangents(x, dx, img, dimg, ws[:, w_idx:w_idx + n],
                                                      dws[:, :, w_idx:w_idx + n], noise_mode=noise_mode)
            w_idx += block.num_conv
        return img, dimg


class Generator(nn.Module):
    """``G(z, c) -> img`` in [-1, 1]-ish float32, (N, img_channels, R, R). ``G.config`` rebuilds it."""

    def __init__(self, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int = 256,
                 img_channels: int = 3, mapping_layers: int = 8, channel_base: int = 32768, channel_max: int = 512,
                 num_fp16_res: int = 0, conv_clamp: Optional[float] = None, use_noise: bool = True,
                 impl: str = "auto", adafm_resolutions: Optional[Sequence[int]] = None):
        super().__init__()
        check_resolution(img_resolution, "img_resolution")
        for k, v in dict(z_dim=z_dim, w_dim=w_dim, img_channels=img_channels, mapping_layers=mapping_layers,
                         channel_base=channel_base, channel_max=channel_max).items():
            if v < 1:
                raise ValueError(f"{k} must be positive, got {v}")
        if c_dim < 0 or num_fp16_res < 0:
            raise ValueError(f"c_dim and num_fp16_res must be >= 0, got {c_dim}, {num_fp16_res}")
        self.config = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                           img_channels=img_channels, mapping_layers=mapping_layers, channel_base=channel_base,
                           channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
                           use_noise=use_noise)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max,
                                          num_fp16_res, conv_clamp, use_noise, impl,
                                          adafm_resolutions=adafm_resolutions or ())
        if self.synthesis.adafm_resolutions:  # plain generators keep their config unchanged
            self.config["adafm_resolutions"] = list(self.synthesis.adafm_resolutions)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers)

    def forward(self, z: Tensor, c: Optional[Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, noise_mode: str = "random",
                noise_keys: Optional[Tensor] = None, update_emas: bool = False, force_fp32: bool = False) -> Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, noise_keys=noise_keys, force_fp32=force_fp32)

    def forward_tangents(self, z: Tensor, dz: Tensor, c: Optional[Tensor] = None, truncation_psi: float = 1.0,
                         truncation_cutoff: Optional[int] = None,
                         noise_mode: str = "const") -> tuple[Tensor, Tensor]:
        """The image (as ``G(z, c, truncation_psi, truncation_cutoff, noise_mode=..., force_fp32=True)``) and its
        forward-mode derivatives along V tangents of z at once: z (B, z_dim), dz (V, B, z_dim) -> img
        (B, C, R, R), dimg (V, B, C, R, R). The small mapping network goes through ``torch.func.jvp``, the
        synthesis through :meth:`SynthesisNetwork.forward_tangents`. Values only, not differentiable."""
        if z.dim() != 2 or dz.dim() != 3 or dz.shape[1:] != z.shape:
            raise ValueError(f"z must have shape (N, z_dim) and dz (V, N, z_dim), got {tuple(z.shape)} and "
                             f"{tuple(dz.shape)}")
        c = None if c is None else c.float()

        def mapping(t):
            return self.mapping(t, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

        with torch.no_grad():
            ws, dws = torch.func.vmap(lambda v: torch.func.jvp(mapping, (z.float(),), (v,)),
                                      out_dims=(None, 0))(dz.float())
        return self.synthesis.forward_tangents(ws, dws, noise_mode=noise_mode)


class DiscriminatorBlock(nn.Module):
    """Residual block: (fromRGB), conv0, conv1 (down 2) plus a 1x1 down-sampled skip, both scaled by sqrt(1/2)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 use_fp16: bool = False, conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels, self.use_fp16 = in_channels, use_fp16
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Optional[Tensor], img: Tensor, force_fp32: bool = False) -> Tensor:
        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and img.device.type == "cuda") else torch.float32
        if self.in_channels == 0:
            x = self.fromrgb(img.to(dtype))
        else:
            x = x.to(dtype)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 mbstd_group_size: int = 4, mbstd_num_channels: int = 1, conv_clamp: Optional[float] = None,
                 mbstd_grouping: str = "consecutive"):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = (MinibatchStdLayer(mbstd_group_size, mbstd_num_channels, mbstd_grouping)
                      if mbstd_num_channels > 0 else None)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: Tensor, cmap: Optional[Tensor]) -> Tensor:
        x = x.float()
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.out(self.fc(x.flatten(1)))
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """``D(img, c) -> logits`` (N, 1). Residual architecture, minibatch-std epilogue, projection on labels.

    ``mbstd_grouping``: see :class:`~fastgan.nn.layers.MinibatchStdLayer` ("consecutive" for fastgan runs,
    "strided" for StyleGAN2-ADA's discriminators).
    """

    def __init__(self, c_dim: int = 0, img_resolution: int = 256, img_channels: int = 3, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 0, conv_clamp: Optional[float] = None,
                 mbstd_group_size: int = 4, mbstd_num_channels: int = 1, mapping_layers: int = 8,
                 mbstd_grouping: str = "consecutive"):
        super().__init__()
        check_resolution(img_resolution, "img_resolution", minimum=8)
        self.config = dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                           channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
                           conv_clamp=conv_clamp, mbstd_group_size=mbstd_group_size,
                           mbstd_num_channels=mbstd_num_channels, mapping_layers=mapping_layers,
                           mbstd_grouping=mbstd_grouping)
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        fp16_res = _fp16_resolution(img_resolution, num_fp16_res)
        ch = lambda r: channels_at(r, channel_base, channel_max)  # noqa: E731
        cmap_dim = ch(4) if c_dim > 0 else 0
        for res in self.block_resolutions:
            cin = ch(res) if res < img_resolution else 0
            setattr(self, f"b{res}", DiscriminatorBlock(cin, ch(res), ch(res // 2), img_channels,
                                                        use_fp16=res >= fp16_res, conv_clamp=conv_clamp))
        if c_dim > 0:
            self.mapping = MappingNetwork(0, c_dim, cmap_dim, num_ws=None, num_layers=mapping_layers,
                                          w_avg_beta=None)
        self.b4 = DiscriminatorEpilogue(ch(4), cmap_dim, 4, img_channels, mbstd_group_size, mbstd_num_channels,
                                        conv_clamp=conv_clamp, mbstd_grouping=mbstd_grouping)

    def forward(self, img: Tensor, c: Optional[Tensor] = None, force_fp32: bool = False) -> Tensor:
        want = (self.img_channels, self.img_resolution, self.img_resolution)
        if img.dim() != 4 or tuple(img.shape[1:]) != want:
            raise ValueError(f"img must have shape (N, {', '.join(map(str, want))}), got {tuple(img.shape)}")
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        cmap = None
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"this discriminator is conditional: pass c of shape (N, {self.c_dim})")
            cmap = self.mapping(None, c)
        return self.b4(x, cmap)


def build_network(kind: str, config: dict) -> nn.Module:
    """``Generator`` or ``Discriminator`` from the plain config stored in a checkpoint."""
    cls = {"G": Generator, "G_ema": Generator, "D": Discriminator}.get(kind)
    if cls is None:
        raise ValueError(f"unknown network kind {kind!r}; expected 'G', 'G_ema' or 'D'")
    try:
        return cls(**config)
    except TypeError as exc:
        raise ValueError(f"the {kind} config does not match this fastgan version's {cls.__name__}: {exc}") from None

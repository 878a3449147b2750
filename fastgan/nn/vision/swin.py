"""Swin-T (patch 4, window 7, 224 x 224) for the vision-aided discriminator, written here without timm.

The layout and names follow the Swin Transformer reference code that MoBY also uses (and that timm used when
vision-aided-gan was written): ``patch_embed.proj``, ``patch_embed.norm``, ``layers.I.blocks.J.{norm1, attn.qkv,
attn.proj, attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}``, ``layers.I.downsample.{norm,
reduction}`` at the *end* of stages 0-2, and ``norm``. Depths (2, 2, 6, 2), heads (3, 6, 12, 24), embedding 96.
Odd blocks use the cyclic shift of 3 with the -100 attention mask, except in the last stage, where the 7 x 7
resolution equals the window and no shift is done.

``relative_position_index`` and ``attn_mask`` are deterministic functions of the geometry; they are computed
here (not persistent buffers). When a file carries them, :func:`swin_state_from_file` checks that they equal
ours (a different value means a different architecture) and drops them.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .vit import Mlp

Schema = Dict[str, Tuple[int, ...]]

EMBED = 96
DEPTHS = (2, 2, 6, 2)
HEADS = (3, 6, 12, 24)
WINDOW = 7
PATCH = 4
INPUT_SIZE = 224
MASK_VALUE = -100.0
OUT_DIM = EMBED * 8


def relative_position_index(window: int) -> Tensor:
    """(w*w, w*w) int64 index into the ((2w-1)^2, heads) bias table."""
    r = torch.arange(window, device="cpu")  # explicit: modules may be built under a meta-device context
    coords = torch.stack(torch.meshgrid(r, r, indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def _windows(x: Tensor, w: int) -> Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w*w, C)."""
    b, h, wd, c = x.shape
    return x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def _unwindows(x: Tensor, w: int, b: int, h: int, wd: int) -> Tensor:
    c = x.shape[-1]
    return x.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, wd, c)


def shifted_window_mask(size: int, window: int, shift: int) -> Tensor:
    """(num_windows, w*w, w*w) additive mask: 0 within a region of the shifted image, -100 across regions."""
    img = torch.zeros(1, size, size, 1, device="cpu")
    spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for hs in spans:
        for ws in spans:
            img[:, hs, ws, :] = region
            region += 1
    mw = _windows(img, window).squeeze(-1)
    diff = mw[:, None, :] - mw[:, :, None]
    return torch.where(diff != 0, torch.full_like(diff, MASK_VALUE), torch.zeros_like(diff))


class _WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        bw, length, dim = x.shape
        qkv = self.qkv(x).view(bw, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)                                            # (BW, heads, L, L)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(length, length, self.heads).permute(2, 0, 1).to(attn.dtype)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, length, length) + mask[None, :, None].to(attn.dtype)
            attn = attn.view(bw, self.heads, length, length)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(bw, length, dim))


class _SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, resolution: int, shift: int):
        super().__init__()
        self.window = min(WINDOW, resolution)
        self.shift = 0 if resolution <= WINDOW else shift
        self.resolution = resolution
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _WindowAttention(dim, heads, self.window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        mask = shifted_window_mask(resolution, self.window, self.shift) if self.shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, length, c = x.shape
        r = self.resolution
        h = self.norm1(x).view(b, r, r, c)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        h = self.attn(_windows(h, self.window), self.attn_mask)
        h = _unwindows(h, self.window, b, r, r)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + h.reshape(b, length, c)
        return x + self.mlp(self.norm2(x))


class _PatchMerging(nn.Module):
    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        r = self.resolution
        x = x.view(b, r, r, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class _Stage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, resolution: int, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(_SwinBlock(dim, heads, resolution, 0 if j % 2 == 0 else WINDOW // 2)
                                    for j in range(depth))
        self.downsample = _PatchMerging(dim, resolution) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class _SwinPatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, EMBED, PATCH, stride=PATCH)
        self.norm = nn.LayerNorm(EMBED)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinT(nn.Module):
    """Swin-T; ``levels(x, "conv")`` = final normed tokens as (N, 768, 7, 7); ``pooled`` = their mean (768)."""

    def __init__(self):
        super().__init__()
        self.patch_embed = _SwinPatchEmbed()
        res = INPUT_SIZE // PATCH
        self.layers = nn.ModuleList(
            _Stage(EMBED * 2 ** i, DEPTHS[i], HEADS[i], res // 2 ** i, downsample=i < len(DEPTHS) - 1)
            for i in range(len(DEPTHS)))
        self.norm = nn.LayerNorm(OUT_DIM)

    def tokens(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"SwinT expects {INPUT_SIZE}x{INPUT_SIZE} inputs, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)                                                      # (N, 49, 768)

    def levels(self, x: Tensor, output: str) -> List[Tensor]:
        t = self.tokens(x)
        if output == "conv":
            side = INPUT_SIZE // PATCH // 2 ** (len(DEPTHS) - 1)
            return [t.transpose(1, 2).reshape(t.shape[0], OUT_DIM, side, side)]
        return [t.mean(dim=1)]

    def pooled(self, x: Tensor) -> Tensor:
        return self.tokens(x).mean(dim=1)


def swin_schema() -> Schema:
    """Name -> shape of every parameter of a Swin-T state dict (reference / MoBY naming)."""
    s: Schema = {"patch_embed.proj.weight": (EMBED, 3, PATCH, PATCH), "patch_embed.proj.bias": (EMBED,),
                 "patch_embed.norm.weight": (EMBED,), "patch_embed.norm.bias": (EMBED,),
                 "norm.weight": (OUT_DIM,), "norm.bias": (OUT_DIM,)}
    for i, (depth, heads) in enumerate(zip(DEPTHS, HEADS)):
        c = EMBED * 2 ** i
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            s.update({p + "norm1.weight": (c,), p + "norm1.bias": (c,),
                      p + "attn.relative_position_bias_table": ((2 * WINDOW - 1) ** 2, heads),
                      p + "attn.qkv.weight": (3 * c, c), p + "attn.qkv.bias": (3 * c,),
                      p + "attn.proj.weight": (c, c), p + "attn.proj.bias": (c,),
                      p + "norm2.weight": (c,), p + "norm2.bias": (c,),
                      p + "mlp.fc1.weight": (4 * c, c), p + "mlp.fc1.bias": (4 * c,),
                      p + "mlp.fc2.weight": (c, 4 * c), p + "mlp.fc2.bias": (c,)})
        if i < len(DEPTHS) - 1:
            p = f"layers.{i}.downsample."
            s.update({p + "norm.weight": (4 * c,), p + "norm.bias": (4 * c,), p + "reduction.weight": (2 * c, 4 * c)})
    return s


def swin_state_from_file(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The Swin-T tensors of a file: unwraps ``{"model": ...}``; a MoBY checkpoint keeps its ``encoder.*``
    (online encoder) entries with the prefix removed and ignores ``encoder_k.*``, projectors, predictor and
    queues; classification-head keys (``head.*``) are ignored. Stored ``relative_position_index`` /
    ``attn_mask`` buffers are checked against the geometry and dropped."""
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    out = {}
    for k, v in state.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if k.startswith("head."):
            continue
        if k.endswith("relative_position_index") or k.endswith("attn_mask"):
            expected = swin_buffer(k)
            if expected is None or tuple(v.shape) != tuple(expected.shape) or not torch.equal(
                    v.to(expected.dtype), expected):
                raise ValueError(f"swin-t: the file's buffer {k} differs from Swin-T's window-7 geometry: this is "
                                 f"not a Swin-T patch4 window7 224 checkpoint")
            continue
        out[k] = v
    return out


def swin_buffer(key: str) -> Optional[Tensor]:
    """The deterministic Swin-T buffer stored under state-dict name ``key`` (None for a name that is not one)."""
    parts = key.split(".")
    try:
        i, j = int(parts[1]), int(parts[3])
    except (IndexError, ValueError):
        return None
    if parts[0] != "layers" or parts[2] != "blocks" or i >= len(DEPTHS) or j >= DEPTHS[i]:
        return None
    res = INPUT_SIZE // PATCH // 2 ** i
    window = min(WINDOW, res)
    if key.endswith("relative_position_index"):
        return relative_position_index(window)
    shift = 0 if (res <= WINDOW or j % 2 == 0) else WINDOW // 2
    return shifted_window_mask(res, window, shift) if shift else None

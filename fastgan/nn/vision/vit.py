"""Vision transformers for the vision-aided discriminator: the OpenAI CLIP ViT-B/32 image tower and DINO ViT-B/16.

Both are written here (no torchvision, timm or clip package) with module and parameter names equal to those of
the released state dicts, so a released file loads with ``load_state_dict(strict=True)`` once its keys are
normalised (:func:`clip_state_from_file`, :func:`dino_state_from_file`):

- CLIP: the ``visual.*`` part of OpenAI's ``ViT-B-32.pt`` (``visual.conv1.weight``, ``visual.class_embedding``,
  ``visual.transformer.resblocks.N.attn.in_proj_weight``, ..., ``visual.proj``). QuickGELU MLPs, LayerNorm eps
  1e-5, no bias in the patch convolution, pre-norm blocks.
- DINO: ``dino_vitbase16_pretrain.pth`` (``cls_token``, ``pos_embed``, ``patch_embed.proj.weight``,
  ``blocks.N.attn.qkv.weight``, ..., ``norm.weight``). Exact GELU, LayerNorm eps 1e-6, biased qkv.

Every network takes preprocessed (N, 3, 224, 224) float images and returns the features the vision-aided
discriminator uses (``levels(x, output)``) or the pooled vector of the linear probe (``pooled(x)``).
Attention is ``F.scaled_dot_product_attention`` (a fused kernel where PyTorch has one).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Schema = Dict[str, Tuple[int, ...]]

WIDTH = 768
DEPTH = 12
HEADS = 12
MLP = 3072
CLIP_EMBED = 512
CLIP_PATCH = 32
DINO_PATCH = 16
INPUT_SIZE = 224
CLIP_LEVEL_BLOCKS = (4, 8, 12)   # tokens after these blocks (1-based): vision-aided's slices [0:4], [4:8], [8:12]
DINO_LEVEL_BLOCKS = (5, 9, 12)   # get_intermediate_layers(n=8) indices [0, 4, -1]


def _attention(x: Tensor, w_qkv: Tensor, b_qkv: Tensor, proj: nn.Linear, heads: int) -> Tensor:
    """Multi-head self-attention of (N, L, D) tokens with a packed (3D, D) input projection."""
    n, length, dim = x.shape
    qkv = F.linear(x, w_qkv, b_qkv).view(n, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, L, head_dim)
    return proj(out.transpose(1, 2).reshape(n, length, dim))


def _tokens_to_map(tokens: Tensor) -> Tensor:
    """(N, S*S, D) patch tokens -> (N, D, S, S)."""
    n, length, dim = tokens.shape
    side = int(round(length ** 0.5))
    return tokens.transpose(1, 2).reshape(n, dim, side, side)


# ------------------------------------------------------------------------------------------------------------
# CLIP ViT-B/32


class QuickGELU(nn.Module):
    """CLIP's activation x * sigmoid(1.702 x)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class _CLIPAttention(nn.Module):
    """Parameter layout of ``nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``, ``out_proj``)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return _attention(x, self.in_proj_weight, self.in_proj_bias, self.out_proj, self.heads)


class _CLIPBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.attn = _CLIPAttention(dim, heads)
        self.ln_1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(dim, mlp)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(mlp, dim))]))
        self.ln_2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _CLIPTransformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp: int):
        super().__init__()
        self.resblocks = nn.ModuleList(_CLIPBlock(dim, heads, mlp) for _ in range(depth))


class CLIPVisionTower(nn.Module):
    """OpenAI CLIP ViT-B/32 image encoder (``VisionTransformer`` of ``clip/model.py``), batch-first."""

    def __init__(self):
        super().__init__()
        grid = INPUT_SIZE // CLIP_PATCH
        self.conv1 = nn.Conv2d(3, WIDTH, CLIP_PATCH, stride=CLIP_PATCH, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(WIDTH))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, WIDTH))
        self.ln_pre = nn.LayerNorm(WIDTH)
        self.transformer = _CLIPTransformer(WIDTH, DEPTH, HEADS, MLP)
        self.ln_post = nn.LayerNorm(WIDTH)
        self.proj = nn.Parameter(torch.empty(WIDTH, CLIP_EMBED))

    def tokens(self, x: Tensor, keep: Tuple[int, ...]) -> List[Tensor]:
        """Token sequences (N, 50, 768) after the (1-based) blocks in ``keep``."""
        x = self.conv1(x).flatten(2).transpose(1, 2)                       # (N, 49, 768)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        out = []
        for i, block in enumerate(self.transformer.resblocks, start=1):
            x = block(x)
            if i in keep:
                out.append(x)
            if i >= max(keep):
                break
        return out

    def embed(self, last: Tensor) -> Tensor:
        """The 512-d CLIP image embedding ln_post(CLS) @ proj from the last block's tokens."""
        return self.ln_post(last[:, 0]) @ self.proj


class CLIPViTB32(nn.Module):
    """Holds the tower as ``visual`` so the parameter names are those of OpenAI's file (``visual.conv1.weight``)."""

    def __init__(self):
        super().__init__()
        self.visual = CLIPVisionTower()

    def levels(self, x: Tensor, output: str) -> List[Tensor]:
        if output == "multilevel":
            t4, t8, t12 = self.visual.tokens(x, CLIP_LEVEL_BLOCKS)
            return [_tokens_to_map(t4[:, 1:]), _tokens_to_map(t8[:, 1:]), self.visual.embed(t12)]
        return [self.pooled(x)]

    def pooled(self, x: Tensor) -> Tensor:
        return self.visual.embed(self.visual.tokens(x, (DEPTH,))[0])


def clip_schema() -> Schema:
    """Name -> shape of every tensor of the ``visual.*`` part of OpenAI's ViT-B-32 state dict."""
    grid = INPUT_SIZE // CLIP_PATCH
    s: Schema = {"visual.class_embedding": (WIDTH,), "visual.positional_embedding": (grid * grid + 1, WIDTH),
                 "visual.proj": (WIDTH, CLIP_EMBED), "visual.conv1.weight": (WIDTH, 3, CLIP_PATCH, CLIP_PATCH),
                 "visual.ln_pre.weight": (WIDTH,), "visual.ln_pre.bias": (WIDTH,),
                 "visual.ln_post.weight": (WIDTH,), "visual.ln_post.bias": (WIDTH,)}
    for i in range(DEPTH):
        p = f"visual.transformer.resblocks.{i}."
        s.update({p + "attn.in_proj_weight": (3 * WIDTH, WIDTH), p + "attn.in_proj_bias": (3 * WIDTH,),
                  p + "attn.out_proj.weight": (WIDTH, WIDTH), p + "attn.out_proj.bias": (WIDTH,),
                  p + "ln_1.weight": (WIDTH,), p + "ln_1.bias": (WIDTH,),
                  p + "mlp.c_fc.weight": (MLP, WIDTH), p + "mlp.c_fc.bias": (MLP,),
                  p + "mlp.c_proj.weight": (WIDTH, MLP), p + "mlp.c_proj.bias": (WIDTH,),
                  p + "ln_2.weight": (WIDTH,), p + "ln_2.bias": (WIDTH,)})
    return s


def clip_state_from_file(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The image-tower tensors of a CLIP state dict: keys ``visual.*`` are kept, the text tower
    (``transformer.*``, ``token_embedding.weight``, ``ln_final.*``, ``text_projection``, ``logit_scale``,
    ``positional_embedding``) and the scalars ``input_resolution`` / ``context_length`` / ``vocab_size`` are
    ignored. Also accepts open_clip files of the OpenAI weights, which use the same ``visual.*`` names."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    out = {}
    for k, v in state.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if k.startswith("visual."):
            out[k] = v
    return out


# ------------------------------------------------------------------------------------------------------------
# DINO ViT-B/16


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _DinoAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return _attention(x, self.qkv.weight, self.qkv.bias, self.proj, self.heads)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (DINO and Swin)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _DinoBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _DinoAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DinoViTB16(nn.Module):
    """DINO ViT-B/16 (``vision_transformer.py`` of facebookresearch/dino, ``num_classes=0``) at 224 x 224."""

    def __init__(self):
        super().__init__()
        grid = INPUT_SIZE // DINO_PATCH
        self.cls_token = nn.Parameter(torch.empty(1, 1, WIDTH))
        self.pos_embed = nn.Parameter(torch.empty(1, grid * grid + 1, WIDTH))
        self.patch_embed = _PatchEmbed(DINO_PATCH, WIDTH)
        self.blocks = nn.ModuleList(_DinoBlock(WIDTH, HEADS, MLP) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH, eps=1e-6)

    def normed_outputs(self, x: Tensor, keep: Tuple[int, ...]) -> List[Tensor]:
        """``norm`` of the tokens after the (1-based) blocks in ``keep`` (DINO's ``get_intermediate_layers``)."""
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"DinoViTB16 expects {INPUT_SIZE}x{INPUT_SIZE} inputs, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed.to(x.dtype)
        out = []
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i in keep:
                out.append(self.norm(x))
            if i >= max(keep):
                break
        return out

    def levels(self, x: Tensor, output: str) -> List[Tensor]:
        if output == "multilevel":
            a, b, c = self.normed_outputs(x, DINO_LEVEL_BLOCKS)
            return [_tokens_to_map(a[:, 1:]), _tokens_to_map(b[:, 1:]), c[:, 0]]
        return [self.pooled(x)]

    def pooled(self, x: Tensor) -> Tensor:
        return self.normed_outputs(x, (DEPTH,))[0][:, 0]


def dino_schema() -> Schema:
    """Name -> shape of every tensor of ``dino_vitbase16_pretrain.pth``."""
    grid = INPUT_SIZE // DINO_PATCH
    s: Schema = {"cls_token": (1, 1, WIDTH), "pos_embed": (1, grid * grid + 1, WIDTH),
                 "patch_embed.proj.weight": (WIDTH, 3, DINO_PATCH, DINO_PATCH), "patch_embed.proj.bias": (WIDTH,),
                 "norm.weight": (WIDTH,), "norm.bias": (WIDTH,)}
    for i in range(DEPTH):
        p = f"blocks.{i}."
        s.update({p + "norm1.weight": (WIDTH,), p + "norm1.bias": (WIDTH,),
                  p + "attn.qkv.weight": (3 * WIDTH, WIDTH), p + "attn.qkv.bias": (3 * WIDTH,),
                  p + "attn.proj.weight": (WIDTH, WIDTH), p + "attn.proj.bias": (WIDTH,),
                  p + "norm2.weight": (WIDTH,), p + "norm2.bias": (WIDTH,),
                  p + "mlp.fc1.weight": (MLP, WIDTH), p + "mlp.fc1.bias": (MLP,),
                  p + "mlp.fc2.weight": (WIDTH, MLP), p + "mlp.fc2.bias": (WIDTH,)})
    return s


def dino_state_from_file(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The backbone tensors of a DINO file: the backbone-only release as is; a full training checkpoint
    (``teacher`` / ``student`` entries) uses its ``teacher`` with the ``module.`` and ``backbone.`` prefixes
    removed, as DINO's own ``load_pretrained_weights`` does. Projection-head keys (``head.*``) are ignored."""
    if "teacher" in state and isinstance(state["teacher"], Mapping):
        state = state["teacher"]
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if not k.startswith("head."):
            out[k] = v
    return out

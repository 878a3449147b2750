"""AdaFM on the StyleGAN2-style generator: convert a plain generator, fold it back, and name its parts.

AdaFM (Zhao, Cong, Carin, ICML'20) keeps a pretrained convolution weight W frozen and learns a per-(out, in)
scale and shift, W' = gamma * W + beta, broadcast over the kernel taps. fastgan's synthesis layers are modulated
convolutions, so AdaFM acts on the shared weight before the per-sample modulation and demodulation (see
:class:`fastgan.nn.layers.SynthesisLayer` with ``adafm=True``). A generator built with
``Generator(adafm_resolutions=[...])`` has AdaFM layers in the synthesis blocks at those resolutions; the
resolutions are part of its config, so snapshots rebuild it (``fastgan.nn.load_network``, ``fastgan generate``,
``fastgan metrics``).

- :func:`to_adafm` wraps a plain generator's blocks with identity gamma/beta: the result computes exactly the
  same images (bit for bit).
- :func:`fold` bakes gamma/beta into plain weights (W := gamma * W + beta, computed exactly as the AdaFM layer
  computes it) and returns a plain :class:`~fastgan.nn.Generator` with identical outputs; :func:`fold_snapshot`
  does this for a whole snapshot file.
- :func:`adafm_resolutions_for` is the recipe's split: blocks above the front resolution are transferred (AdaFM),
  blocks at or below it form the trainable front together with the mapping network.
"""
from __future__ import annotations

import os
from typing import Sequence, Union

import torch
from torch import nn

from ..nn.networks import Generator

ADAFM_PARAMS = ("adafm_gamma", "adafm_beta")

__all__ = ["ADAFM_PARAMS", "is_adafm_name", "adafm_resolutions_for", "to_adafm", "fold", "fold_record",
           "fold_snapshot", "count_adafm"]


def is_adafm_name(name: str) -> bool:
    """True for the state-dict / parameter names of AdaFM gamma and beta tensors."""
    return name.rsplit(".", 1)[-1] in ADAFM_PARAMS


def adafm_resolutions_for(img_resolution: int, front_res: int) -> list[int]:
    """The synthesis block resolutions that get AdaFM: every block above ``front_res`` (the trainable front).

    Raises ``ValueError`` naming ``--adafm-front-res`` when ``front_res`` is not a block resolution below the
    image resolution (there would be no transferred block to modulate).
    """
    if isinstance(front_res, bool) or not isinstance(front_res, int) or front_res < 4 or front_res & (front_res - 1):
        raise ValueError(f"--adafm-front-res must be a power of two >= 4 (a synthesis block resolution), "
                         f"got {front_res!r}")
    if front_res >= img_resolution:
        raise ValueError(f"--adafm-front-res {front_res} must be below the image resolution ({img_resolution} px): "
                         "AdaFM modulates the transferred blocks above the front, and there would be none; "
                         f"use a front resolution <= {img_resolution // 2}")
    out, r = [], front_res * 2
    while r <= img_resolution:
        out.append(r)
        r *= 2
    return out


def _check_generator(G: nn.Module, what: str) -> None:
    if not isinstance(G, Generator):
        raise TypeError(f"{what} expects a fastgan.nn.Generator, got {type(G).__name__}")


def to_adafm(G: Generator, resolutions: Sequence[int]) -> Generator:
    """A copy of ``G`` whose blocks at ``resolutions`` are AdaFM blocks with identity gamma = 1, beta = 0.

    The copy computes exactly the same images as ``G`` (same weights, buffers and noise constants). ``G`` may
    already be an AdaFM generator: it is folded first, so the new gamma/beta start from the identity on top of
    the current effective weights. The copy is on ``G``'s device, in ``G``'s train/eval mode.
    """
    _check_generator(G, "to_adafm")
    plain = fold(G) if G.synthesis.adafm_resolutions else G
    cfg = {k: v for k, v in plain.config.items() if k != "adafm_resolutions"}
    out = Generator(**cfg, adafm_resolutions=list(resolutions))
    ref = next(plain.parameters())
    out.to(device=ref.device)
    missing, unexpected = out.load_state_dict(plain.state_dict(), strict=False)
    if unexpected or any(not is_adafm_name(k) for k in missing):
        raise RuntimeError(f"to_adafm: state mismatch (missing {missing[:4]}, unexpected {unexpected[:4]})")
    return out.train(G.training)


@torch.no_grad()
def fold(G: Generator) -> Generator:
    """A plain ``Generator`` (no AdaFM) computing exactly the same images: W := gamma * W + beta in every AdaFM
    layer. A plain ``G`` is returned as a copy. Buffers (w_avg, noise constants) are copied unchanged."""
    _check_generator(G, "fold")
    cfg = {k: v for k, v in G.config.items() if k != "adafm_resolutions"}
    out = Generator(**cfg)
    ref = next(G.parameters())
    out.to(device=ref.device)
    sd = {k: v for k, v in G.state_dict().items() if not is_adafm_name(k)}
    for name, mod in G.named_modules():
        if getattr(mod, "adafm", False) and hasattr(mod, "folded_weight"):
            sd[f"{name}.weight"] = mod.folded_weight().detach().clone()
    out.load_state_dict(sd, strict=True)
    return out.train(G.training)


def fold_record(record: dict) -> dict:
    """Fold a snapshot's ``{"config", "state_dict"}`` generator record (a plain record is returned unchanged)."""
    cfg = dict(record["config"])
    if not cfg.get("adafm_resolutions"):
        return record
    G = Generator(**cfg)
    G.load_state_dict(record["state_dict"], strict=True)
    plain = fold(G)
    return {"config": dict(plain.config),
            "state_dict": {k: v.detach().cpu().clone() for k, v in plain.state_dict().items()}}


def fold_snapshot(src: Union[str, os.PathLike], dst: Union[str, os.PathLike], *,
                  overwrite: bool = False) -> dict:
    """Write a copy of snapshot ``src`` with its AdaFM generators (G, G_ema) folded into plain ones.

    The discriminator and every other entry are copied unchanged; ``extra["folded_from"]`` names ``src``. The file is
    written atomically; an existing ``dst`` is refused unless ``overwrite``. Returns the new snapshot dict.
    """
    import pathlib

    from .._io import atomic_path
    from ..nn.checkpoint import load_snapshot

    dst = pathlib.Path(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{str(dst)!r} exists; pass overwrite=True to replace it")
    blob = load_snapshot(src)
    nets = dict(blob["networks"])
    for k in ("G", "G_ema"):
        if k in nets:
            nets[k] = fold_record(nets[k])
    out = dict(blob, networks=nets, extra=dict(blob.get("extra") or {}, folded_from=str(src)))
    with atomic_path(dst) as tmp:
        torch.save(out, tmp)
    return out


def count_adafm(G: nn.Module) -> int:
    """Number of AdaFM gamma+beta scalars in ``G`` (0 for a plain generator)."""
    return sum(p.numel() for n, p in G.named_parameters() if is_adafm_name(n))

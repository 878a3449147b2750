"""Network snapshots: tensors plus plain configs, readable with ``torch.load(weights_only=True)`` anywhere.

A snapshot (``network-snapshot-<kimg>.pt``) is a dict::

    {"format": "fastgan-snapshot", "version": 1, "fastgan_version": "...",
     "networks": {"G": {"config": {...}, "state_dict": {...}}, "G_ema": {...}, "D": {...}},
     "training_set": {...} | None, "kimg": float, "extra": {...}}

Only str/int/float/bool/None/list/dict and tensors appear, so loading needs neither this source tree nor
pickled classes. :func:`load_network` rebuilds one network from a snapshot, or from a StyleGAN2-ADA
``network-snapshot-*.pkl`` through :mod:`fastgan.nn.legacy`.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Optional, Union

import torch
from torch import nn

from .._io import atomic_path
from .networks import build_network

FORMAT = "fastgan-snapshot"
VERSION = 1
KINDS = ("G", "G_ema", "D")

PathLike = Union[str, os.PathLike]


def network_record(module: nn.Module) -> dict:
    """``{"config", "state_dict"}`` of a fastgan network, tensors detached and moved to the CPU."""
    config = getattr(module, "config", None)
    if not isinstance(config, dict):
        raise TypeError(f"{type(module).__name__} has no plain `config` dict; only fastgan networks can be saved")
    return {"config": dict(config),
            "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}}


def save_snapshot(path: PathLike, networks: dict[str, nn.Module], *, training_set: Optional[dict] = None,
                  kimg: float = 0.0, extra: Optional[dict] = None) -> pathlib.Path:
    """Write a snapshot atomically (temporary name, fsync, rename): readers never see a partial file."""
    import fastgan

    unknown = set(networks) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown network names {sorted(unknown)}; expected a subset of {KINDS}")
    blob = {"format": FORMAT, "version": VERSION, "fastgan_version": fastgan.__version__,
            "networks": {k: network_record(m) for k, m in networks.items()},
            "training_set": training_set, "kimg": float(kimg), "extra": extra or {}}
    path = pathlib.Path(path)
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def load_snapshot(path: PathLike, map_location: Any = "cpu", networks: Optional[tuple] = None) -> dict:
    """The validated snapshot dict (see the module docstring); ``.pkl`` files go through the StyleGAN2-ADA importer
    (``networks`` limits which of G, G_ema, D it imports, e.g. when the pickle's D is an unsupported kind)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"network snapshot {str(path)!r} does not exist")
    if path.suffix == ".pkl":
        from .legacy import load_stylegan2_pkl

        return load_stylegan2_pkl(path, networks=networks)
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{str(path)!r} is not a readable fastgan snapshot ({type(exc).__name__}: {exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a fastgan snapshot (no format={FORMAT!r} entry); training states "
                         "(training-state-*.pt) are read by `fastgan train --resume`")
    if blob.get("version") != VERSION:
        raise ValueError(f"{str(path)!r} has snapshot format version {blob.get('version')}; this fastgan reads "
                         f"version {VERSION}")
    return blob


def load_network(path: PathLike, which: str = "G_ema", device: Any = "cpu", *, eval_mode: bool = True) -> nn.Module:
    """Rebuild network ``which`` (``"G_ema"``, ``"G"`` or ``"D"``) from a snapshot or StyleGAN2-ADA pickle."""
    blob = load_snapshot(path, networks=(which,))
    nets = blob["networks"]
    if which not in nets:
        raise ValueError(f"{str(path)!r} holds {sorted(nets)}, not {which!r}")
    rec = nets[which]
    net = build_network(which, rec["config"])
    missing, unexpected = net.load_state_dict(rec["state_dict"], strict=False)
    if missing or unexpected:
        raise ValueError(f"{which} in {str(path)!r} does not match its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    net.requires_grad_(False)
    return net.train(not eval_mode).to(device)

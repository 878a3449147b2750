"""The transfer recipes end to end: load a source snapshot into the networks of a new run, and the Python
entry point behind ``fastgan transfer``.

:func:`transfer_networks` copies a source snapshot's G, G_ema and D into freshly built networks, strictly (any
missing, unexpected or differently-shaped tensor raises :class:`~fastgan.transfer.weights.WeightMismatchError`
with a table naming them, unless ``allow_partial``). An AdaFM source generator is folded first. For an AdaFM
target the gamma/beta tensors are not expected in the source (they start at the identity), and with
``new_front=True`` the front (mapping network and the blocks at or below the front resolution) keeps its fresh
initialisation instead of the source's: both are reported as ``kept``.

:func:`transfer` runs a whole transfer (``fastgan.train.train`` with ``method`` set); see docs/transfer.md.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from .adafm import fold_record, is_adafm_name
from .weights import TransferReport, transfer_weights

__all__ = ["transfer_networks", "is_front_name", "transfer"]


def is_front_name(name: str, front_res: int) -> bool:
    """True for G tensor names of the AdaFM front: the mapping network and synthesis blocks <= ``front_res``."""
    parts = name.split(".")
    if parts[0] == "mapping":
        return True
    return len(parts) > 1 and parts[0] == "synthesis" and parts[1].startswith("b") and int(parts[1][1:]) <= front_res


def _source_record(nets: dict, name: str) -> Optional[dict]:
    """The source record for ``name``: G falls back to G_ema and G_ema to G (a pickle may hold only one)."""
    if name in nets:
        return nets[name]
    if name == "G":
        return nets.get("G_ema")
    if name == "G_ema":
        return nets.get("G")
    return None


def transfer_networks(networks: dict[str, nn.Module], snapshot: dict, *, allow_partial: bool = False,
                      new_front: bool = False, front_res: Optional[int] = None,
                      source: str = "the source") -> dict[str, TransferReport]:
    """Copy ``snapshot`` (a dict from :func:`fastgan.nn.load_snapshot`) into ``networks`` ({"G", "D", "G_ema"}).

    Returns one :class:`TransferReport` per network. A network the snapshot lacks raises ``ValueError`` unless
    ``allow_partial`` (then it keeps its initialisation and is left out of the result).
    """
    nets = snapshot["networks"]
    reports: dict[str, TransferReport] = {}
    if new_front and front_res is None:
        raise ValueError("new_front=True needs front_res (the AdaFM front resolution)")
    for name, mod in networks.items():
        rec = _source_record(nets, name)
        if rec is None:
            if not allow_partial:
                raise ValueError(f"{source} holds no {name} (it has {sorted(nets)}); pass --allow-partial to keep a "
                                 f"freshly initialised {name}")
            continue
        keep = None
        if name != "D":
            rec = fold_record(rec)
            adafm = bool(getattr(mod, "config", {}).get("adafm_resolutions"))
            if adafm or new_front:
                def keep(k, adafm=adafm):  # noqa: E306 - per-network closure
                    return (adafm and is_adafm_name(k)) or (new_front and is_front_name(k, front_res))
        reports[name] = transfer_weights(mod, rec["state_dict"], allow_partial=allow_partial, name=name, keep=keep)
    return reports


def transfer(source: str, data: str, outdir: str, *, method: str = "adafm", device: Optional[str] = None,
             quiet: bool = False, **options):
    """Transfer the networks of snapshot ``source`` to the dataset ``data`` with ``method`` (finetune | freezed |
    adafm) in a new run directory under ``outdir``; any other :class:`~fastgan.train.options.TrainOptions` field
    can be given (``cfg``, ``kimg``, ``freeze_d``, ``adafm_front_res``, ``vision_aided``, ...).

    Returns the :class:`~fastgan.train.loop.TrainResult`. With ``resume="auto"`` a matching run continues exactly
    from its latest state, and a new run starts from ``source`` when there is none."""
    from ..train.loop import train
    from ..train.options import TrainOptions

    opts = TrainOptions(data=data, outdir=outdir, method=method, transfer=str(source), **options)
    return train(opts, device=device, quiet=quiet)

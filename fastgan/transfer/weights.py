"""Copy pretrained weights into a network by name, strictly by default, with a table of what did not match.

``transfer_weights(dst, state_dict)`` loads every tensor whose name and shape match and raises
``WeightMismatchError`` (its message is the table) when anything is missing, shape-mismatched or unexpected,
unless ``allow_partial=True``, in which case the report says what was left at its initial value.
``keep`` names destination tensors that keep their initial value on purpose (AdaFM's identity gamma/beta, a
freshly initialised front): they are reported as ``kept``, never as missing, and a source tensor of the same name
is not copied. :func:`summary_table` prints one row of counts per network.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch
from torch import Tensor, nn


class WeightMismatchError(ValueError):
    """The source and destination networks do not have the same tensors (the message is a mismatch table)."""


@dataclass
class TransferReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the network, not in the source
    unexpected: list[str] = field(default_factory=list)  # in the source, not in the network
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, source, network)
    kept: list[str] = field(default_factory=list)  # in the network, left at its initial value on purpose

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def table(self, limit: int = 40) -> str:
        rows = [(n, "shape", str(s), str(d)) for n, s, d in self.mismatched]
        rows += [(n, "missing", "-", "present") for n in self.missing]
        rows += [(n, "unexpected", "present", "-") for n in self.unexpected]
        if not rows:
            return f"all {len(self.loaded)} tensors matched"
        w = max(len(r[0]) for r in rows[:limit])
        lines = [f"{'tensor':<{w}}  {'problem':<10}  {'source':<22}  network",
                 f"{'-' * w}  {'-' * 10}  {'-' * 22}  {'-' * 22}"]
        lines += [f"{n:<{w}}  {p:<10}  {s:<22}  {d}" for n, p, s, d in rows[:limit]]
        if len(rows) > limit:
            lines.append(f"... and {len(rows) - limit} more")
        lines.append(f"({len(self.loaded)} matched, {len(self.mismatched)} shape mismatches, "
                     f"{len(self.missing)} missing, {len(self.unexpected)} unexpected)")
        return "\n".join(lines)


def transfer_weights(dst: nn.Module, src: Mapping[str, Tensor], *, allow_partial: bool = False,
                     name: str = "network", keep: Optional[Callable[[str], bool]] = None) -> TransferReport:
    """Copy ``src`` tensors into ``dst`` by name. Strict unless ``allow_partial``; nothing is copied on error.

    ``keep(name)`` True: the destination tensor keeps its initial value (reported under ``kept``)."""
    own = dst.state_dict()
    rep = TransferReport()
    if keep is not None:
        rep.kept = [k for k in own if keep(k)]
    kept = set(rep.kept)
    for k, v in src.items():
        if k in kept:
            continue
        if k not in own:
            rep.unexpected.append(k)
        elif tuple(own[k].shape) != tuple(v.shape):
            rep.mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            rep.loaded.append(k)
    rep.missing = [k for k in own if k not in src and k not in kept]
    if not rep.complete and not allow_partial:
        raise WeightMismatchError(f"the source {name} does not match the {name} being built "
                                  f"(resolution, --cfg, channels or labels differ?):\n{rep.table()}\n"
                                  "pass --allow-partial to load only the matching tensors")
    with torch.no_grad():
        for k in rep.loaded:
            own[k].copy_(src[k])
    return rep


def summary_table(reports: Mapping[str, TransferReport]) -> str:
    """One row per network: tensors loaded, kept at their initial value, missing, shape-mismatched, unexpected."""
    cols = ("loaded", "kept", "missing", "shape-mismatched", "unexpected")
    w = max([len(n) for n in reports] + [7])
    lines = [f"{'network':<{w}}  " + "  ".join(cols)]
    for n, r in reports.items():
        vals = (len(r.loaded), len(r.kept), len(r.missing), len(r.mismatched), len(r.unexpected))
        lines.append(f"{n:<{w}}  " + "  ".join(f"{v:>{len(c)}d}" for v, c in zip(vals, cols)))
    return "\n".join(lines)

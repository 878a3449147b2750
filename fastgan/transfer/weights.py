"""Copy pretrained weights into a network by name, strictly by default, with a table of what did not match.

``transfer_weights(dst, state_dict)`` loads every tensor whose name and shape match and raises
``WeightMismatchError`` (its message is the table) when anything is missing, shape-mismatched or unexpected,
unless ``allow_partial=True``, in which case the report says what was left at its initial value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

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
                     name: str = "network") -> TransferReport:
    """Copy ``src`` tensors into ``dst`` by name. Strict unless ``allow_partial``; nothing is copied on error."""
    own = dst.state_dict()
    rep = TransferReport()
    for k, v in src.items():
        if k not in own:
            rep.unexpected.append(k)
        elif tuple(own[k].shape) != tuple(v.shape):
            rep.mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            rep.loaded.append(k)
    rep.missing = [k for k in own if k not in src]
    if not rep.complete and not allow_partial:
        raise WeightMismatchError(f"the source {name} does not match the {name} being built "
                                  f"(resolution, --cfg, channels or labels differ?):\n{rep.table()}\n"
                                  "pass --allow-partial to load only the matching tensors")
    with torch.no_grad():
        for k in rep.loaded:
            own[k].copy_(src[k])
    return rep

"""Process-group helpers for torchrun launches (NCCL on GPU, gloo on CPU) without DDP wrappers.

Like StyleGAN3, parameters are broadcast once from rank 0 and each phase all-reduces one flat gradient buffer,
so the alternating G/D phases and lazy regularisation never meet DDP's unused-parameter rules. A single process
(no ``WORLD_SIZE`` in the environment) needs no process group at all.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: Optional[str] = None, timeout_s: float = 1800.0) -> Dist:
    """Join the process group that torchrun describes in the environment (or none for one process)."""
    world = env_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(backend, store=_store(rank, world, timeout), rank=rank, world_size=world,
                                timeout=timeout, **({"device_id": dev} if dev.type == "cuda" else {}))
    return Dist(rank, world, local, dev)


def _store(rank: int, world: int, timeout: datetime.timedelta):
    """The rendezvous store of torchrun's environment, with a key prefix per restart: after torchrun restarts a
    failed group, the agent's store still holds the dead processes' addresses, and a new group that read them
    would wait forever for peers that no longer exist."""
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port:
        raise RuntimeError("WORLD_SIZE > 1 but MASTER_ADDR / MASTER_PORT are not set: launch with torchrun")
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(host, int(port), world, is_master=(rank == 0 and not agent), timeout=timeout,
                          wait_for_workers=False)
    return dist.PrefixStore(f"fastgan/restart{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(d: Dist, module: nn.Module) -> None:
    if not d.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def all_reduce_grads(d: Dist, params: Iterable[nn.Parameter]) -> Optional[Tensor]:
    """Sum the gradients of ``params`` over processes through one flat buffer; returns that buffer (or None)."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return None
    flat = torch.cat([p.grad.flatten() for p in params])
    if d.enabled:
        dist.all_reduce(flat)
    off = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[off: off + n].view_as(p.grad))
        off += n
    return flat


def all_reduce_(d: Dist, t: Tensor) -> Tensor:
    if d.enabled:
        dist.all_reduce(t)
    return t


def check_consistency(d: Dist, module: nn.Module, name: str) -> None:
    """Raise if any process holds different weights than rank 0 (run before every snapshot): one broadcast of all
    tensors flattened and one all-reduce of per-tensor verdicts, so every process names the same tensors."""
    if not d.enabled:
        return
    named = list(module.named_parameters()) + list(module.named_buffers())
    flat = torch.cat([t.detach().reshape(-1).double() for _, t in named])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    differs, off = [], 0
    for _, t in named:
        n = t.numel()
        differs.append(0 if torch.equal(ref[off: off + n], flat[off: off + n]) else 1)
        off += n
    counts = torch.tensor(differs, device=flat.device)
    dist.all_reduce(counts)
    bad = [(pname, int(c)) for (pname, _), c in zip(named, counts.tolist()) if c]
    if bad:
        pname, c = bad[0]
        raise RuntimeError(f"{name}.{pname} differs between processes ({c} of {d.world_size} differ from rank 0"
                           + (f"; {len(bad) - 1} more tensors too" if len(bad) > 1 else "")
                           + "); the run is no longer consistent")

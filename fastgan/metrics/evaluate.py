"""Metrics of a generator snapshot against reference statistics (``fastgan metrics``).

Metric names follow StyleGAN's: ``fid50k_full``, ``kid50k_full``, ``pr50k3_full`` (precision/recall with k=3),
``prdc50k5_full`` (precision, recall, density, coverage with k=5); counts may also be exact (``fid500_full``,
``pr500_k3_full``). ``_full`` means against the reference statistics of the whole dataset
(``fastgan ref``), whose extractor and protocol are used for the generated images too.

Generated image ``i`` comes from seed ``seed + i`` (numpy ``RandomState`` latents, as ``fastgan generate``), so the
images, and the results, do not depend on the batch size or on how many processes share the work: under torchrun
each process takes a contiguous block of seeds, FID sums the moments over processes and KID / PR gather the
features in seed order.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from . import functional as F
from .extractors import get_extractor
from .stats import FeatureStats, fid_from_stats

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # fid | kid | pr | prdc
    num: int
    k: int = 3


def parse_metric(name: str) -> MetricSpec:
    """``fid50k_full`` -> MetricSpec(kind="fid", num=50000); ``pr50k3_full`` -> k=3 (StyleGAN's names); exact counts
    with a k are written ``pr500_k3_full`` / ``prdc500_k5_full``; pr and prdc default to k=3 and k=5."""
    m = re.fullmatch(r"(fid|kid|prdc|pr)(\d+)(k?)(?:(\d+)|_k(\d+))?_full", name)
    if not m:
        raise ValueError(f"unknown metric {name!r}; use fid<N>_full, kid<N>_full, pr<N>k<K>_full, prdc<N>k<K>_full "
                         "(N in thousands, e.g. fid50k_full, pr50k3_full) or exact counts such as fid500_full and "
                         "pr500_k3_full")
    kind, digits, thousands, k_sg, k_exact = m.groups()
    num = int(digits) * (1000 if thousands else 1)
    k = k_sg or k_exact
    if k_sg and not thousands:
        raise ValueError(f"{name!r} is ambiguous: write pr50k3_full (50k images, k=3) or pr503_k3_full (503 images)")
    if kind in ("fid", "kid") and k:
        raise ValueError(f"{name!r}: only pr/prdc metrics take a neighbourhood size k")
    if num < 2:
        raise ValueError(f"{name!r}: needs at least 2 generated images")
    return MetricSpec(name, kind, num, int(k) if k else (3 if kind == "pr" else 5))


def _rank_world():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def generated_stats(G, extractor, num: int, *, seed: int = 0, batch_size: int = 32, protocol: Optional[str] = None,
                    truncation_psi: float = 1.0, keep_features: bool = True, class_idx: Optional[int] = None,
                    progress: Optional[Callable[[int], None]] = None) -> FeatureStats:
    """Features of ``num`` generated images (seeds ``seed .. seed + num - 1``), reduced over torchrun processes."""
    from ..sampling.generate import generate_images

    rank, world = _rank_world()
    lo, hi = num * rank // world, num * (rank + 1) // world
    stats = FeatureStats(keep_features=keep_features)
    seeds = list(range(seed + lo, seed + hi))
    device = next(G.parameters()).device
    if G.c_dim > 0 and class_idx is None:  # classes in turn, by seed
        class_idx = [s % G.c_dim for s in seeds]
    for i in range(0, len(seeds), batch_size):
        chunk = seeds[i: i + batch_size]
        cls = class_idx[i: i + batch_size] if isinstance(class_idx, list) else class_idx
        imgs = [img for _, img in generate_images(G, chunk, truncation_psi=truncation_psi, class_idx=cls,
                                                  batch_size=batch_size)]
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).to(device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        stats.update(extractor(x, protocol=protocol))
        if progress:
            progress(len(chunk))
    if world > 1:
        stats.all_reduce()
    return stats


def evaluate(network: PathLike, metrics: Sequence[str], ref: PathLike, *, seed: int = 0, batch_size: int = 32,
             truncation_psi: float = 1.0, device: str = "cpu", kid_subsets: int = 100, kid_subset_size: int = 1000,
             write_jsonl: bool = True, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Compute ``metrics`` for the G_ema of ``network`` against the statistics file ``ref``.

    Returns {metric name: {"results": {...}, ...record}}; when the snapshot lies in a run directory each record is
    also appended to ``<run dir>/metric-<name>.jsonl`` (by process 0)."""
    from ..nn.checkpoint import load_network

    specs = [parse_metric(m) for m in metrics]
    if not specs:
        raise ValueError("--metrics is empty")
    real = FeatureStats.load(ref)
    meta = real.metadata
    if "extractor_factory" not in meta:
        raise ValueError(f"{ref} does not record how its extractor was built (made by an older fastgan); "
                         "recompute it with `fastgan ref --force`")
    ext = get_extractor(meta["extractor_factory"], device=device, **meta.get("extractor_kwargs", {}))
    for key in ("dim", "weights_sha256", "extractor"):
        if ext.describe().get(key) != meta.get(key):
            raise ValueError(f"the extractor rebuilt for {ref} differs from the one that made it ({key}: "
                             f"{ext.describe().get(key)!r} vs {meta.get(key)!r})")
    protocol = meta.get("protocol", ext.protocol)
    cov_norm = meta.get("cov_norm", "unbiased")
    need_features = [s.name for s in specs if s.kind != "fid"]
    if need_features and not real.keep_features:
        raise ValueError(f"{', '.join(need_features)} need the reference features, but {ref} keeps only moments; "
                         "recompute it with `fastgan ref --keep-features yes`")
    G = load_network(network, "G_ema", device=device)
    rank, _ = _rank_world()
    num = max(s.num for s in specs)
    t0 = time.time()
    gen = generated_stats(G, ext, num, seed=seed, batch_size=batch_size, protocol=protocol,
                          truncation_psi=truncation_psi,
                          keep_features=bool(need_features) or len({s.num for s in specs}) > 1)
    gen_time = time.time() - t0
    out: dict[str, dict] = {}
    for s in specs:
        if s.kind == "fid":
            sub = gen if s.num == num else _first(gen, s.num)
            results = {"fid": fid_from_stats(sub, real, cov_norm=cov_norm)}
        else:
            fake = gen.features()[: s.num]
            reals = real.features()
            if s.kind == "kid":
                size = min(kid_subset_size, fake.shape[0], reals.shape[0])
                mean, std = F.kid_from_features(reals, fake, num_subsets=kid_subsets, subset_size=size, seed=seed)
                results = {"kid": mean, "kid_std": std}
            else:
                r = F.prdc(reals, fake, k=s.k, inclusive=True)
                results = r if s.kind == "prdc" else {"precision": r["precision"], "recall": r["recall"]}
        rec = {"metric": s.name, "results": results, "snapshot": str(pathlib.Path(network).name),
               "num_gen": s.num, "seed": seed, "truncation_psi": truncation_psi, "ref": str(ref),
               "ref_content_sha256": meta.get("content_sha256"), "num_real": real.n,
               "extractor": meta.get("extractor"), "protocol": protocol, "gen_time_s": gen_time,
               "timestamp": time.time()}
        out[s.name] = rec
        if rank == 0:
            log(f"{s.name}: " + ", ".join(f"{k} {v:.6g}" for k, v in results.items()))
    run_dir = pathlib.Path(network).resolve().parent
    if write_jsonl and rank == 0 and (run_dir / "training_options.json").is_file():
        for name, rec in out.items():
            with open(run_dir / f"metric-{name}.jsonl", "a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
    return out


def _first(stats: FeatureStats, n: int) -> FeatureStats:
    """Statistics of the first ``n`` kept features (a smaller count of the same run)."""
    if not stats.keep_features:
        raise ValueError("a smaller FID count in the same call needs kept features")
    sub = FeatureStats(keep_features=True)
    sub.update(stats.features()[:n])
    return sub

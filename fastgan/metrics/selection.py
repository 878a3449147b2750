"""Choosing the pretrained source for transfer by recall (When, Why, and Which Pretrained GANs Are Useful?).

The recipe: sample each candidate generator, embed its samples and the target images with one extractor, and rank the
candidates by the *recall* of the target with respect to the candidate: the fraction of target samples that fall in
some sample's k-NN ball (radius: the distance from that sample to its k-th nearest other sample). A source that
covers the target's modes transfers best. Precision, density and coverage are reported beside it for context.

Recall of a target of ~100 images moves in 1 % steps, so every score carries a bootstrap confidence interval over
the target samples (the candidate's samples and their balls stay fixed). Use the same number of samples, k and
extractor for every candidate; ``select_source`` checks that the candidates' sample counts agree.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import torch
from torch import Tensor

from fastgan.ops import knn as _knn

from . import functional as F


@dataclass(frozen=True)
class SourceScore:
    name: str
    recall: float
    recall_low: float   # bootstrap confidence interval of the recall
    recall_high: float
    precision: float
    density: float
    coverage: float
    n_target: int
    n_samples: int

    def as_dict(self) -> dict:
        return asdict(self)


def select_source(target: Tensor, candidates: Mapping[str, Tensor], *, k: int = 5, inclusive: bool = False,
                  bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                  impl: str = "auto") -> list[SourceScore]:
    """Score every candidate's sample features against the target features; best recall first.

    ``target`` (N_t, D) and ``candidates`` {name: (N_s, D)} are features from one extractor. ``inclusive=False``
    counts a sample on a ball's boundary as outside (the paper's code, and the prdc package)."""
    if not candidates:
        raise ValueError("select_source needs at least one candidate")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 1:
        raise ValueError(f"bootstrap must be an int >= 1, got {bootstrap!r}")
    target = F._features(target, "target")
    if target.shape[0] < k + 1:
        raise ValueError(f"select_source with k={k} needs at least {k + 1} target samples, got {target.shape[0]}")
    sizes = {name: int(f.shape[0]) for name, f in candidates.items() if isinstance(f, Tensor) and f.dim() == 2}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"candidates must be scored on the same number of samples, got {sizes}")
    target_r = _knn.knn_radii(target, k, impl=impl)
    gen = torch.Generator().manual_seed(seed)
    boot_idx = torch.randint(0, target.shape[0], (bootstrap, target.shape[0]), generator=gen)
    lo_q, hi_q = (1.0 - confidence) / 2.0, 1.0 - (1.0 - confidence) / 2.0
    scores = []
    for name, feats in candidates.items():
        fake = F._features(feats, f"candidates[{name!r}]").to(target.device)
        if fake.shape[1] != target.shape[1]:
            raise ValueError(f"candidate {name!r} has features of width {fake.shape[1]}, the target {target.shape[1]}")
        if fake.shape[0] < k + 1:
            raise ValueError(f"candidate {name!r} needs at least {k + 1} samples, got {fake.shape[0]}")
        fake_r = _knn.knn_radii(fake, k, impl=impl)
        st = _knn.manifold_stats(target, fake, target_r, fake_r, inclusive=inclusive, impl=impl)
        inside = st["real_in_fake"].double().cpu()
        boot = inside[boot_idx].mean(dim=1)
        scores.append(SourceScore(
            name=name, recall=float(inside.mean()),
            recall_low=float(torch.quantile(boot, lo_q)), recall_high=float(torch.quantile(boot, hi_q)),
            precision=float(st["fake_in_real"].double().mean()),
            density=float(st["density_count"]) / (k * fake.shape[0]),
            coverage=float(st["real_covered"].double().mean()),
            n_target=int(target.shape[0]), n_samples=int(fake.shape[0])))
    return sorted(scores, key=lambda s: (-s.recall, -s.coverage, s.name))


def _source_paths(sources) -> list:
    """Snapshot files from ``--sources``: files as given; a run directory gives its latest snapshot; any other
    directory gives every ``*.pt`` / ``*.pkl`` in it."""
    import pathlib

    out = []
    for s in sources:
        p = pathlib.Path(s)
        if p.is_dir():
            latest = p / "latest.json"
            if latest.is_file():
                import json

                out.append(p / json.loads(latest.read_text())["snapshot"])
            else:
                found = sorted(list(p.glob("*.pt")) + list(p.glob("*.pkl")))
                if not found:
                    raise FileNotFoundError(f"--sources {p}: no *.pt or *.pkl snapshots in this directory")
                out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"--sources {p}: no such snapshot file or directory")
    names = [q.name if [r.name for r in out].count(q.name) == 1 else str(q) for q in out]
    return list(zip(names, out))


def rank_sources(sources, *, data=None, ref=None, num: int = 10000, k: int = 5, extractor: str = "random-conv",
                 extractor_kwargs=None, protocol=None, bootstrap: int = 1000, confidence: float = 0.95,
                 seed: int = 0, batch_size: int = 32, device: str = "cpu", out=None, log=print) -> list[SourceScore]:
    """Rank generator snapshots for transfer to a target by recall (the When/Why/Which recipe), end to end.

    The target is a dataset (``data``: zip or folder, embedded with ``extractor``) or reference statistics with
    kept features (``ref``, from ``fastgan ref --keep-features yes``; its extractor and protocol are reused). Each
    source's G_ema draws ``num`` images (seeds ``seed ..``, classes in turn for conditional sources) embedded the
    same way. ``out`` (json) receives the ranking and every setting, written atomically."""
    import json
    import pathlib

    from .._io import atomic_path
    from ..nn.checkpoint import load_network
    from .evaluate import generated_stats
    from .extractors import get_extractor
    from .reference import iter_images
    from .stats import FeatureStats

    if (data is None) == (ref is None):
        raise ValueError("give the target as --data (a dataset) or --ref (statistics with features), not both")
    paths = _source_paths(sources)
    if ref is not None:
        real = FeatureStats.load(ref)
        if not real.keep_features:
            raise ValueError(f"{ref} keeps only moments; recompute it with `fastgan ref --keep-features yes`")
        meta = real.metadata
        if not meta.get("extractor_factory"):
            raise ValueError(f"{ref} does not record how its extractor was built; recompute it with `fastgan ref "
                             "--force`")
        extractor, extractor_kwargs = meta["extractor_factory"], meta.get("extractor_kwargs", {})
        protocol = meta.get("protocol")
        target = real.features()
    ext = get_extractor(extractor, device=device, **(extractor_kwargs or {}))
    protocol = protocol or ext.protocol
    if data is not None:
        target = torch.cat([ext(b, protocol=protocol).double().cpu() for b in iter_images(data, batch_size)])
    log(f"target: {target.shape[0]} images, {ext.name} ({ext.dim}-d), protocol {protocol}")
    feats = {}
    for name, path in paths:
        G = load_network(path, "G_ema", device=device)
        feats[name] = generated_stats(G, ext, num, seed=seed, batch_size=batch_size, protocol=protocol).features()
        log(f"{name}: {num} samples")
        del G
    scores = select_source(target, feats, k=k, bootstrap=bootstrap, confidence=confidence, seed=seed)
    w = max(len(s.name) for s in scores)
    log(f"{'source':<{w}}  recall [{confidence:.0%} CI]      precision  density  coverage")
    for s in scores:
        log(f"{s.name:<{w}}  {s.recall:.3f} [{s.recall_low:.3f}, {s.recall_high:.3f}]  {s.precision:9.3f}  "
            f"{s.density:7.3f}  {s.coverage:8.3f}")
    if out is not None:
        record = {"ranking": [s.as_dict() for s in scores], "sources": {n: str(p) for n, p in paths},
                  "target": str(data if data is not None else ref), "num_samples": num, "k": k,
                  "extractor": ext.describe(), "protocol": protocol, "bootstrap": bootstrap,
                  "confidence": confidence, "seed": seed}
        out = pathlib.Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
    return scores

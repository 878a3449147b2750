"""Choosing the pretrained source for transfer by recall (When, Why, and Which Pretrained GANs Are Useful?).

The recipe: sample each candidate generator, embed its samples and the target images with one extractor, and rank the
candidates by the *recall* of the target with respect to the candidate: the fraction of target samples that fall in
some sample's k-NN ball (radius: the distance from that sample to its k-th nearest other sample). A source that
covers the target's modes transfers best. Precision, density and coverage are reported beside it for context.

Recall of a target of ~100 images moves in 1 % steps, so every score carries a bootstrap confidence interval over
the target samples (the candidate's samples and their balls stay fixed). Use the same number of samples, k and
extractor for every candidate; ``select_source`` checks that the candidates' sample counts agree.

The paper's second diagnostic, the "∇D similarity" of a source checkpoint (METHODS.md §4.3, defined on 2-D points),
is generalised to images by :func:`grad_d_similarity`: does the source discriminator's gradient at the source's
samples point towards the target? For samples x = G(z), the nearest target image c(x) in pixel space and
g(x) = ∇_x L_G with the non-saturating generator loss L_G = softplus(-D(x)) (fastgan's training loss), the score
is the mean over samples of cos(c(x) - x, g(x)). Both sign conventions are reported by name:

- ``loss_gradient``: cos(c - x, ∇_x L_G), the sign of the paper's code;
- ``update_direction``: cos(c - x, -∇_x L_G), the direction a generator step moves x (+1: D pulls the samples
  towards their nearest target image). It is exactly minus the other.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Mapping, Optional

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
    grad_d_similarity: Optional[dict] = None  # GradDSimilarity.as_dict() and the generator used, if asked

    def as_dict(self) -> dict:
        d = asdict(self)
        if d["grad_d_similarity"] is None:
            del d["grad_d_similarity"]
        return d


@dataclass(frozen=True)
class GradDSimilarity:
    """∇D similarity of one source (see :func:`grad_d_similarity`). ``loss_gradient`` = mean cos(c - x, ∇_x L_G)
    (the paper code's sign), ``update_direction`` = mean cos(c - x, -∇_x L_G) = -loss_gradient; NaN when no
    sample counts. ``num``: samples drawn; ``num_valid``: samples that count (nonzero gradient, x != c(x))."""
    loss_gradient: float
    update_direction: float
    num: int
    num_valid: int

    def as_dict(self) -> dict:
        return asdict(self)


def _as_images(x: Tensor, arg: str) -> Tensor:
    """uint8 [0, 255] or float [-1, 1] images (N, C, H, W) -> float32 [-1, 1]."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{arg} must be a tensor of images (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[0] < 1:
        raise ValueError(f"{arg} must be images (N, C, H, W) with N >= 1, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise ValueError(f"{arg} must be uint8 or float images, got {x.dtype}")
    return x.float()


def _mbstd_group(D) -> int:
    """The minibatch-std group size of a fastgan / StyleGAN2 discriminator (0: none or unknown)."""
    cfg = getattr(D, "config", None)
    if not isinstance(cfg, dict) or not cfg.get("mbstd_num_channels", 1):
        return 0
    return int(cfg.get("mbstd_group_size") or 0)


def grad_d_cosines(D, samples: Tensor, target: Tensor, c: Optional[Tensor] = None, *,
                   batch_size: int = 32) -> Tensor:
    """Per-sample cos(c(x) - x, ∇_x L_G) (the ``loss_gradient`` sign) as float64 (N,), NaN where the gradient or
    c(x) - x is exactly zero.

    ``samples`` (N, C, H, W) and ``target`` (N_t, C, H, W): float images in [-1, 1] (or uint8). c(x) is the target
    image nearest to x in pixel space (Euclidean over all C·H·W values; ties go to the lower index).
    L_G = softplus(-D(x, c)) summed over each batch of ``batch_size`` samples, so with a minibatch-std layer a
    sample's gradient includes its group's terms, as in a generator step; keep ``batch_size`` a multiple of D's
    group size. ``c``: (N, c_dim) labels for a conditional D. D's parameters get no gradient."""
    x_all = _as_images(samples, "samples")
    tgt = _as_images(target, "target")
    if x_all.shape[1:] != tgt.shape[1:]:
        raise ValueError(f"the target images are {'x'.join(map(str, tgt.shape[1:]))} (C x H x W) but the samples are "
                         f"{'x'.join(map(str, x_all.shape[1:]))}: the source's resolution and channels must match "
                         "the target's")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if c is not None and (not isinstance(c, Tensor) or c.dim() != 2 or c.shape[0] != x_all.shape[0]):
        got = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
        raise ValueError(f"c must be ({x_all.shape[0]}, c_dim) labels, one row per sample, got {got}")
    try:
        device = next(D.parameters()).device
    except StopIteration:
        device = x_all.device
    flat_t = tgt.to(device).flatten(1)
    out = []
    for i in range(0, x_all.shape[0], batch_size):
        x = x_all[i: i + batch_size].to(device).detach().requires_grad_(True)
        ci = None if c is None else c[i: i + batch_size].to(device, torch.float32)
        with torch.enable_grad():
            logits = D(x) if ci is None else D(x, ci)
            loss = torch.nn.functional.softplus(-logits.float()).sum()
            (g,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            nearest = torch.cdist(x.detach().flatten(1), flat_t).argmin(dim=1)
            toward = (flat_t[nearest] - x.detach().flatten(1)).double()
            g = g.flatten(1).double()
            gn, tn = g.norm(dim=1), toward.norm(dim=1)
            cos = (toward * g).sum(dim=1) / (gn * tn)
            out.append(torch.where((gn > 0) & (tn > 0), cos, torch.full_like(cos, math.nan)).cpu())
    return torch.cat(out)


def grad_d_similarity(G, D, target: Tensor, *, num: int = 1000, seed: int = 0, batch_size: int = 32,
                      truncation_psi: float = 1.0) -> GradDSimilarity:
    """The image-scale ∇D similarity of a source (G, D) to the ``target`` images (N_t, C, H, W; uint8 or [-1, 1]).

    Sample i is G(z_i) with z_i = numpy ``RandomState(seed + i)`` (the latents of ``fastgan generate``, and of the
    recall's samples), constant noise, classes in turn (i mod c_dim) for a conditional G; its nearest target image
    in pixel space is c(x), and the gradient is that of the non-saturating G loss softplus(-D(x)) on the raw
    (unaugmented) sample (:func:`grad_d_cosines`). Returns both sign conventions (:class:`GradDSimilarity`);
    samples whose cosine is undefined are left out of the mean."""
    from ..sampling.generate import seed_latents

    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be an int >= 1, got {num!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    group = _mbstd_group(D)
    if group > 1 and (batch_size % group or num % group):
        bad = "batch_size" if batch_size % group else "num"
        raise ValueError(f"{bad} ({batch_size if bad == 'batch_size' else num}) must be a multiple of the "
                         f"discriminator's minibatch-std group size ({group})")
    tgt = _as_images(target, "target")
    res = getattr(G, "img_resolution", None)
    chans = getattr(G, "img_channels", None)
    if res is not None and chans is not None and tuple(tgt.shape[1:]) != (chans, res, res):
        raise ValueError(f"the target images are {'x'.join(map(str, tgt.shape[1:]))} (C x H x W) but the source "
                         f"generates {chans}x{res}x{res}: the source's resolution and channels must match the target's")
    device = next(G.parameters()).device
    c_dim = int(getattr(G, "c_dim", 0) or 0)
    samples, labels = [], []
    with torch.no_grad():
        for i in range(0, num, batch_size):
            seeds = list(range(seed + i, seed + min(i + batch_size, num)))
            z = seed_latents(seeds, G.z_dim).to(device)
            cls = None
            if c_dim:
                cls = torch.nn.functional.one_hot(torch.tensor([s % c_dim for s in seeds], device=device),
                                                  c_dim).float()
                labels.append(cls)
            samples.append(G(z, cls, truncation_psi=truncation_psi, noise_mode="const").float())
    cos = grad_d_cosines(D, torch.cat(samples), tgt, torch.cat(labels) if labels else None, batch_size=batch_size)
    valid = int(torch.isfinite(cos).sum())
    lg = float(torch.nanmean(cos)) if valid else math.nan
    return GradDSimilarity(loss_gradient=lg, update_direction=-lg if valid else math.nan, num=num, num_valid=valid)


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


RANK_BY = ("recall", "grad_d_similarity")


def _load_source_pair(path, device: str):
    """(generator name, G, D) of a snapshot for the ∇D similarity: the training G when the snapshot has it (the
    generator that a transfer fine-tunes, and the one its D was trained against), else G_ema."""
    from ..nn.checkpoint import load_network, load_snapshot

    nets = load_snapshot(path)["networks"]
    if "D" not in nets:
        raise ValueError(f"--grad-d-sim: {path} holds {sorted(nets)} but no discriminator D; the ∇D similarity needs "
                         "the source's D (snapshots written by `fastgan train` have it)")
    which = "G" if "G" in nets else "G_ema"
    return which, load_network(path, which, device=device), load_network(path, "D", device=device)


def _target_images_for(G, images: Tensor, path) -> Tensor:
    """The target images as the source generates them: a 1-channel source takes gray targets (stored as RGB)."""
    if G.img_channels == 1 and images.shape[1] == 3:
        if not (torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])):
            raise ValueError(f"--grad-d-sim: {path} generates 1-channel (gray) images but the target images have "
                             "colour; the source's channels must match the target's")
        return images[:, :1]
    return images


def rank_sources(sources, *, data=None, ref=None, num: int = 10000, k: int = 5, extractor: str = "random-conv",
                 extractor_kwargs=None, protocol=None, bootstrap: int = 1000, confidence: float = 0.95,
                 seed: int = 0, batch_size: int = 32, device: str = "cpu", grad_d_sim: bool = False,
                 grad_d_num: int = 1000, by: str = "recall", out=None, log=print) -> list[SourceScore]:
    """Rank generator snapshots for transfer to a target by recall (the When/Why/Which recipe), end to end.

    The target is a dataset (``data``: zip or folder, embedded with ``extractor``) or reference statistics with
    kept features (``ref``, from ``fastgan ref --keep-features yes``; its extractor and protocol are reused). Each
    source's G_ema draws ``num`` images (seeds ``seed ..``, classes in turn for conditional sources) embedded the
    same way. ``grad_d_sim=True`` (needs ``data``) adds each source's :func:`grad_d_similarity` on ``grad_d_num``
    samples of its training G (G_ema when the snapshot has no G) against the target images, both sign
    conventions. ``by="recall"`` ranks by recall (then coverage); ``by="grad_d_similarity"`` (computes it) ranks
    by the ``loss_gradient`` convention, highest first, the sign that went with a better transfer in the paper's
    2-D study. ``out`` (json) receives the ranking and every setting, written atomically."""
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
    if by not in RANK_BY:
        raise ValueError(f"--by must be one of {RANK_BY}, got {by!r}")
    grad_d_sim = grad_d_sim or by == "grad_d_similarity"
    if grad_d_sim and data is None:
        raise ValueError("--grad-d-sim needs the target images: give the target as --data, not --ref")
    if grad_d_sim and (isinstance(grad_d_num, bool) or not isinstance(grad_d_num, int) or grad_d_num < 1):
        raise ValueError(f"--grad-d-num must be an integer >= 1, got {grad_d_num!r}")
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
    images = None
    if data is not None:
        target = []
        kept = []  # the images themselves only for the ∇D similarity (a large target streams otherwise)
        for b in iter_images(data, batch_size):
            target.append(ext(b, protocol=protocol).double().cpu())
            if grad_d_sim:
                kept.append(b)
        target = torch.cat(target)
        images = torch.cat(kept) if grad_d_sim else None
    log(f"target: {target.shape[0]} images, {ext.name} ({ext.dim}-d), protocol {protocol}")
    feats, grad_sims = {}, {}
    for name, path in paths:
        if grad_d_sim:  # before the samples, so that a snapshot without D stops the command early
            which, G, D = _load_source_pair(path, device)
            sim = grad_d_similarity(G, D, _target_images_for(G, images, path), num=grad_d_num, seed=seed,
                                    batch_size=batch_size)
            grad_sims[name] = {**sim.as_dict(), "generator": which}
            del G, D
        G = load_network(path, "G_ema", device=device)
        feats[name] = generated_stats(G, ext, num, seed=seed, batch_size=batch_size, protocol=protocol).features()
        log(f"{name}: {num} samples" + (f", ∇D similarity on {grad_d_num}" if grad_d_sim else ""))
        del G
    scores = select_source(target, feats, k=k, bootstrap=bootstrap, confidence=confidence, seed=seed)
    if grad_d_sim:
        scores = [replace(s, grad_d_similarity=grad_sims[s.name]) for s in scores]
    if by == "grad_d_similarity":
        def key(s):
            v = s.grad_d_similarity["loss_gradient"]
            return (math.isnan(v), -v if not math.isnan(v) else 0.0, -s.recall, s.name)
        scores = sorted(scores, key=key)
    w = max(len(s.name) for s in scores)
    extra = "  ∇D sim (loss_gradient / update_direction)" if grad_d_sim else ""
    log(f"{'source':<{w}}  recall [{confidence:.0%} CI]      precision  density  coverage{extra}")
    for s in scores:
        line = (f"{s.name:<{w}}  {s.recall:.3f} [{s.recall_low:.3f}, {s.recall_high:.3f}]  {s.precision:9.3f}  "
                f"{s.density:7.3f}  {s.coverage:8.3f}")
        if grad_d_sim:
            g = s.grad_d_similarity
            line += f"  {g['loss_gradient']:+.3f} / {g['update_direction']:+.3f}"
        log(line)
    if out is not None:
        def entry(s):  # NaN (no sample counted) is written as null: strict JSON
            d = s.as_dict()
            if "grad_d_similarity" in d:
                d["grad_d_similarity"] = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                                          for k, v in d["grad_d_similarity"].items()}
            return d

        record = {"ranking": [entry(s) for s in scores], "sources": {n: str(p) for n, p in paths},
                  "target": str(data if data is not None else ref), "num_samples": num, "k": k,
                  "extractor": ext.describe(), "protocol": protocol, "bootstrap": bootstrap,
                  "confidence": confidence, "seed": seed, "by": by}
        if grad_d_sim:
            record["grad_d_similarity"] = {
                "num_samples": grad_d_num, "loss": "softplus(-D(x))", "nearest": "pixels",
                "conventions": {"loss_gradient": "mean cos(c(x) - x, grad_x L_G)",
                                "update_direction": "mean cos(c(x) - x, -grad_x L_G) = -loss_gradient"},
                "ranked_by": "loss_gradient" if by == "grad_d_similarity" else None}
        out = pathlib.Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
    return scores

"""Benchmark of the feature-space metrics (families ``metrics`` and ``knn``).

    python benchmarks/bench_metrics.py [--device cpu|cuda] [--cases FD,PRDC_n2000] [--providers ...] [--dry-run]

metrics  Frechet distance at d = 2048. ``FD_*`` cases start from features: full rank (10k vs 10k) and few-shot
         (500 vs 10k, rank 499). The ``FDstats_*`` case starts from the two full-rank covariances (the solve alone).
         Providers: ``ref`` (``fastgan.metrics``: float64 covariances, then Cholesky + eigvalsh or the Gram route),
         ``baseline-scipy`` (pytorch-fid / clean-fid / NVlabs: ``np.cov`` + ``scipy.linalg.sqrtm(S1 S2)``),
         ``baseline-torchmetrics`` (torchmetrics' float64 ``eigvals(S1 S2)`` route on our covariances).
         Target: ref >= 10x baseline-scipy on CPU.
knn      ``PRDC_*``: precision + recall + density + coverage of N real vs N fake features. Providers: ``ref``
         (``fastgan.metrics.prdc``, tiled float64), ``triton`` and ``cuda`` (the fused kernels, CUDA), ``baseline-cdist-topk`` (whole float32 distance matrices with
         ``torch.cdist`` + ``topk``), ``baseline-prdc`` (the prdc package: float64 scikit-learn matrices).
         ``RADII_*``: the k-NN radii alone (``fastgan.ops.knn_radii``): ``ref``, ``triton``, ``cuda`` (fused kernels)
         and ``baseline-cdist-topk``.
         Target (H100): 50k x 50k x 4096 in < 5 s with < 4 GB extra memory.
metrics  ``EXTRACT_*``: feature extraction of uint8 256 px images, preprocessing included (``ref``: fastgan's
         extractor): ``inception-fid`` (the FID Inception v3 at 299 px; untrained weights when the weight file is
         not in ``$FASTGAN_WEIGHTS_DIR``: the same work) and ``efficientnet-lite0-offline`` (224 px, needs its pip
         package). Throughput in images per second (median ms is per batch).

Rows go to ``benchmarks/results/metrics.csv`` and ``knn.csv`` (throughput: calls per second).
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import CsvWriter, environment, measure_group, parser, refuse_interpreter  # noqa: E402

from fastgan import metrics  # noqa: E402

FD_PROVIDERS = ["ref", "baseline-scipy", "baseline-torchmetrics"]
KNN_PROVIDERS = ["ref", "triton", "cuda", "baseline-cdist-topk", "baseline-prdc"]
# (case, n_a, n_b, d): FDstats_ cases time the solve from (mu, sigma) only
FD_CASES = [("FD_d2048_n10000", 10000, 10000, 2048), ("FD_d2048_n500", 500, 10000, 2048),
            ("FDstats_d2048_n10000", 10000, 10000, 2048)]
KNN_CASES = {"cpu": [("PRDC_n2000_d512_k5", 2000, 512, 5), ("PRDC_n5000_d2048_k5", 5000, 2048, 5),
                     ("RADII_n5000_d2048_k5", 5000, 2048, 5)],
             "cuda": [("PRDC_n10000_d2048_k5", 10000, 2048, 5), ("PRDC_n10000_d4096_k3", 10000, 4096, 3),
                      ("PRDC_n50000_d4096_k3", 50000, 4096, 3), ("RADII_n10000_d2048_k5", 10000, 2048, 5),
                      ("RADII_n50000_d4096_k3", 50000, 4096, 3)]}
# (case, extractor, batch)
EXTRACT_CASES = {"cpu": [("EXTRACT_inception-fid_B8", "inception-fid", 8),
                         ("EXTRACT_efficientnet-lite0_B32", "efficientnet-lite0-offline", 32)],
                 "cuda": [("EXTRACT_inception-fid_B128", "inception-fid", 128),
                          ("EXTRACT_efficientnet-lite0_B256", "efficientnet-lite0-offline", 256)]}
# benchmarks/run_all.py: every case
RUN_ALL_ARGS: list = []


def features(n: int, d: int, seed: int, device: str, shift: float = 0.0) -> torch.Tensor:
    """Non-negative features with a decaying spectrum, like Inception pool3 (float32, as extractors emit)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(d, d, generator=g) / d**0.5
    z = torch.randn(n, d, generator=g) * torch.linspace(2.0, 0.05, d)
    return ((z @ basis).abs() + shift).to(device)


def _fd_stats_closure(prov: str, a: torch.Tensor, b: torch.Tensor):
    (m1, s1), (m2, s2) = metrics.mean_cov(a), metrics.mean_cov(b)
    if prov == "ref":
        return lambda: metrics.frechet_distance(m1, s1, m2, s2)
    if prov == "baseline-scipy":
        import scipy.linalg

        n1, n2, c1, c2 = (t.cpu().numpy() for t in (m1, m2, s1, s2))
        return lambda: float(((n1 - n2) ** 2).sum() + np.trace(c1) + np.trace(c2)
                             - 2 * np.trace(np.real(scipy.linalg.sqrtm(c1 @ c2))))
    if prov == "baseline-torchmetrics":
        from torchmetrics.image.fid import _compute_fid

        return lambda: float(_compute_fid(m1, s1, m2, s2))
    raise ValueError(prov)


def _fd_closure(prov: str, a: torch.Tensor, b: torch.Tensor):
    if prov == "ref":
        return lambda: metrics.fid_from_features(a, b)
    if prov == "baseline-scipy":
        import scipy.linalg

        an, bn = a.double().cpu().numpy(), b.double().cpu().numpy()

        def scipy_fd():
            m1, m2 = an.mean(0), bn.mean(0)
            s1, s2 = np.cov(an, rowvar=False), np.cov(bn, rowvar=False)
            root = scipy.linalg.sqrtm(s1 @ s2)
            return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(root)))
        return scipy_fd
    if prov == "baseline-torchmetrics":
        from torchmetrics.image.fid import _compute_fid

        def tm_fd():
            return float(_compute_fid(*metrics.mean_cov(a), *metrics.mean_cov(b)))
        return tm_fd
    raise ValueError(prov)


def _cdist_topk_prdc(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict:
    rr = torch.cdist(real, real).topk(k + 1, largest=False).values[:, k]
    fr = torch.cdist(fake, fake).topk(k + 1, largest=False).values[:, k]
    d = torch.cdist(real, fake)
    inside = d < rr[:, None]
    return {"precision": inside.any(0).float().mean().item(), "recall": (d < fr[None, :]).any(1).float().mean().item(),
            "density": inside.sum().item() / (k * fake.shape[0]),
            "coverage": (d.min(1).values < rr).float().mean().item()}


def _radii_closure(prov: str, real: torch.Tensor, k: int):
    from fastgan import ops

    if prov in ("ref", "triton", "cuda"):
        return lambda: ops.knn_radii(real, k, impl=prov)
    if prov == "baseline-cdist-topk":
        return lambda: torch.cdist(real, real).topk(k + 1, largest=False).values[:, k]
    return None


def _knn_closure(prov: str, real: torch.Tensor, fake: torch.Tensor, k: int):
    if prov in ("ref", "triton", "cuda"):
        return lambda: metrics.prdc(real, fake, k, impl=prov)
    if prov == "baseline-cdist-topk":
        return lambda: _cdist_topk_prdc(real, fake, k)
    if prov == "baseline-prdc":
        from prdc import compute_prdc

        rn, fn_ = real.double().cpu().numpy(), fake.double().cpu().numpy()
        return lambda: compute_prdc(rn, fn_, k)
    return None


def _extract_closure(name: str, batch: int, device: str):
    """Extraction of one batch of uint8 256 px images (preprocessing included)."""
    from fastgan.metrics.extractors import FeatureExtractor, get_extractor

    if name == "inception-fid":
        try:
            ext = get_extractor(name, device=device)
        except FileNotFoundError:  # no weight file here: untrained weights do the same work
            from fastgan.metrics.inception import FIDInceptionV3

            ext = FeatureExtractor(FIDInceptionV3(), name="inception-fid-untrained", dim=2048, input_size=299,
                                   protocol="pytorch-fid").to(device).eval()
    else:
        ext = get_extractor(name, device=device)
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, generator=g).to(device)
    return lambda: ext(imgs)


def _missing(prov: str, device: str = "cpu") -> str | None:
    if prov in ("triton", "cuda"):
        from fastgan import ops

        return ops.why_unavailable("knn_radii", prov, device)
    mod = {"baseline-scipy": "scipy", "baseline-torchmetrics": "torchmetrics", "baseline-prdc": "prdc"}.get(prov)
    if mod is None:
        return None
    try:
        __import__(mod)
    except ImportError:
        return f"{mod} is not installed"
    return None


def main(argv=None) -> int:
    refuse_interpreter()
    p = parser(__doc__.splitlines()[0], FD_PROVIDERS + KNN_PROVIDERS[1:])
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible")
    providers = args.providers.split(",")
    budget = args.budget if args.budget is not None else (1.0 if device == "cuda" else 2.0)
    wanted = [s for s in args.cases.split(",") if s]

    def chosen(case: str) -> bool:
        return not wanted or any(s in case for s in wanted)

    plan = [("metrics", c, pr) for c, *_ in FD_CASES if chosen(c) for pr in providers if pr in FD_PROVIDERS]
    plan += [("knn", c, pr) for c, *_ in KNN_CASES[device] if chosen(c) for pr in providers if pr in KNN_PROVIDERS]
    plan += [("metrics", c, "ref") for c, *_ in EXTRACT_CASES[device] if chosen(c) and "ref" in providers]
    if args.dry_run:
        for fam, case, prov in plan:
            print(f"{fam:8s} {case:24s} {prov}")
        print(f"{len(plan)} measurements planned")
        return 0
    writer = CsvWriter(args.out, environment(device))
    skipped: dict[str, str] = {}
    times: dict[tuple, float] = {}
    print(f"{'family':8s} {'case':24s} {'provider':22s} {'median ms':>10s}")
    groups: dict[tuple, dict] = {}
    for fam, case, prov in plan:
        groups.setdefault((fam, case), {})[prov] = None
    for (fam, case), provs in groups.items():
        if case.startswith("EXTRACT"):
            _, ext_name, batch = next(c for c in EXTRACT_CASES[device] if c[0] == case)
            try:
                fn = _extract_closure(ext_name, batch, device)
            except (ImportError, FileNotFoundError, ValueError) as exc:
                skipped[case] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                continue
            t = measure_group({"ref": (fn, None)}, device, budget, min_reps=2)["ref"]
            if isinstance(t, Exception):
                skipped[case] = f"{type(t).__name__}: {t}".splitlines()[0]
                continue
            writer.write(fam, case, "ref", "fp32", "fwd", t, batch * 1e3 / t.median_ms, "img/s")
            print(f"{fam:8s} {case:24s} {'ref':22s} {t.median_ms:10.1f}  ({batch * 1e3 / t.median_ms:.1f} img/s)",
                  flush=True)
            continue
        if fam == "metrics":
            _, na, nb, d = next(c for c in FD_CASES if c[0] == case)
            a, b = features(na, d, 0, device), features(nb, d, 1, device, shift=0.05)
            closure = _fd_stats_closure if case.startswith("FDstats") else _fd_closure
            make = lambda prov: closure(prov, a, b)  # noqa: E731
        else:
            _, n, d, k = next(c for c in KNN_CASES[device] if c[0] == case)
            real, fake = features(n, d, 2, device), features(n, d, 3, device, shift=0.05)
            if case.startswith("RADII"):
                make = lambda prov: _radii_closure(prov, real, k)  # noqa: E731
            else:
                make = lambda prov: _knn_closure(prov, real, fake, k)  # noqa: E731
        closures = {}
        for prov in provs:
            why = _missing(prov, device)
            if why:
                skipped[prov] = why
                continue
            fn = make(prov)
            if fn is not None:
                closures[prov] = (fn, None)
        for prov, t in measure_group(closures, device, budget, min_reps=2).items():
            if isinstance(t, Exception):
                skipped[f"{case}/{prov}"] = f"{type(t).__name__}: {t}".splitlines()[0]
                continue
            writer.write(fam, case, prov, "fp32", "fwd", t, 1e3 / t.median_ms, "calls/s")
            times[(fam, case, prov)] = t.median_ms
            print(f"{fam:8s} {case:24s} {prov:22s} {t.median_ms:10.1f}", flush=True)
    for k_, v in sorted(skipped.items()):
        print(f"skipped {k_}: {v}")
    print("\nspeed-up of fastgan (ref) over each baseline:")
    for (fam, case, prov), ms in sorted(times.items()):
        if prov.startswith("baseline") and (fam, case, "ref") in times:
            print(f"  {fam:8s} {case:24s} vs {prov:22s} {ms / times[(fam, case, 'ref')]:.2f}x")
    print(f"results appended to {writer.path('metrics')} and {writer.path('knn')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

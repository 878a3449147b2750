"""Benchmark of the vision backbones' input preprocessing (family ``train``): fused vs unfused, images per second.

What one vision-aided backbone does to G's images on every call: DiffAugment (``--policy``, default
color,translation,cutout, per-sample parameters drawn from keys), then x * 0.5 + 0.5, area resize to 224 and
(x - mean) / std. Providers:

* ``ref``: the unfused composition ``preprocess(diffaugment(x, policy, keys), 224)`` (what backbones run without the
  fused op);
* ``compile``: ``torch.compile`` of that composition (opt-in: ``--providers ...,compile``; compiling takes minutes on a
  small CPU);
* ``cpp`` / ``cuda`` / ``triton``: ``fastgan.ops.vision_preprocess(x, diffaugment_params(keys, policy, H, W), 224,
  impl=...)``, one kernel pair.

Both sides draw the parameters from the keys inside the timed call. Cases ``preprocess_R{res}to{size}_B{batch}``
(input 64 and 256 px by default, ``--res``; ``preprocess_noaug_...`` for ``--policy none``, which times the plain
resize + normalise that backbones run on un-augmented images, and ``preprocess_<ops>_...`` for other policies),
modes ``fwd`` (the training forward: input requires grad), ``bwd`` and ``fwdbwd``; the row's ``throughput`` is
img/s (batch / median time), its dtype fp32 (``--dtypes fp32,bf16`` on CUDA).
Rows go to ``benchmarks/results/train.csv`` with the other img/s rows of the family. Providers that cannot run on the
device (``cuda``/``triton`` on a CPU-only machine) are reported as unavailable, with the reason, and not written.

    python benchmarks/bench_preprocess.py [--device cpu|cuda] [--res 64,256] [--size 224] [--batch 16]
                                          [--policy color,translation,cutout] [--providers ref,cpp,cuda,triton]
                                          [--modes fwd,bwd,fwdbwd] [--budget S] [--out DIR] [--dry-run]
"""
from __future__ import annotations

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import (DTYPES, CsvWriter, environment, measure_group, mode_closures, parser,  # noqa: E402
                               refuse_interpreter)

from fastgan import ops  # noqa: E402
from fastgan.nn.vision.backbones import CLIP_MEAN, CLIP_STD, preprocess  # noqa: E402
from fastgan.train import rng  # noqa: E402
from fastgan.train.augment import diffaugment, diffaugment_params  # noqa: E402

FAMILY = "train"
PROVIDERS = ["ref", "cpp", "cuda", "triton"]
OPTIONAL = ["compile"]
RESOLUTIONS = [64, 256]
DEFAULT_POLICY = "color,translation,cutout"
RUN_ALL_ARGS: list = []  # the default case list is the full one


def case_name(res: int, size: int, batch: int, policy: str) -> str:
    """``preprocess[_<policy tag>]_R{res}to{size}_B{batch}``; the default policy has no tag."""
    names = [n.strip().lower() for n in policy.split(",") if n.strip() and n.strip().lower() != "none"]
    tag = "" if names == DEFAULT_POLICY.split(",") else ("_noaug" if not names else "_" + "+".join(names))
    return f"preprocess{tag}_R{res}to{size}_B{batch}"


def _unavailable(provider: str, device: str):
    if provider in ("ref", "compile"):
        return None
    return ops.why_unavailable("vision_preprocess", provider, device)


def _forward(provider: str, x: torch.Tensor, keys: torch.Tensor, policy: str, size: int):
    h, w = x.shape[2:]
    if provider in ("ref", "compile"):
        def unfused(a):
            return preprocess(diffaugment(a, policy, keys), size, CLIP_MEAN, CLIP_STD)
        fn = torch.compile(unfused) if provider == "compile" else unfused
        return lambda: fn(x)
    return lambda: ops.vision_preprocess(x, diffaugment_params(keys, policy, h, w), size, CLIP_MEAN, CLIP_STD,
                                         impl=provider)


def main(argv=None) -> int:
    refuse_interpreter()
    p = parser(__doc__.splitlines()[0], PROVIDERS)
    p.add_argument("--res", default=",".join(map(str, RESOLUTIONS)), help="comma list of input sizes")
    p.add_argument("--size", type=int, default=224, help="backbone input size")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--policy", default=DEFAULT_POLICY, help="DiffAugment policy ('none': no augmentation)")
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible")
    try:
        res_list = [int(r) for r in args.res.split(",") if r.strip()]
    except ValueError:
        raise SystemExit(f"--res must be a comma list of integers, got {args.res!r}") from None
    if not res_list or min(res_list) < 1 or args.size < 1 or args.batch < 1:
        raise SystemExit("--res, --size and --batch must be positive")
    diffaugment_params(torch.zeros(1, dtype=torch.int64), args.policy, 8, 8)  # validates the policy
    providers = [s for s in args.providers.split(",") if s]
    bad = [s for s in providers if s not in PROVIDERS + OPTIONAL]
    if bad:
        raise SystemExit(f"unknown providers {bad}; choose from {PROVIDERS + OPTIONAL}")
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in ("fwd", "bwd", "fwdbwd") for m in modes):
        raise SystemExit(f"--modes must be a comma list of fwd, bwd, fwdbwd, got {args.modes!r}")
    dtypes = (args.dtypes or "fp32").split(",")
    budget = args.budget if args.budget is not None else (0.5 if device == "cuda" else 2.0)
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise SystemExit(f"unknown dtypes {bad}; choose from {list(DTYPES)}")
    cases = [(r, dt) for r in res_list for dt in dtypes
             if not args.cases or any(s in case_name(r, args.size, args.batch, args.policy)
                                      for s in args.cases.split(","))]
    plan = [(r, dt, m, pr) for r, dt in cases for m in modes for pr in providers]
    if args.dry_run:
        for r, dt, m, pr in plan:
            why = _unavailable(pr, device)
            print(f"{case_name(r, args.size, args.batch, args.policy)} {dt:5s} {m:7s} {pr:8s}"
                  + (f" unavailable: {why}" if why else ""))
        print(f"{len(plan)} measurements planned")
        return 0
    writer = CsvWriter(args.out, environment(device))
    skipped: dict = {}
    keys = rng.sample_keys(rng.derive(0, 1), range(args.batch), device=device)
    print(f"{'case':30s} {'dtype':5s} {'mode':7s} {'provider':8s} {'median ms':>10s} {'img/s':>10s}")
    rates: dict = {}
    for r, dt in cases:
        case = case_name(r, args.size, args.batch, args.policy)
        g = torch.Generator().manual_seed(r)
        x = (torch.rand(args.batch, 3, r, r, generator=g) * 2 - 1).to(device=device, dtype=DTYPES[dt])
        x.requires_grad_(True)
        for mode in modes:
            closures = {}
            for prov in providers:
                why = _unavailable(prov, device)  # an unsupported dtype raises in the call: reported below
                if why:
                    skipped[prov] = why
                    continue
                closures[prov] = mode_closures(_forward(prov, x, keys, args.policy, args.size), [x], mode)
            for prov, t in measure_group(closures, device, budget).items():
                if isinstance(t, Exception):
                    skipped[f"{case}/{dt}/{mode}/{prov}"] = f"{type(t).__name__}: {t}".splitlines()[0]
                    continue
                ips = args.batch / (t.median_ms * 1e-3)
                writer.write(FAMILY, case, prov, dt, mode, t, ips, "img/s")
                rates[(case, dt, mode, prov)] = ips
                print(f"{case:30s} {dt:5s} {mode:7s} {prov:8s} {t.median_ms:10.3f} {ips:10.1f}", flush=True)
    for k, v in sorted(skipped.items()):
        print(f"unavailable {k}: {v}")
    ups = [(k, v / rates[k[:3] + ("ref",)]) for k, v in sorted(rates.items())
           if k[3] != "ref" and k[:3] + ("ref",) in rates]
    if ups:
        print("\nspeed-up over the unfused reference (img/s ratio):")
        for (case, dt, mode, prov), u in ups:
            print(f"  {case:30s} {dt:5s} {mode:7s} {prov:8s} {u:.2f}x")
    print(f"results appended to {writer.path(FAMILY)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

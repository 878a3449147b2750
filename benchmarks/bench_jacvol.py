"""Benchmark of MaGNET's Jacobian log-volume (family ``jacvol``): latents per second, and its two ops.

End to end (mode ``e2e``, unit ``latent/s``): the top-30 log singular values of the 128-row projected Jacobian for
a batch of latents of fastgan's StyleGAN2-style :class:`~fastgan.nn.Generator` (noise_mode const), cases
``G{res}_B{batch}_P{proj}_{cfg}``. Every provider processes the same batch, so times compare directly:

* ``ref`` / ``cpp`` / ``cuda`` / ``triton``: :func:`fastgan.sampling.jacobian_log_singular_values` with that
  ``impl`` for ``random_projection`` and ``log_singular_values`` (the generator keeps its own default dispatch)
  and its default ``direction="auto"``: forward mode (d = 64 JVPs, the generator's written-out
  ``forward_tangents``) for the CPU ``tiny`` preset, where d < proj, and reverse mode (proj batched VJPs) for
  ``stylegan2``, where d = 512;
* ``baseline-naive``: the original approach re-implemented — a dense P (proj × D, made once, untimed), then per
  latent the autograd Jacobian of P·vec(G(z)) (``torch.autograd.functional.jacobian``: proj backward passes one
  after the other) and ``torch.linalg.svdvals``;
* ``baseline-floor``: what the work cannot go below with reverse mode — one forward of the batch and proj backward
  passes of it (fixed random cotangents, no projection, no eigensolve). "best vs baseline-floor" in the report is
  therefore <= 1: the target "within 1.3x of the floor" means >= 0.77x there.

Op level (mode ``fwd``): ``LSV_B256_k128_d512`` (``log_singular_values`` of 256 matrices 128 x 512, unit mat/s)
and ``RP_R{res}_B{batch}_k128`` / ``RPT_...`` (``random_projection`` of (B, 3, res, res) images to 128 values and
its transpose, unit GB/s of the image side), per available impl.

Generators: on CUDA ``stylegan2`` (z = w = 512, 8-layer mapping, channel base 16384 / max 512: the paper256
networks) with batch 16 (the official ``get_svds.py`` default); on CPU the ``tiny`` preset (z = w = 64, channel
base 1024 / max 64) with batch 2, so that the per-latent baseline finishes; the case name says which.
Targets: H100 >= 10x baseline-naive at 256 px and within 1.3x of baseline-floor; CPU >= 3x baseline-naive on a
small generator.

    python benchmarks/bench_jacvol.py [--device cpu|cuda] [--res 64,256] [--batch B] [--cfg tiny|stylegan2]
                                      [--providers ref,cpp,...] [--cases G64,LSV,RP] [--budget S] [--dry-run]
"""
from __future__ import annotations

import math
import pathlib
import sys
import warnings

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import CsvWriter, environment, measure_group, parser, refuse_interpreter  # noqa: E402

from fastgan import ops  # noqa: E402
from fastgan.nn.networks import Generator  # noqa: E402
from fastgan.sampling import jacobian_log_singular_values  # noqa: E402

FAMILY = "jacvol"
KERNELS = ["ref", "cpp", "cuda", "triton"]
PROVIDERS = KERNELS + ["baseline-naive", "baseline-floor"]
# benchmarks/run_all.py: both resolutions of the issue (the device picks the generator preset and batch)
RUN_ALL_ARGS = ["--res", "64,256"]
CFGS = {
    "tiny": dict(z_dim=64, w_dim=64, mapping_layers=2, channel_base=1024, channel_max=64),
    "stylegan2": dict(z_dim=512, w_dim=512, mapping_layers=8, channel_base=16384, channel_max=512),
}
DEFAULTS = {"cuda": ("stylegan2", 16), "cpu": ("tiny", 2)}  # (cfg, batch)
TOP_K = 30
LSV_SHAPE = (256, 128, 512)


def _reason(provider: str, op: str, device: str):
    if provider.startswith("baseline"):
        return None
    if provider == "triton" and device == "cpu":
        return "Triton runs on CPU only under its interpreter (timings meaningless)"
    return ops.why_unavailable(op, provider, device)


def make_generator(cfg: str, res: int, device: str) -> Generator:
    torch.manual_seed(0)
    return Generator(img_resolution=res, img_channels=3, **CFGS[cfg]).eval().requires_grad_(False).to(device)


def naive_log_sv(G, z: torch.Tensor, P: torch.Tensor, top_k: int = TOP_K) -> torch.Tensor:
    """The original approach: per latent, the autograd Jacobian of P·vec(G(z)) (one backward per row), then SVD."""
    out = []
    for zi in z:
        jac = torch.autograd.functional.jacobian(lambda t: P @ G(t[None], noise_mode="const").flatten(), zi)
        out.append(torch.linalg.svdvals(jac.double())[:top_k].log())
    return torch.stack(out)


def floor_closure(G, z: torch.Tensor, proj: int):
    """One forward of the batch and ``proj`` backward passes through it (the reverse-mode floor)."""
    g = torch.Generator(device=z.device).manual_seed(1)

    def run():
        x = z.clone().requires_grad_(True)
        y = G(x, noise_mode="const", force_fp32=True)
        cot = torch.randn(y.shape, generator=g, device=y.device)
        for _ in range(proj):
            torch.autograd.grad(y, x, cot, retain_graph=True)
    return run


def _sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def e2e_closures(providers, G, z, proj: int, device: str) -> dict:
    fns, outputs = {}, {}
    D = 3 * G.img_resolution ** 2
    top_k = min(TOP_K, proj, G.z_dim)
    for prov in providers:
        if prov == "baseline-naive":
            from fastgan.ops import random_projection

            P = random_projection(torch.eye(proj, device=device), proj, 0, True, shape=D)  # dense, made once

            def run(P=P):
                outputs["baseline-naive"] = naive_log_sv(G, z, P, top_k)
                _sync(device)
        elif prov == "baseline-floor":
            inner = floor_closure(G, z, proj)

            def run(inner=inner):
                inner()
                _sync(device)
        else:
            def run(prov=prov):
                outputs[prov] = jacobian_log_singular_values(G, z, proj_dim=proj, top_k=top_k, seed=0,
                                                             batch_size=z.shape[0], impl=prov)
                _sync(device)
        fns[prov] = (run, None)
    return fns, outputs


def main(argv=None) -> int:
    refuse_interpreter()
    p = parser(__doc__.splitlines()[0], PROVIDERS)
    p.add_argument("--res", default="64,256", help="comma list of generator resolutions")
    p.add_argument("--batch", type=int, default=None, help="latents per e2e call (default 16 on CUDA, 2 on CPU)")
    p.add_argument("--cfg", choices=sorted(CFGS), default=None,
                   help="generator preset (default stylegan2 on CUDA, tiny on CPU)")
    p.add_argument("--proj-dim", type=int, default=128, help="rows of the projection")
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible")
    cfg = args.cfg or DEFAULTS[device][0]
    batch = args.batch or DEFAULTS[device][1]
    try:
        res_list = [int(r) for r in args.res.split(",") if r.strip()]
    except ValueError:
        p.error(f"--res takes a comma list of integers, got {args.res!r}")
    if batch < 1 or args.proj_dim < 1 or not res_list:
        p.error("--batch, --proj-dim and --res must be positive")
    providers = [s.strip() for s in args.providers.split(",") if s.strip()]
    bad = [s for s in providers if s not in PROVIDERS]
    if bad:
        p.error(f"--providers: unknown {bad}; choose from {','.join(PROVIDERS)}")
    budget = args.budget if args.budget is not None else (2.0 if device == "cuda" else 1.0)
    want = [s for s in args.cases.split(",") if s]
    proj = args.proj_dim

    plan = []  # (kind, case, providers, extra)
    for res in res_list:
        case = f"G{res}_B{batch}_P{proj}_{cfg}"
        plan.append(("e2e", case, [pr for pr in providers if not _reason(pr, "log_singular_values", device)], res))
    b, k, d = LSV_SHAPE
    plan.append(("lsv", f"LSV_B{b}_k{k}_d{d}",
                 [pr for pr in providers if pr in KERNELS and not _reason(pr, "log_singular_values", device)], None))
    rp_res = max(res_list)
    for tr in (False, True):
        plan.append(("rpt" if tr else "rp", f"{'RPT' if tr else 'RP'}_R{rp_res}_B{batch}_k{proj}",
                     [pr for pr in providers if pr in KERNELS and not _reason(pr, "random_projection", device)],
                     rp_res))
    plan = [x for x in plan if not want or any(w in x[1] for w in want)]
    skipped = {pr: _reason(pr, "log_singular_values", device) for pr in providers}
    for pr, why in skipped.items():
        if why:
            print(f"skipped {pr}: {why}")
    if args.dry_run:
        for kind, case, provs, _ in plan:
            print(f"{case:28s} {','.join(provs)}")
        print(f"{sum(len(x[2]) for x in plan)} measurements planned")
        return 0

    writer = CsvWriter(args.out, environment(device))
    warnings.filterwarnings("ignore", category=ops.FastganFallbackWarning)
    print(f"{'case':28s} {'provider':15s} {'median ms':>10s} {'throughput':>12s}")
    for kind, case, provs, res in plan:
        if not provs:
            continue
        if kind == "e2e":
            G = make_generator(cfg, res, device)
            z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
            fns, outputs = e2e_closures(provs, G, z, proj, device)
            work, unit = batch, "latent/s"
        elif kind == "lsv":
            jac = torch.randn(*LSV_SHAPE, generator=torch.Generator().manual_seed(0)).to(device)
            lsv_k = min(TOP_K, *LSV_SHAPE[1:])
            fns = {pr: ((lambda pr=pr: (ops.log_singular_values(jac, lsv_k, impl=pr), _sync(device))), None)
                   for pr in provs}
            outputs, work, unit = {}, LSV_SHAPE[0], "mat/s"
        else:
            D = 3 * res * res
            x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(0)).to(device)
            y = torch.randn(batch, proj, generator=torch.Generator().manual_seed(1)).to(device)
            if kind == "rp":
                fns = {pr: ((lambda pr=pr: (ops.random_projection(x, proj, 0, impl=pr), _sync(device))), None)
                       for pr in provs}
            else:
                fns = {pr: ((lambda pr=pr: (ops.random_projection(y, proj, 0, True, shape=(3, res, res), impl=pr),
                                            _sync(device))), None) for pr in provs}
            outputs, work, unit = {}, batch * D * 4 / 1e9, "GB/s"
        res_t = measure_group(fns, device, budget_s=budget, min_reps=2)
        for pr, t in res_t.items():
            if isinstance(t, Exception):
                print(f"{case:28s} {pr:15s} failed: {type(t).__name__}: {str(t).splitlines()[0]}")
                continue
            thr = work / (t.median_ms * 1e-3)
            writer.write(FAMILY, case, pr, "fp32", "e2e" if kind == "e2e" else "fwd", t, thr, unit)
            print(f"{case:28s} {pr:15s} {t.median_ms:10.2f} {thr:12.4g} {unit}", flush=True)
        if kind == "e2e" and "baseline-naive" in outputs:
            for pr, got in outputs.items():
                if pr != "baseline-naive":
                    err = (got.cpu() - outputs["baseline-naive"].cpu()).abs().max().item()
                    print(f"  check: {pr} vs baseline-naive, max |delta log sigma| = {err:.2e}")
                    if not math.isfinite(err) or err > 1e-2:
                        print(f"  WARNING: {pr} disagrees with the baseline on {case}")
    print(f"results appended to {writer.path(FAMILY)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

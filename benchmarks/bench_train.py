"""Benchmark of the full StyleGAN2 training step (family ``train``): images per second of ``Trainer.run_step``.

One measurement times whole training steps of :class:`fastgan.train.loop.Trainer` in the loop's real schedule:
Gmain, lazy path-length regularisation (Greg, every ``pl_interval`` steps), Dmain and lazy R1 (Dreg, every
``r1_interval`` steps), the Adam steps, G_ema and the DiffAugment/ADA work. The measured steps are a whole number
of lazy-regularisation cycles (``lcm`` of the active intervals: 16 steps for the presets), after warm-up steps
(which include step 0, where every phase runs, so cudnn.benchmark and Triton autotuning are done before timing).
Reals are random uint8 images already on the device (an in-memory stream): data loading is not timed.

Cases ``R{res}_B{batch}_{cfg}`` (plus ``_{aug}`` when ``--aug`` is not diffaug). Providers: ``ref`` (every fastgan
op on its reference, ``FASTGAN_IMPL=ref``) and ``auto`` (the default dispatch; the row is recorded under the impl
that ``auto`` chose for ``modulated_conv2d`` on the device, e.g. ``cuda``, ``triton`` or ``cpp``, from
:func:`fastgan.ops.dispatch_report`); ``cpp``/``cuda``/``triton`` force one impl. Rows: mode ``e2e``, dtype ``mixed``
(the preset's fp16 layers on CUDA) or ``fp32``; ``median_ms``/``p20_ms``/``p80_ms`` are milliseconds per step,
averaged over each lazy-regularisation cycle, quantiles over the cycles; ``throughput`` is img/s (batch / median
step time). sec/kimg (= median_ms / batch) is printed, not written: ``benchmarks/report.py`` renders a family as a
throughput table only when all its rows are ``img/s``, so a second unit in ``train.csv`` would break that table.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the measured steps, absolute (weights, Adam state and
activations; what StyleGAN2-ADA's ``gpumem`` reports); on CPU left empty, as in every family.

Timing: CUDA providers run one after the other (wall clock with a synchronize around each step; a cycle of
training steps is far too long for ``do_bench``); on CPU the providers' steps run round-robin, one step each in
turn, so that machine-load drift hits them alike (the convention of ``benchmarks/common.py``).

CPU: a paper256 step takes ~30 s at 64 px with batch 4 on 2 cores (a 16-step cycle ~8 min per provider), so on
``--device cpu`` the default preset is ``tiny`` at batch 8 (the case name says so); pass ``--cfg``/``--batch`` to
time the full-size networks anyway. ``--quick`` is the smoke test: 16 px, ``tiny``, batch 8, 1 warm-up + 2 steps.

StyleGAN2-ADA's published sec/kimg (one V100) is printed next to the results for context; it is not written to the
CSV (we did not measure it) and its settings differ (see ``STYLEGAN2_ADA_PUBLISHED``).

Transfer steps (``--transfer``): the AdaFM recipe's training step (``fastgan transfer --method adafm``: front of
mapping + blocks <= 16 px trains, transferred blocks frozen with gamma/beta training, i.e. after the unfreeze point,
FreezeD 1) with 0, 1, 2 and 3 vision-aided backbones (``--vision-counts``), cases
``R{res}_B{batch}_{cfg}_adafm_vis{N}``. The backbones are ones that need no downloaded file (see
``VISION_SETS``): ``efficientnet-lite0`` (real ImageNet weights from its pip package, 224 px input) and the seeded
``random`` test backbone in its multilevel and pooled forms (32 px input, so cheap). CLIP ViT-B/32 and DINO
ViT-B/16 need their weight files (``--vision-weights``/``$FASTGAN_WEIGHTS_DIR``), so they are not in the default
sets; time them with ``--vision-set clip-vit-b32+dino-vit-b16 --vision-weights clip-vit-b32=PATH ...``. The weights
of a timed transfer step are the preset's random initialisation: the cost does not depend on them.

    python benchmarks/bench_train.py [--res 64,256] [--batch 32] [--cfg paper256] [--steps N] [--warmup N]
                                     [--providers ref,auto] [--device cpu|cuda] [--csv PATH] [--quick] [--dry-run]
                                     [--transfer [--vision-counts 0,1,2,3] [--vision-set A+B] [--vision-weights N=P]]
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Optional

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.common import CsvWriter, Timing, _quantile, environment, parser, refuse_interpreter  # noqa: E402

from fastgan import ops  # noqa: E402
from fastgan.train.distributed import Dist  # noqa: E402
from fastgan.train.options import CFG_SPECS, TrainOptions, resolve  # noqa: E402

FAMILY = "train"
PROVIDERS = ["ref", "auto"]
FORCED = ("ref", "cpp", "cuda", "triton")  # values of FASTGAN_IMPL a provider may force
KEY_OP = "modulated_conv2d"  # the op whose auto choice names the `auto` row
# benchmarks/run_all.py: the full GPU case list (paper256 at 64 and 256 px, batch 32); on a CPU-only machine the
# CPU defaults (tiny preset, batch 8, one 16-step cycle) bound it (7.6 min on a busy 2-core machine)
RUN_ALL_ARGS = ["--res", "64,256"]
DEFAULTS = {  # device -> (res, batch, cfg, steps in lazy-reg cycles, warm-up steps)
    "cuda": ("64,256", 32, "paper256", 3, 4),
    "cpu": ("64,256", 8, "tiny", 1, 2),
}
QUICK = dict(res="16", batch=8, cfg="tiny", steps=2, warmup=1)
# --transfer: the vision-aided backbones timed with N backbones (none needs a downloaded weight file)
VISION_SETS = {0: None, 1: "efficientnet-lite0", 2: "efficientnet-lite0+random",
               3: "efficientnet-lite0+random+random:pool"}

# StyleGAN2-ADA's published training speed, for context only (not measured by us). Read from the README of
# NVlabs/stylegan2-ada-pytorch (commit d72cc7d041b42ec8e806021a205ed9349f87c6a4), section "Expected training
# time", rows "GPUs = 1"; the batch per resolution is derived from train.py's cfg=auto rule
# mb = max(min(gpus * min(4096 // res, 32), 64), gpus).
STYLEGAN2_ADA_PUBLISHED = {
    "source": "NVlabs/stylegan2-ada-pytorch README.md, 'Expected training time' (commit d72cc7d), 1 GPU rows",
    "gpu": "1x NVIDIA Tesla V100",
    "settings": "--cfg=auto --aug=ada --metrics=fid50k_full; sec/kimg as reported in log.txt (range of variation)",
    "sec_per_kimg": {128: (12.8, 13.7), 256: (21.6, 24.2), 512: (72.5, 74.9), 1024: (154.3, 161.6)},
    "gpu_mem_gb": {128: 7.2, 256: 5.0, 512: 7.6, 1024: 8.1},
    "batch": {128: 32, 256: 16, 512: 8, 1024: 4},
}


class _InMemoryStream:
    """What :class:`Trainer` needs from a data stream, with random uint8 reals made once on the device."""

    def __init__(self, resolution: int, channels: int = 3):
        self.resolution, self.channels, self.label_dim, self.name = resolution, channels, 0, "bench-random"

    def gen_labels(self, keys):
        return None

    def describe(self) -> dict:
        return {"kind": "benchmark", "name": self.name, "resolution": self.resolution, "channels": self.channels,
                "label_dim": 0}

    def grid_reals(self, count: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(1)
        return torch.randint(0, 256, (count, self.channels, self.resolution, self.resolution), generator=g,
                             dtype=torch.uint8)

    def reals(self, rounds: int, batch_gpu: int, device: torch.device) -> list:
        g = torch.Generator().manual_seed(2)
        empty = torch.zeros(batch_gpu, 0, device=device)
        return [(torch.randint(0, 256, (batch_gpu, self.channels, self.resolution, self.resolution), generator=g,
                               dtype=torch.uint8).to(device), empty) for _ in range(rounds)]


class _FileWriter(CsvWriter):
    """``CsvWriter`` that appends to one given file (``--csv PATH``) instead of ``<out>/<family>.csv``."""

    def __init__(self, file: pathlib.Path, env: dict):
        super().__init__(pathlib.Path(file).resolve().parent, env)
        self.file = pathlib.Path(file)

    def path(self, family: str) -> pathlib.Path:
        return self.file


@contextlib.contextmanager
def _impl_env(provider: str):
    """FASTGAN_IMPL for one provider (``auto`` = the default dispatch), restored afterwards."""
    old = os.environ.get("FASTGAN_IMPL")
    os.environ["FASTGAN_IMPL"] = provider
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FASTGAN_IMPL", None)
        else:
            os.environ["FASTGAN_IMPL"] = old


def cycle_steps(o: TrainOptions) -> int:
    """Steps after which the lazy-regularisation schedule repeats (lcm of the active intervals)."""
    c = 1
    if o.gamma > 0:
        c = math.lcm(c, o.r1_interval)
    if o.pl_weight > 0:
        c = math.lcm(c, o.pl_interval)
    return c


def case_name(res: int, batch: int, cfg: str, aug: str, vision: Optional[int] = None) -> str:
    """``R{res}_B{batch}_{cfg}[_{aug}]``, plus ``_adafm_vis{N}`` for a transfer step with N vision backbones."""
    return f"R{res}_B{batch}_{cfg}" + ("" if aug == TrainOptions.aug else f"_{aug}") + \
        ("" if vision is None else f"_adafm_vis{vision}")


def transfer_options(res: int, batch: int, cfg: str, aug: str, fp32: bool, vision: Optional[str],
                     weights: Optional[dict] = None) -> TrainOptions:
    """Resolved options of an AdaFM transfer step (gamma/beta already unfrozen) with the given backbones."""
    o = TrainOptions(data="benchmark", outdir="benchmark", cfg=cfg, resolution=res, batch=batch, aug=aug, fp32=fp32,
                     workers=0, progress=False, transfer="benchmark-source", method="adafm",
                     adafm_front_res=min(16, res // 2), adafm_unfreeze=0.0, vision_aided=vision,
                     vision_weights=(weights or None) if vision else None, vision_warmup=0.0 if vision else None)
    return resolve(o, data_resolution=res, world_size=1)


def _provider_reason(provider: str, device: str) -> Optional[str]:
    if provider in ("ref", "auto"):
        return None
    if device == "cpu" and provider == "triton":
        return "Triton runs on CPU only under its interpreter (timings meaningless)"
    return ops.why_unavailable(KEY_OP, provider, device)


def _auto_choice(device_type: str) -> tuple[Optional[str], dict]:
    """(impl auto chose for KEY_OP, {op: impl} for every op auto resolved on this device type)."""
    chosen = {k.rsplit("@", 1)[0]: v["chosen"] for k, v in ops.dispatch_report().items()
              if k.endswith(f"@{device_type}")}
    if KEY_OP in chosen:
        return chosen[KEY_OP], chosen
    names = set(chosen.values())
    return (names.pop() if len(names) == 1 else None), chosen


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Run:
    """One provider's trainer and its per-step times (``error`` set when it could not be built or stepped)."""

    def __init__(self, provider: str, opts: TrainOptions, device: torch.device, tmp: pathlib.Path):
        from fastgan.train.loop import Trainer

        self.provider, self.device = provider, device
        self.name = provider if provider != "auto" else None  # the provider column
        self.choices: dict = {}
        self.times_ms: list[float] = []
        self.peak_mb = float("nan")
        self.error: Optional[BaseException] = None
        self.trainer = self.reals = None
        try:
            stream = _InMemoryStream(opts.resolution)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(opts.seed)  # the same initial weights for every provider, as train() does
                self.trainer = Trainer(opts, Dist(rank=0, world_size=1, local_rank=0, device=device), stream, tmp,
                                       quiet=True)
            self.reals = stream.reals(opts.batch // opts.batch_gpu, opts.batch_gpu, device)
        except Exception as exc:  # noqa: BLE001 - reported per provider; the others go on
            self.error = exc

    def step(self, timed: bool) -> None:
        if self.error is not None:
            return
        try:
            with _impl_env(self.provider):
                _sync(self.device)
                t0 = time.perf_counter()
                self.trainer.run_step(self.reals)
                _sync(self.device)
                dt = (time.perf_counter() - t0) * 1e3
        except Exception as exc:  # noqa: BLE001
            self.error = exc
            return
        if timed:
            self.times_ms.append(dt)
        if self.provider == "auto" and self.name is None:
            self.name, self.choices = _auto_choice(self.device.type)

    def timing(self, cycle: int) -> Timing:
        """ms per step averaged over each whole cycle (or over all steps when fewer than one cycle ran)."""
        ts = self.times_ms
        per = [sum(ts[i:i + cycle]) / cycle for i in range(0, len(ts) - cycle + 1, cycle)] or [sum(ts) / len(ts)]
        return Timing(statistics.median(per), _quantile(per, 0.2), _quantile(per, 0.8), self.peak_mb)

    def close(self) -> None:
        self.trainer = self.reals = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _measure(providers: list[str], opts: TrainOptions, device: torch.device, warmup: int, steps: int,
             tmp: pathlib.Path, sequential: Optional[bool] = None) -> list[_Run]:
    """Warm-up and timed steps of every provider: one after the other on CUDA (stable timings, a clean peak-memory
    reading), round-robin one step each in turn on CPU."""
    cuda = device.type == "cuda"
    if sequential if sequential is not None else cuda:
        runs = []
        for prov in providers:
            run = _Run(prov, opts, device, tmp)
            for _ in range(warmup):
                run.step(timed=False)
            if cuda:
                _sync(device)
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(steps):
                run.step(timed=True)
            if cuda and run.error is None:
                run.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
            run.close()
            runs.append(run)
        return runs
    runs = [_Run(prov, opts, device, tmp) for prov in providers]
    for i in range(warmup + steps):
        for run in runs:
            run.step(timed=i >= warmup)
    for run in runs:
        run.close()
    return runs


def _published(res: int) -> str:
    p = STYLEGAN2_ADA_PUBLISHED
    if res not in p["sec_per_kimg"]:
        return f"{res} px: not in the table (it lists {', '.join(str(r) for r in p['sec_per_kimg'])} px)"
    lo, hi = p["sec_per_kimg"][res]
    return (f"{res} px: {lo}-{hi} sec/kimg ({1000 / hi:.0f}-{1000 / lo:.0f} img/s), batch {p['batch'][res]}, "
            f"GPU mem {p['gpu_mem_gb'][res]} GB")


def _published_range(res: int) -> str:
    r = STYLEGAN2_ADA_PUBLISHED["sec_per_kimg"].get(res)
    return f"{r[0]}-{r[1]}" if r else "n/a"


def _int_list(p, flag: str, text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        p.error(f"{flag} takes a comma list of integers, got {text!r}")
    if not vals:
        p.error(f"{flag} is empty")
    return vals


def main(argv=None) -> int:
    refuse_interpreter()
    p = parser(__doc__.splitlines()[0], PROVIDERS)
    p.add_argument("--res", default=None, help="comma list of resolutions (default 64,256)")
    p.add_argument("--batch", type=int, default=None, help="total batch (default 32 on CUDA, 8 on CPU)")
    p.add_argument("--cfg", default=None, choices=sorted(CFG_SPECS),
                   help="training preset (default paper256 on CUDA, tiny on CPU)")
    p.add_argument("--aug", default=TrainOptions.aug, choices=["diffaug", "ada", "none"])
    p.add_argument("--fp32", action="store_true", help="no fp16 layers (the preset's num_fp16_res set to 0)")
    p.add_argument("--steps", type=int, default=None,
                   help="measured steps, rounded up to whole lazy-regularisation cycles (default 3 cycles on CUDA, "
                        "1 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 4 on CUDA, 2 on CPU)")
    p.add_argument("--csv", type=pathlib.Path, default=None, help="append rows to this file instead of <out>/train.csv")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 16 px, cfg tiny, batch 8, 1 warm-up + 2 steps (not a whole cycle)")
    p.add_argument("--transfer", action="store_true",
                   help="time the AdaFM transfer step with vision-aided backbones instead of the plain step")
    p.add_argument("--vision-counts", default="0,1,2,3",
                   help="--transfer: numbers of vision backbones to time (keys of VISION_SETS)")
    p.add_argument("--vision-set", default=None, metavar="A+B",
                   help="--transfer: time this backbone set instead of --vision-counts (e.g. clip-vit-b32)")
    p.add_argument("--vision-weights", action="append", default=[], metavar="NAME=PATH",
                   help="--transfer: weight file of a backbone (repeatable)")
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible")
    if args.dtypes is not None:
        p.error("--dtypes does not apply to the train family: the precision is the preset's (use --fp32)")
    if args.modes not in ("fwd,bwd,fwdbwd", "e2e"):
        p.error("--modes does not apply to the train family: it times whole training steps (mode e2e)")
    d_res, d_batch, d_cfg, d_cycles, d_warmup = DEFAULTS[device]
    if args.quick:
        d_res, d_batch, d_cfg, d_warmup = QUICK["res"], QUICK["batch"], QUICK["cfg"], QUICK["warmup"]
    res_list = _int_list(p, "--res", args.res or d_res)
    batch = args.batch if args.batch is not None else d_batch
    cfg = args.cfg or d_cfg
    warmup = args.warmup if args.warmup is not None else d_warmup
    if batch < 1:
        p.error(f"--batch must be a positive integer, got {batch}")
    if warmup < 0:
        p.error(f"--warmup must be >= 0, got {warmup}")
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be a positive integer, got {args.steps}")
    providers = [s.strip() for s in args.providers.split(",") if s.strip()]
    bad = [s for s in providers if s not in ("auto",) + FORCED]
    if bad or not providers:
        p.error(f"--providers: unknown {bad or providers}; choose from auto,{','.join(FORCED)}")
    if args.budget is not None:
        print(f"note: --budget {args.budget} is not used by the train family (it times whole lazy-regularisation "
              "cycles; see --steps)")

    variants: list = [None]  # None: the plain step; else (count, backbones) of a transfer step
    weights = {}
    for item in args.vision_weights:
        k, sep, v = item.partition("=")
        if not sep or not k or not v:
            p.error(f"--vision-weights takes NAME=PATH, got {item!r}")
        weights[k] = v
    if args.transfer:
        if args.vision_set:
            variants = [(len(args.vision_set.split("+")), args.vision_set)]
        else:
            counts = _int_list(p, "--vision-counts", args.vision_counts)
            bad = [c for c in counts if c not in VISION_SETS]
            if bad:
                p.error(f"--vision-counts: no backbone set for {bad}; choose from {sorted(VISION_SETS)}")
            variants = [(c, VISION_SETS[c]) for c in counts]
    elif args.vision_set or args.vision_weights or args.vision_counts != "0,1,2,3":
        p.error("--vision-counts, --vision-set and --vision-weights need --transfer")

    plan = []  # (case, opts, cycle, steps)
    for res, variant in [(r, v) for r in res_list for v in variants]:
        try:
            if variant is None:
                o = resolve(TrainOptions(data="benchmark", outdir="benchmark", cfg=cfg, resolution=res, batch=batch,
                                         aug=args.aug, fp32=args.fp32, workers=0, progress=False),
                            data_resolution=res, world_size=1)
            else:
                o = transfer_options(res, batch, cfg, args.aug, args.fp32, variant[1], weights)
        except (ValueError, ImportError) as exc:
            p.error(f"R{res} B{batch} {cfg}: {exc}")
        name = case_name(res, batch, cfg, args.aug, None if variant is None else variant[0])
        if args.cases and not any(s in name for s in args.cases.split(",")):
            continue
        cycle = cycle_steps(o)
        if args.quick and args.steps is None:
            steps = QUICK["steps"]
        elif args.steps is None:
            steps = d_cycles * cycle
        elif args.quick:
            steps = args.steps
        else:
            steps = -(-args.steps // cycle) * cycle
            if steps != args.steps:
                print(f"note: --steps {args.steps} rounded up to {steps} (whole {cycle}-step lazy-regularisation "
                      "cycles)")
        plan.append((name, o, cycle, steps))
    dtype = lambda o: "mixed" if device == "cuda" and o.num_fp16_res > 0 else "fp32"  # noqa: E731
    if args.dry_run:
        for name, o, cycle, steps in plan:
            r1 = o.r1_interval if o.gamma > 0 else "-"
            pl = o.pl_interval if o.pl_weight > 0 else "-"
            for prov in providers:
                why = _provider_reason(prov, device)
                what = f"skipped: {why}" if why else \
                    f"warm-up {warmup} + {steps} steps (cycle {cycle}: R1 every {r1}, PL every {pl})"
                vis = f" [vision: {o.vision_aided}]" if o.vision_aided else ""
                print(f"{name:24s} {prov:7s} {dtype(o):5s} {what}{vis}")
        n = sum(1 for _ in plan for prov in providers if not _provider_reason(prov, device))
        print(f"{n} measurements planned")
        return 0

    env = environment(device)
    writer = _FileWriter(args.csv, env) if args.csv is not None else CsvWriter(args.out, env)
    skipped: dict[str, str] = {}
    results: dict[tuple[str, str], float] = {}
    dev = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")
    backends = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32)
    # the training loop's numerics (fastgan.train.loop._train): cudnn autotuning on, TF32 off
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    live = []
    for prov in providers:
        why = _provider_reason(prov, device)
        if why:
            skipped[prov] = why
        else:
            live.append(prov)
    print(f"{'case':24s} {'provider':8s} {'dtype':5s} {'ms/step':>9s} {'img/s':>9s} {'sec/kimg':>9s} "
          f"{'peak MB':>8s} {'ADA V100*':>11s}  steps")
    try:
        with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
            for name, o, cycle, steps in plan:
                written: set[str] = set()
                if o.method is not None:
                    print(f"  {name}: AdaFM transfer step, vision backbones: {o.vision_aided or 'none'}")
                for run in _measure(live, o, dev, warmup, steps, pathlib.Path(tmp)):
                    if run.error is not None or not run.times_ms:
                        err = run.error or RuntimeError("no timed steps")
                        skipped[f"{name}/{run.provider}"] = f"{type(err).__name__}: {err}".splitlines()[0]
                        continue
                    prov = run.name
                    if prov is None:
                        skipped[f"{name}/auto"] = "no fastgan op recorded an auto choice"
                        continue
                    if run.provider == "auto":
                        mixed = {k: v for k, v in run.choices.items() if v != prov}
                        print(f"  auto chose {prov} for {KEY_OP}" + (f"; other ops: {mixed}" if mixed else ""))
                    if prov in written:
                        skipped[f"{name}/{run.provider}"] = f"resolves to {prov!r}, already written for this case"
                        continue
                    t = run.timing(cycle)
                    ips = o.batch / (t.median_ms * 1e-3)
                    writer.write(FAMILY, name, prov, dtype(o), "e2e", t, ips, "img/s")
                    written.add(prov)
                    results[(name, prov)] = ips
                    peak = "" if math.isnan(t.peak_mem_mb) else f"{t.peak_mem_mb:.0f}"
                    print(f"{name:24s} {prov:8s} {dtype(o):5s} {t.median_ms:9.2f} {ips:9.1f} "
                          f"{t.median_ms / o.batch:9.2f} {peak:>8s} {_published_range(o.resolution):>11s}  "
                          f"{len(run.times_ms)}"
                          + ("" if len(run.times_ms) % cycle == 0 else f" (< one {cycle}-step cycle)"), flush=True)
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = backends
    for k, v in sorted(skipped.items()):
        print(f"skipped {k}: {v}")
    speedups = [f"  {c:24s} {prov:7s} {ips / results[(c, 'ref')]:.2f}x" for (c, prov), ips in results.items()
                if prov != "ref" and (c, "ref") in results]
    if speedups:
        print("\nspeed-up over ref (img/s ratio):")
        print("\n".join(speedups))
    pub = STYLEGAN2_ADA_PUBLISHED
    print(f"\n* context, not measured here: StyleGAN2-ADA's published sec/kimg on {pub['gpu']} ({pub['source']}; "
          f"{pub['settings']}):")
    for res in sorted({o.resolution for _, o, _, _ in plan}):
        print(f"  {_published(res)}")
    print("  (a different setup: their cfg=auto has a 2-layer mapping network and the batch above, ADA augmentation"
          " and data read from a zip; this benchmark times the preset and batch in the case name with in-memory reals"
          " and no data loading)")
    print(f"results appended to {writer.path(FAMILY)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

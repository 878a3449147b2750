"""``fastgan playground``: the 2-D When/Why/Which study, and ``fastgan playground image-scale``: the same question
on small image generators (registered in ``fastgan.cli.build_parser``).

``fastgan playground [--quick] --outdir DIR`` keeps its flags; ``image-scale`` is an optional subcommand of it, so
the 2-D study's command lines are unchanged."""
from __future__ import annotations

import argparse


class _Threads:
    """torch intra-op threads set to ``n`` for a study and restored afterwards (``cli.main`` may run in-process)."""

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"--threads must be >= 1, got {n}")
        self.n = n

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)


def _cmd_playground(args: argparse.Namespace) -> int:
    from .study import PlaygroundConfig, run_study

    if args.outdir is None:  # required for the 2-D study only (image-scale has a default)
        args.playground_parser.error("the following arguments are required: --outdir")
    threads = _Threads(args.threads)
    overrides = {}
    if args.families:
        overrides["families"] = tuple(f.strip() for f in args.families.split(",") if f.strip())
    for name in ("pretrain_steps", "save_every", "finetune_steps", "eval_every", "w1_points", "metric_points",
                 "bootstrap", "chunk"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.w1_all_steps:
        overrides["w1_all_steps"] = True
    overrides["w1_solver"] = args.w1_solver
    config = (PlaygroundConfig.quick if args.quick else PlaygroundConfig.full)(**overrides)
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    log = (lambda s: None) if args.quiet else print
    with threads:
        run_study(args.outdir, config, seed=args.seed, workers=args.workers, plots=not args.no_plots,
                  progress=False if args.quiet else args.progress, log=log)
    return 0


def add_playground_parser(sub) -> None:
    """Register the ``playground`` subcommand on an argparse subparsers object."""
    p = sub.add_parser(
        "playground", help="reproduce the 2-D When/Why/Which pretrained-GAN study (recall / grad-D vs W1)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Pretrain small GANs on Source-I (a fat circle) and Source-II (3 of the 10 modes), keep a "
                    "checkpoint every 50 G steps, measure each checkpoint's recall of the 10-mode target and its "
                    "grad-D similarity, fine-tune every checkpoint on the target (all of them as one batched "
                    "model) and correlate the measures with the fine-tuned W1 (exact assignment, min over the "
                    "evaluated steps). Writes results.json, recall_vs_w1.png, gradsim_vs_w1.png, samples.png and "
                    "checkpoints/<family>.pt into --outdir. --quick runs a small version in about a minute. "
                    "`fastgan playground image-scale` runs the image-scale study instead (see its --help).")
    p.add_argument("--outdir", default=None, help="output folder (required; created; existing files are replaced)")
    p.add_argument("--quick", action="store_true",
                   help="6 checkpoints per family, 151 fine-tuning steps, 512 points (the full protocol: 101, "
                        "1001, 2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--families", default=None,
                   help="comma-separated source families (default: source-1,source-2)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="override: pretraining G steps")
    p.add_argument("--save-every", type=int, default=None, help="override: pretraining steps between checkpoints")
    p.add_argument("--finetune-steps", type=int, default=None, help="override: fine-tuning G steps")
    p.add_argument("--eval-every", type=int, default=None, help="override: fine-tuning steps between W1 evaluations")
    p.add_argument("--w1-points", type=int, default=None, help="override: points per side of each W1")
    p.add_argument("--metric-points", type=int, default=None,
                   help="override: samples and target points for recall and grad-D similarity")
    p.add_argument("--bootstrap", type=int, default=None, help="override: bootstrap resamples of the CIs")
    p.add_argument("--chunk", type=int, default=None,
                   help="override: checkpoints fine-tuned together (speed only; results do not change)")
    p.add_argument("--workers", type=int, default=2,
                   help="processes solving the W1 assignments (0: in the main process)")
    p.add_argument("--w1-all-steps", action="store_true",
                   help="solve W1 at every evaluated step (default: skip steps a lower bound proves cannot be the "
                        "minimum; the minimum is exact either way)")
    p.add_argument("--w1-solver", choices=["auto", "network-simplex", "assignment"], default="auto",
                   help="exact W1 solver: POT's network simplex (pip install pot; about 0.7 s per 2048-point W1) or "
                        "scipy's assignment (1-10 s); auto: the network simplex when POT is installed")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for the training (1 is fastest on a shared small machine: with "
                        "more, every small op waits for descheduled threads)")
    p.add_argument("--no-plots", action="store_true", help="write results.json only")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: when stderr is a terminal; else status lines)")
    p.add_argument("--quiet", action="store_true", help="no console output")
    p.set_defaults(func=_cmd_playground, playground_parser=p)
    studies = p.add_subparsers(dest="playground_command", metavar="STUDY",
                               title="other studies (optional; without one the 2-D study runs)")
    _add_image_scale_parser(studies)


def _cmd_image_scale(args: argparse.Namespace) -> int:
    from .image_scale import ImageScaleConfig, run_image_scale

    threads = _Threads(args.threads)
    overrides = {}
    if args.seeds is not None:
        overrides["finetune_seeds"] = args.seeds
    if args.sources is not None:
        overrides["data_sources"] = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    if args.no_random_init:
        overrides["random_init"] = False
    for name in ("pretrain_kimg", "finetune_kimg", "checkpoints", "select_num", "eval_num", "method", "extractor"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = (ImageScaleConfig.quick if args.quick else ImageScaleConfig.full)(**overrides)
    with threads:
        run_image_scale(config, args.outdir, seed=args.seed, device=args.device, plots=not args.no_plots,
                        progress=None if args.quiet else (lambda line: print(line, flush=True)))
    return 0


def _add_image_scale_parser(studies) -> None:
    p = studies.add_parser(
        "image-scale", help="does recall (select-source) rank Primitives-PS, spectrum-only and random "
                            "initialisations in the order of their fine-tuned FID?",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Pretrain small generators with the same budget on Primitives-PS and on spectrum-only "
                    "(pinknoise) images, add the random initialisation of the same architecture, measure every "
                    "source's recall of the lfw-faces target (fastgan select-source, bootstrap CI), fine-tune "
                    "every source on the target for --seeds training seeds, measure FID and KID of each "
                    "fine-tuned generator with the offline EfficientNet-Lite0, and compare the orders. Writes "
                    "results.json and recall_vs_fid.png into --outdir (with the datasets, runs and sources); a "
                    "rerun with the same settings resumes. About 20 minutes on 2 shared CPU cores (--quick: seconds).")
    p.add_argument("--outdir", default="fastgan-image-scale",
                   help="output folder (created; a folder holding a run with the same settings is resumed)")
    p.add_argument("--quick", action="store_true",
                   help="tiny everything (16 px, a few training steps, 12 samples, the random-conv extractor): "
                        "checks the pipeline only")
    p.add_argument("--seeds", type=int, default=None, help="fine-tuning seeds per source (default: 3; --quick 2)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when visible, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--sources", default=None,
                   help="comma-separated synthetic data sources (default: primitives-ps,pinknoise)")
    p.add_argument("--no-random-init", action="store_true", help="leave the random initialisation out")
    p.add_argument("--pretrain-kimg", type=float, default=None, help="override: pretraining kimg per data source")
    p.add_argument("--checkpoints", type=int, default=None,
                   help="override: sources per data source (snapshots spread over the pretraining, last included)")
    p.add_argument("--finetune-kimg", type=float, default=None, help="override: fine-tuning kimg per run")
    p.add_argument("--select-num", type=int, default=None, help="override: samples per source for recall")
    p.add_argument("--eval-num", type=int, default=None, help="override: samples per fine-tuned model for FID/KID")
    p.add_argument("--method", choices=["finetune", "freezed", "adafm"], default=None,
                   help="override: the transfer recipe (default: finetune)")
    p.add_argument("--extractor", default=None,
                   help="override: feature extractor of recall, FID and KID (default: efficientnet-lite0-offline; "
                        "--quick: random-conv)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1 is fastest for these small models on a shared small machine)")
    p.add_argument("--no-plots", action="store_true", help="write results.json only")
    p.add_argument("--quiet", action="store_true", help="no console output")
    p.set_defaults(func=_cmd_image_scale)


__all__ = ["add_playground_parser"]

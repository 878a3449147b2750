"""``fastgan playground``: the 2-D When/Why/Which study (registered in ``fastgan.cli.build_parser``)."""
from __future__ import annotations

import argparse


def _cmd_playground(args: argparse.Namespace) -> int:
    import torch

    from .study import PlaygroundConfig, run_study

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    overrides = {}
    if args.families:
        overrides["families"] = tuple(f.strip() for f in args.families.split(",") if f.strip())
    for name in ("pretrain_steps", "save_every", "finetune_steps", "eval_every", "w1_points", "metric_points",
                 "bootstrap", "chunk"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.w1_all_steps:
        overrides["w1_all_steps"] = True
    config = (PlaygroundConfig.quick if args.quick else PlaygroundConfig.full)(**overrides)
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    log = (lambda s: None) if args.quiet else print
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
                    "checkpoints/<family>.pt into --outdir. --quick runs a small version in about a minute.")
    p.add_argument("--outdir", required=True, help="output folder (created; existing files are replaced)")
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
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for the training (1 is fastest on a shared small machine: with "
                        "more, every small op waits for descheduled threads)")
    p.add_argument("--no-plots", action="store_true", help="write results.json only")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: when stderr is a terminal; else status lines)")
    p.add_argument("--quiet", action="store_true", help="no console output")
    p.set_defaults(func=_cmd_playground)


__all__ = ["add_playground_parser"]

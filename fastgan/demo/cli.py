"""``fastgan demo``: the main job (registered in ``fastgan.cli.build_parser``)."""
from __future__ import annotations

import argparse


def _cmd_demo(args: argparse.Namespace) -> int:
    from .run import run_demo

    if args.quick and args.preset not in (None, "quick"):
        raise ValueError(f"--quick and --preset {args.preset} contradict each other; give one")
    preset = "quick" if args.quick else args.preset
    device = args.device
    if preset is None:
        preset = "cuda" if (device or "").startswith("cuda") else "default"
    run_demo(args.outdir, preset=preset, device=device, seed=args.seed, quiet=args.quiet)
    return 0


def add_demo_parser(sub) -> None:
    """Register the ``demo`` subcommand on an argparse subparsers object."""
    p = sub.add_parser(
        "demo", help="the whole story in minutes on a CPU: synthesise, pretrain, select, transfer, MaGNET, evaluate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Synthesise Primitives-PS images, pretrain a small generator on them, choose the source snapshot "
                    "by recall of the target, transfer it with AdaFM and a vision-aided discriminator to 100 real "
                    "face crops that ship inside scikit-image (and train from scratch on them for comparison), "
                    "sample naively and with MaGNET, and evaluate FID / KID / precision / recall with an offline "
                    "EfficientNet-Lite0. Writes image grids, plots, summary.json and summary.md into --outdir. "
                    "No GPU and no network needed: about 10 minutes on 2 CPU cores (--quick: about 2).")
    p.add_argument("--outdir", default="fastgan-demo", help="output folder (must not exist or be empty)")
    p.add_argument("--quick", action="store_true", help="the small preset (about 2 minutes on 2 CPU cores)")
    p.add_argument("--preset", choices=["quick", "default", "cuda"], default=None,
                   help="size of the run (default: 'cuda' with --device cuda, else 'default')")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when visible, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--quiet", action="store_true", help="no console output")
    p.set_defaults(func=_cmd_demo)


__all__ = ["add_demo_parser"]

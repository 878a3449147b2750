"""The `fastgan` command: a thin layer over the Python API."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _cmd_doctor(args: argparse.Namespace) -> int:
    from fastgan import doctor

    return doctor.run(devices=args.device or None)


def _cmd_data_primitives(args: argparse.Namespace) -> int:
    import torch

    from fastgan.synth import PrimitivesPS, write_dataset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gen = PrimitivesPS.variant(args.variant, args.resolution, num_shapes=args.num_shapes, compat=args.compat,
                               seed=args.seed, device=device, impl=args.impl)
    write_dataset(args.dest, gen, args.num, shards=args.shards, shard=args.shard, batch_size=args.batch,
                  overwrite=args.overwrite, compress_level=args.compress_level,
                  progress=False if args.quiet else None, log=(lambda s: None) if args.quiet else print)
    return 0


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="make datasets (Primitives-PS synthetic pretraining data)",
                          description="Dataset commands. Datasets are zips of NNNNN/imgNNNNNNNN.png plus dataset.json.")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    p = dsub.add_parser(
        "primitives", help="write a Primitives-PS dataset zip",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Synthesise Primitives-PS images (Baek & Shim, CVPR 2022) on the device and write the dataset "
                    "zip training reads. Image k depends only on (seed, k): --shards K --shard I writes the I-th "
                    "part, and the shards together hold exactly the unsharded set. The zip is written under a "
                    "temporary name and renamed at the end; an existing --dest is refused unless --overwrite.")
    p.add_argument("--dest", required=True, help="output .zip file")
    p.add_argument("--num", type=int, required=True, help="number of images in the whole (unsharded) dataset")
    p.add_argument("--resolution", type=int, default=256, help="image side in pixels (>= 8)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (0 <= seed < 2**63)")
    p.add_argument("--variant", default="primitives-ps",
                   help="pinknoise (spectrum only) | primitives (shapes) | primitives-s (shapes + saliency) | "
                        "primitives-ps (all)")
    p.add_argument("--compat", choices=["fastgan", "official"], default="fastgan",
                   help="official: the original constants and quirks; fastgan: constants scale with the resolution")
    p.add_argument("--num-shapes", type=int, default=100, help="shapes per image")
    p.add_argument("--device", default=None, help="device to synthesise on (default: cuda when visible, else cpu)")
    p.add_argument("--impl", default="auto", choices=["auto", "ref", "cpp", "cuda", "triton"], help="kernel choice")
    p.add_argument("--shards", type=int, default=1, help="split the dataset into this many shards")
    p.add_argument("--shard", type=int, default=0, help="which shard to write (0-based)")
    p.add_argument("--batch", type=int, default=64, help="images synthesised per batch")
    p.add_argument("--compress-level", type=int, default=1, help="PNG zlib level 0..9")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --dest")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    p.set_defaults(func=_cmd_data_primitives)
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgan", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("doctor", help="versions, build info, available kernels and a parity check of each",
                       description="Print versions and build information, list which impl of each op can run on "
                                   "each device, and check every runnable impl against its reference. Exit status "
                                   "1 when a check fails.")
    p.add_argument("--device", action="append", choices=["cpu", "cuda"],
                   help="device to check (repeatable; default: cpu, and cuda when visible)")
    p.set_defaults(func=_cmd_doctor)
    _add_data(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import fastgan

        print(f"fastgan {fastgan.__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileExistsError, PermissionError, ImportError) as exc:
        # bad input: one clear line naming the problem, no traceback
        name = " ".join(x for x in (args.command, getattr(args, "data_command", None)) if x)
        print(f"fastgan {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m fastgan.cli
    sys.exit(main())

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


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _cmd_ref(args: argparse.Namespace) -> int:
    import torch

    from fastgan.metrics.reference import compute_reference

    kwargs = {}
    for item in args.extractor_arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--extractor-arg takes KEY=VALUE, got {item!r}")
        kwargs[key] = _parse_value(value)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    keep = {"auto": None, "yes": True, "no": False}[args.keep_features]
    compute_reference(args.data, args.out, extractor=args.extractor, extractor_kwargs=kwargs, protocol=args.protocol,
                      batch_size=args.batch, device=device, keep_features=keep, force=args.force)
    return 0


def _add_ref(sub) -> None:
    p = sub.add_parser(
        "ref", help="reference statistics of a dataset (FID / KID / PR), cached by content",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Embed every image of a dataset (zip or folder) with a feature extractor and write its "
                    "statistics (float64 mean and covariance, and the features for small sets) to an npz file "
                    "that records the dataset's sha256, the extractor and the protocol. An existing file with the "
                    "same content, extractor and protocol is reused; a changed dataset is recomputed.")
    p.add_argument("--data", required=True, help="dataset zip or folder of images")
    p.add_argument("--out", required=True, help="statistics file (.npz)")
    p.add_argument("--extractor", default="random-conv", help="registered extractor name")
    p.add_argument("--extractor-arg", action="append", metavar="KEY=VALUE",
                   help="argument for the extractor (repeatable), e.g. dim=64 or weights=/path/to/file")
    p.add_argument("--protocol", default=None, help="preprocessing protocol (default: the extractor's)")
    p.add_argument("--batch", type=int, default=64, help="images per batch")
    p.add_argument("--device", default=None, help="device (default: cuda when visible, else cpu)")
    p.add_argument("--keep-features", choices=["auto", "yes", "no"], default="auto",
                   help="store the features too (auto: when images <= 2 x feature dimensions)")
    p.add_argument("--force", action="store_true", help="recompute even when --out is up to date")
    p.set_defaults(func=_cmd_ref)


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
    _add_ref(sub)
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
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, PermissionError, ImportError) as exc:
        # bad input: one clear line naming the problem, no traceback
        name = " ".join(x for x in (args.command, getattr(args, "data_command", None)) if x)
        print(f"fastgan {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m fastgan.cli
    sys.exit(main())

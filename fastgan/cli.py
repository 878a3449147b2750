"""The `fastgan` command: a thin layer over the Python API."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _cmd_doctor(args: argparse.Namespace) -> int:
    from fastgan import doctor

    return doctor.run(devices=args.device or None)


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
    return int(args.func(args) or 0)


if __name__ == "__main__":  # python -m fastgan.cli
    sys.exit(main())

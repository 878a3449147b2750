"""The `fastgan` command: a thin layer over the Python API."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _device(arg: Optional[str]) -> str:
    """--device, or cuda when a GPU is visible, else cpu."""
    if arg:
        return arg
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _extractor_kwargs(items: Optional[Sequence[str]]) -> dict:
    """--extractor-arg KEY=VALUE items as a dict (numbers parsed)."""
    kwargs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--extractor-arg takes KEY=VALUE, got {item!r}")
        kwargs[key] = _parse_value(value)
    return kwargs


def _add_extractor_args(p, extractor_help: str = "registered extractor name") -> None:
    p.add_argument("--extractor", default="random-conv", help=extractor_help)
    p.add_argument("--extractor-arg", action="append", metavar="KEY=VALUE",
                   help="argument for the extractor (repeatable), e.g. dim=64 or weights=/path/to/file")
    p.add_argument("--protocol", default=None, help="preprocessing protocol (default: the extractor's)")


def _cmd_doctor(args: argparse.Namespace) -> int:
    from fastgan import doctor

    return doctor.run(devices=args.device or None)


def _cmd_data_primitives(args: argparse.Namespace) -> int:
    from fastgan.synth import PrimitivesPS, write_dataset

    device = _device(args.device)
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
    from fastgan.metrics.reference import compute_reference

    keep = {"auto": None, "yes": True, "no": False}[args.keep_features]
    compute_reference(args.data, args.out, extractor=args.extractor, extractor_kwargs=_extractor_kwargs(
        args.extractor_arg), protocol=args.protocol, batch_size=args.batch, device=_device(args.device),
                      keep_features=keep, force=args.force)
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
    _add_extractor_args(p)
    p.add_argument("--batch", type=int, default=64, help="images per batch")
    p.add_argument("--device", default=None, help="device (default: cuda when visible, else cpu)")
    p.add_argument("--keep-features", choices=["auto", "yes", "no"], default="auto",
                   help="store the features too (auto: when images <= 2 x feature dimensions)")
    p.add_argument("--force", action="store_true", help="recompute even when --out is up to date")
    p.set_defaults(func=_cmd_ref)


def _cmd_data_make(args: argparse.Namespace) -> int:
    from fastgan.data import make_dataset

    make_dataset(args.source, args.dest, resolution=args.resolution, transform=args.transform,
                 channels=args.channels, on_error=args.on_error, max_images=args.max_images, labels=args.labels,
                 overwrite=args.overwrite, progress=False if args.quiet else None,
                 log=(lambda s: None) if args.quiet else print)
    return 0


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    import json

    from fastgan.data import inspect_dataset
    from fastgan.data.inspect import format_report

    info = inspect_dataset(args.path, sha256=not args.no_hash)
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="make datasets from image folders or zips, inspect them, or synthesise "
                                       "Primitives-PS pretraining data",
                          description="Dataset commands. Datasets are zips of NNNNN/imgNNNNNNNN.png plus dataset.json "
                                      "(StyleGAN2-ADA layout).")
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
    p = dsub.add_parser(
        "make", help="convert an image folder or zip into a dataset zip",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Convert every image of --source (a folder, searched recursively, or a zip) into a dataset zip "
                    "of R x R 8-bit PNGs. EXIF orientation is applied, transparency is composited over black, 16-bit "
                    "images are scaled to 8 bits, palette and CMYK images are converted. Without --transform every "
                    "image must already be R x R. Labels come from the source's dataset.json. The zip is written "
                    "under a temporary name and renamed at the end; an existing --dest is refused unless --overwrite.")
    p.add_argument("--source", required=True, help="image folder or zip")
    p.add_argument("--dest", required=True, help="output .zip file")
    p.add_argument("--resolution", default=None,
                   help="output side R (power of two >= 4), as R or RxR; needed with --transform "
                        "(default: the images' own size)")
    p.add_argument("--transform", choices=["center-crop", "pad", "resize"], default=None,
                   help="make images R x R: center-crop (crop to square), pad (black borders to square) or resize "
                        "(aspect not kept)")
    p.add_argument("--channels", choices=["rgb", "gray", "auto"], default="rgb",
                   help="output channels (auto: gray when every source image is gray)")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="unreadable images: stop, or leave them out and list them in <dest stem>-skipped.txt")
    p.add_argument("--labels", choices=["keep", "drop"], default="keep",
                   help="keep the labels of the source dataset.json (every image needs one) or drop them")
    p.add_argument("--max-images", type=int, default=None, help="stop after this many images")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --dest")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_data_make)
    p = dsub.add_parser(
        "inspect", help="counts, shapes, modes, labels and content hash of a dataset",
        description="Read every image header of a dataset zip or image folder and report the image count, the "
                    "distinct shapes and modes, label statistics, the content sha256, and whether training can "
                    "read it as it is.")
    p.add_argument("path", help="dataset zip or image folder")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-hash", action="store_true", help="skip the content sha256 (faster on large datasets)")
    p.set_defaults(func=_cmd_data_inspect)
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])


def _train_options(args: argparse.Namespace, **override):
    """TrainOptions from the parsed training flags (shared by `train` and `transfer`)."""
    from fastgan.train.options import TrainOptions

    fields = {f: getattr(args, f) for f in TrainOptions.__dataclass_fields__ if f != "resolved" and hasattr(args, f)}
    weights = {}
    for item in getattr(args, "vision_weights", None) or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--vision-weights takes NAME=PATH (e.g. clip=/weights/ViT-B-32.pt), got {item!r}")
        if name in weights:
            raise ValueError(f"--vision-weights names {name!r} twice")
        import os

        weights[name] = os.path.abspath(path)
    fields["vision_weights"] = weights or None
    fields.update(override)
    return TrainOptions(**fields)


def _run_training(args: argparse.Namespace, command: str, **override) -> int:
    from fastgan.train.loop import NonFiniteError, train

    try:
        result = train(_train_options(args, **override), device=args.device, quiet=args.quiet)
    except NonFiniteError as exc:  # the run dir's status.json and log.txt say the same
        print(f"fastgan {command}: stopped: {exc}", file=sys.stderr)
        return 1
    return result.exit_code


def _cmd_train(args: argparse.Namespace) -> int:
    return _run_training(args, "train")


def _add_training_args(p, *, transfer: bool = False) -> None:
    """The flags of `fastgan train`, shared with `fastgan transfer` (which names its source with --source)."""
    from fastgan.train.options import AUG_CHOICES, CFG_SPECS, NONFINITE_CHOICES, VISION_AUGMENTS

    p.add_argument("--data", required=True, help="dataset zip or folder, or synth:<primitives-ps|primitives-s|"
                                                 "primitives|pinknoise>")
    p.add_argument("--outdir", required=True, help="parent folder of the run directories")
    p.add_argument("--cfg", default="auto", choices=sorted(CFG_SPECS), help="network/optimiser preset")
    p.add_argument("--resolution", type=int, default=None, help="image size (default: the dataset's)")
    p.add_argument("--batch", type=int, default=32, help="total batch over all processes")
    p.add_argument("--batch-gpu", type=int, default=None, help="samples per process per round (accumulation)")
    p.add_argument("--kimg", type=float, default=25000, help="train until this many thousand real images")
    p.add_argument("--tick", type=float, default=4, help="status line every this many kimg")
    p.add_argument("--snap", type=int, default=50, help="snapshot + training state every this many ticks")
    p.add_argument("--img-snap", type=int, default=None, help="fakes grid every this many ticks (default --snap)")
    p.add_argument("--seed", type=int, default=0, help="random seed (latents, noise, augmentation, data order)")
    p.add_argument("--aug", choices=AUG_CHOICES, default="diffaug", help="D augmentation")
    p.add_argument("--diffaug-policy", default="color,translation,cutout", help="DiffAugment ops")
    p.add_argument("--ada-target", type=float, default=0.6, help="ADA target of sign(D(real))")
    p.add_argument("--ada-kimg", type=float, default=500, help="ADA: kimg for p to move by 1")
    p.add_argument("--mirror", action="store_true", help="add x-flipped copies of the dataset")
    p.add_argument("--cond", action="store_true", help="condition on the dataset's labels")
    p.add_argument("--gamma", type=float, default=None, help="R1 weight (default: the preset's)")
    p.add_argument("--glr", type=float, default=None, help="G learning rate (default: the preset's)")
    p.add_argument("--dlr", type=float, default=None, help="D learning rate (default: the preset's)")
    p.add_argument("--map", type=int, default=None, help="mapping layers (default: the preset's)")
    p.add_argument("--cbase", type=int, default=None, help="channel base (default: the preset's)")
    p.add_argument("--cmax", type=int, default=None, help="max channels (default: the preset's)")
    p.add_argument("--mbstd", type=int, default=None, help="minibatch-std group size (default: the preset's)")
    p.add_argument("--pl-weight", type=float, default=None, help="path-length weight, 0 = off")
    p.add_argument("--style-mixing", type=float, default=None, help="style-mixing probability")
    p.add_argument("--r1-interval", type=int, default=16, help="lazy R1 every N steps (1 = every step)")
    p.add_argument("--pl-interval", type=int, default=4, help="lazy path-length regularisation every N steps")
    p.add_argument("--ema-kimg", type=float, default=None, help="G_ema half-life in kimg")
    p.add_argument("--ema-rampup", type=float, default=None, help="G_ema ramp-up ratio (0 = none)")
    p.add_argument("--fp32", action="store_true", help="no float16 layers")
    p.add_argument("--nobench", action="store_true", help="disable cuDNN benchmarking")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    p.add_argument("--workers", type=int, default=2, help="data loader processes per training process")
    p.add_argument("--desc", default="", help="suffix for the run directory name")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="continue a run: auto (latest matching run in --outdir), a run dir or a training-state file"
                   + ("; with auto and no matching run, a new transfer starts from --source" if transfer else ""))
    if not transfer:
        p.add_argument("--transfer", default=None, metavar="SNAPSHOT",
                       help="start from the weights of a network snapshot (.pt) or StyleGAN2-ADA pickle (.pkl)")
    p.add_argument("--allow-partial", action="store_true",
                   help=f"with {'--source' if transfer else '--transfer'}: load only matching tensors")
    p.add_argument("--nonfinite", choices=NONFINITE_CHOICES, default="skip", help="policy for NaN/Inf gradients")
    p.add_argument("--nonfinite-limit", type=int, default=10,
                   help="stop (status failed) after this many consecutive steps with NaN/Inf gradients")
    p.add_argument("--keep-states", type=int, default=3, help="training states kept (snapshots are all kept)")
    p.add_argument("--timeout", type=float, default=1800, help="collective timeout in seconds")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stdout is a terminal)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when visible)")
    p.add_argument("--quiet", action="store_true", help="no console output (log.txt is still written)")
    p.add_argument("-n", "--dry-run", action="store_true", help="print the resolved options and exit")
    v = p.add_argument_group("vision-aided discriminator (METHODS.md section 2)")
    v.add_argument("--vision-aided", default=None, metavar="NAME+NAME|auto",
                   help="frozen pretrained backbones with trainable heads added to D: a fixed set (clip+dino, "
                        "efficientnet-lite0, ...) or auto (progressive: linear-probe the candidates with G_ema "
                        "samples after the warm-up and add the winner, up to --probe-select)")
    v.add_argument("--vision-weights", action="append", metavar="NAME=PATH",
                   help="local weight file of a backbone (repeatable); fastgan never downloads weights")
    v.add_argument("--vision-augment", choices=VISION_AUGMENTS, default=None,
                   help="augmentation in front of each backbone (default diffaugment; ada: one p per backbone)")
    v.add_argument("--vision-ada-target", type=float, default=None, metavar="T",
                   help="with --vision-augment ada: target mean sign of each head's last-level real logits "
                        "(default 0.3)")
    v.add_argument("--vision-ada-kimg", type=float, default=None, metavar="KIMG",
                   help="with --vision-augment ada: kimg for a head's p to move by 1 (default 500)")
    v.add_argument("--warmup", dest="vision_warmup", type=float, default=None, metavar="KIMG",
                   help="vision losses off for the first KIMG (default: 0 for transfer, 500 from scratch)")
    v.add_argument("--probe-select", type=int, default=None, metavar="K",
                   help="auto: add up to K backbones (default 3, at most the number of candidates)")
    v.add_argument("--vision-candidates", default=None, metavar="NAME+NAME",
                   help="auto: the backbones to probe (default: every backbone whose weights are found here)")
    v.add_argument("--vision-stage-kimg", type=float, default=None, metavar="KIMG",
                   help="auto: kimg between backbone additions (default 1000)")
    v.add_argument("--probe-images", type=int, default=None, metavar="N",
                   help="auto: real and generated images per linear probe (default 1000)")


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train a StyleGAN2-style GAN (one process, or every process of a torchrun launch)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train from a dataset zip/folder or from Primitives-PS images synthesised on the fly "
                    "(--data synth:primitives-ps --resolution R). Progress is counted in kimg (thousands of real "
                    "images shown to D). Each run gets <outdir>/<NNNNN>-<cfg>-<data>-gpus<W>-batch<B>[-desc]/ with "
                    "training_options.json, log.txt, stats.jsonl, image grids, network snapshots, training states "
                    "and latest.json. --resume auto continues the latest complete state of the matching run "
                    "bit-exactly; --transfer starts a new run from a snapshot's weights. Multi-GPU: "
                    "torchrun --standalone --nproc_per_node N -m fastgan train ...")
    _add_training_args(p)
    p.set_defaults(func=_cmd_train)


def _cmd_transfer(args: argparse.Namespace) -> int:
    return _run_training(args, "transfer", transfer=args.source)


def _add_transfer(sub) -> None:
    from fastgan.transfer.freeze import METHODS

    p = sub.add_parser(
        "transfer", help="transfer a pretrained generator to a small target dataset (AdaFM, FreezeD, finetune)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Start a training run from the networks of --source and adapt them to --data. The weight "
                    "transfer is strict: a table of loaded, kept, missing, shape-mismatched and unexpected tensors "
                    "is printed, and any mismatch stops the run unless --allow-partial. --method finetune trains "
                    "everything; freezed (FreezeD) freezes the --freeze-d highest-resolution D blocks; adafm turns "
                    "the generator blocks above --adafm-front-res into AdaFM blocks (frozen weights, W' = gamma*W + "
                    "beta with identity init, gamma/beta trained from --adafm-unfreeze kimg on), trains the front "
                    "(mapping + low-resolution blocks) and freezes D blocks as freezed does. Every `fastgan train` "
                    "flag applies (the architecture flags must match the source). See docs/transfer.md.")
    p.add_argument("--source", required=True, metavar="SNAPSHOT",
                   help="network snapshot (.pt) or StyleGAN2-ADA pickle (.pkl) to transfer from")
    p.add_argument("--method", choices=METHODS, default="adafm", help="transfer recipe")
    p.add_argument("--freeze-d", type=int, default=None, metavar="K",
                   help="freeze the K highest-resolution D blocks, fromRGB included (default: 1 for freezed and "
                        "adafm, 0 for finetune)")
    p.add_argument("--adafm-front-res", type=int, default=None, metavar="RES",
                   help="adafm: blocks at or below RES (and the mapping network) form the trainable front; blocks "
                        "above it get AdaFM (default 16)")
    p.add_argument("--adafm-new-front", action="store_true",
                   help="adafm: initialise the front afresh instead of from the source (the paper's choice; the "
                        "first images then differ from the source's)")
    p.add_argument("--adafm-unfreeze", type=float, default=None, metavar="KIMG",
                   help="adafm: gamma/beta train from this kimg on (default: 10000 steps at --batch, i.e. "
                        "10 x batch kimg)")
    _add_training_args(p, transfer=True)
    p.set_defaults(func=_cmd_transfer)


def _cmd_generate(args: argparse.Namespace) -> int:
    from fastgan.sampling import parse_seeds, write_images

    device = _device(args.device)
    seeds = parse_seeds(args.seeds)
    if args.sampler == "naive":
        given = [f for f, v in (("--pool", args.pool), ("--rho", args.rho), ("--top-k", args.top_k),
                                ("--weights", args.weights), ("--mix", args.mix), ("--replace", args.replace or None))
                 if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to --sampler magnet")
        write_images(args.network, seeds, args.outdir, truncation_psi=args.trunc, class_idx=args.class_idx,
                     noise_mode=args.noise_mode, batch_size=args.batch, device=device)
        return 0
    from fastgan.sampling.generate import write_magnet_images

    if args.pool is None:
        raise ValueError("--sampler magnet needs --pool (a pool file from `fastgan magnet pool`)")
    write_magnet_images(args.network, args.pool, seeds, args.outdir, rho=1.0 if args.rho is None else args.rho,
                        top_k=30 if args.top_k is None else args.top_k, weights=args.weights or "official",
                        mix=1.0 if args.mix is None else args.mix, replace=args.replace, class_idx=args.class_idx,
                        truncation_psi=args.trunc, noise_mode=args.noise_mode, batch_size=args.batch, device=device)
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate", help="images from a network snapshot, one PNG per seed (naive or MaGNET sampling)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Write seed<NNNN>.png for every seed with the snapshot's G_ema. Naive sampling (the default): "
                    "a seed gives the same image whatever --batch and device (z = numpy RandomState(seed).randn, as "
                    "StyleGAN). --sampler magnet: len(seeds) latents are drawn from --pool with probability "
                    "proportional to vol^rho (a torch.Generator seeded with the first seed; the k-th draw is written "
                    "as the k-th seed's file, so the same --seeds list gives the same files) and "
                    "magnet-samples.json records the pool index of every file.")
    p.add_argument("--network", required=True, help="network-snapshot-*.pt or StyleGAN2-ADA .pkl")
    p.add_argument("--seeds", required=True, help="seeds, e.g. 0-63,100")
    p.add_argument("--outdir", required=True, help="output folder")
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi")
    p.add_argument("--class", dest="class_idx", type=int, default=None, help="class for conditional networks")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const", help="per-pixel noise")
    p.add_argument("--batch", type=int, default=16, help="images per forward pass")
    p.add_argument("--device", default=None, help="device (default: cuda when visible, else cpu)")
    p.add_argument("--sampler", choices=["naive", "magnet"], default="naive",
                   help="naive: latents from the seeds; magnet: latents resampled from --pool by Jacobian volume")
    p.add_argument("--pool", default=None, help="MaGNET pool (.npz from `fastgan magnet pool`, or a released one)")
    p.add_argument("--rho", type=float, default=None, help="polarity rho (magnet; default 1 = MaGNET)")
    p.add_argument("--top-k", type=int, default=None, help="singular values in the volume (magnet; default 30)")
    p.add_argument("--weights", choices=["official", "exact"], default=None,
                   help="official: vol^rho (the papers' numbers); exact: vol^rho / p(z) (magnet; default official)")
    p.add_argument("--mix", type=float, default=None,
                   help="fraction of MaGNET-weighted samples, the rest drawn uniformly from the pool (magnet; "
                        "default 1)")
    p.add_argument("--replace", action="store_true", help="draw with replacement (magnet; default without)")
    p.set_defaults(func=_cmd_generate)


def _add_magnet(sub) -> None:
    def _cmd_magnet_pool(args: argparse.Namespace) -> int:  # the `magnet pool` command
        from fastgan.sampling import compute_pool

        compute_pool(args.network, args.num, args.out, proj_dim=None if args.proj_dim == 0 else args.proj_dim,
                     top_k=args.top_k, batch_size=args.batch, seed=args.seed, proj_seed=args.proj_seed,
                     truncation_psi=args.trunc, wrt=args.wrt, chunk_size=args.chunk, device=_device(args.device),
                     max_memory=None if args.max_memory is None else int(args.max_memory * 2**20),
                     impl=args.impl, progress=False if args.quiet else None,
                     log=(lambda s: None) if args.quiet else print)
        return 0

    magnet = sub.add_parser("magnet", help="MaGNET: pools of latents with their Jacobian volumes",
                            description="MaGNET commands. Sample with `fastgan generate --sampler magnet --pool ...`.")
    msub = magnet.add_subparsers(dest="magnet_command", metavar="MAGNET_COMMAND")
    p = msub.add_parser(
        "pool", help="compute a pool: latents and the top singular values of the generator's Jacobian",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Draw --num latents (entry i: z = numpy RandomState(seed + i).randn, class i %% c_dim) and "
                    "compute, for each, the top singular values of the Jacobian of P vec(G(z)) (P: --proj-dim "
                    "random orthonormal rows) with the snapshot's G_ema. Written to --out (npz with latents, svds, "
                    "labels: the released MaGNET layout). Chunks are saved as they finish in <out>.parts/; "
                    "running the same command again after an interruption continues where it stopped.")
    p.add_argument("--network", required=True, help="network-snapshot-*.pt or StyleGAN2-ADA .pkl")
    p.add_argument("--num", type=int, required=True, help="latents in the pool")
    p.add_argument("--out", required=True, help="pool file (.npz)")
    p.add_argument("--proj-dim", type=int, default=128, help="rows of the random projection (0: exact Jacobian)")
    p.add_argument("--top-k", type=int, default=None, help="singular values stored per latent (default: all)")
    p.add_argument("--batch", type=int, default=16, help="latents per generator forward")
    p.add_argument("--seed", type=int, default=0, help="latent seed: entry i uses seed + i")
    p.add_argument("--proj-seed", type=int, default=0, help="seed of the projection")
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi")
    p.add_argument("--wrt", choices=["z", "w"], default="z", help="differentiate w.r.t. z or the broadcast w")
    p.add_argument("--chunk", type=int, default=1024, help="latents per saved chunk (the unit of resumption)")
    p.add_argument("--max-memory", type=float, default=None,
                   help="MiB the batched VJPs may use (default: half the free GPU memory, 1024 on CPU)")
    p.add_argument("--impl", default="auto", choices=["auto", "ref", "cpp", "cuda", "triton"],
                   help="kernels for the projection and the singular values")
    p.add_argument("--device", default=None, help="device (default: cuda when visible, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no console output")
    p.set_defaults(func=_cmd_magnet_pool)


def _cmd_metrics(args: argparse.Namespace) -> int:
    import json

    from fastgan.metrics.evaluate import evaluate
    from fastgan.train import distributed as fdist

    d = fdist.init(args.device, timeout_s=args.timeout)
    try:
        res = evaluate(args.network, [m for m in args.metrics.split(",") if m], args.ref, seed=args.seed,
                       batch_size=args.batch, truncation_psi=args.trunc, device=str(d.device),
                       write_jsonl=not args.no_jsonl, log=print if d.is_main else (lambda s: None))
    finally:
        fdist.shutdown(d)
    if args.json and d.is_main:
        print(json.dumps(res, indent=2, sort_keys=True))
    return 0


def _add_metrics(sub) -> None:
    p = sub.add_parser(
        "metrics", help="FID / KID / precision-recall of a snapshot against reference statistics",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Generate images with the snapshot's G_ema (image i from seed --seed + i, so results do not "
                    "depend on --batch or on the number of torchrun processes), embed them with the extractor and "
                    "protocol recorded in --ref (made by `fastgan ref`) and compare. Results are printed and, for a "
                    "snapshot inside a run directory, appended to metric-<name>.jsonl there.")
    p.add_argument("--network", required=True, help="network-snapshot-*.pt or StyleGAN2-ADA .pkl")
    p.add_argument("--metrics", default="fid50k_full",
                   help="comma-separated: fid<N>_full, kid<N>_full, pr<N>k<K>_full, prdc<N>k<K>_full (N = 50k, 500...)")
    p.add_argument("--ref", required=True, help="reference statistics (.npz from `fastgan ref`)")
    p.add_argument("--seed", type=int, default=0, help="first seed of the generated images")
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass")
    p.add_argument("--device", default=None, help="device (default: cuda when visible, else cpu)")
    p.add_argument("--timeout", type=float, default=1800, help="collective timeout in seconds (torchrun)")
    p.add_argument("--no-jsonl", action="store_true", help="do not append to the run directory's metric files")
    p.add_argument("--json", action="store_true", help="print the full records as JSON")
    p.set_defaults(func=_cmd_metrics)


def _cmd_select_source(args: argparse.Namespace) -> int:
    from fastgan.metrics.selection import rank_sources

    rank_sources(args.sources, data=args.data, ref=args.ref, num=args.num, k=args.k, extractor=args.extractor,
                 extractor_kwargs=_extractor_kwargs(args.extractor_arg), protocol=args.protocol,
                 bootstrap=args.bootstrap, confidence=args.confidence, seed=args.seed, batch_size=args.batch,
                 device=_device(args.device), grad_d_sim=args.grad_d_sim, grad_d_num=args.grad_d_num, by=args.by,
                 out=args.out)
    return 0


def _add_select_source(sub) -> None:
    p = sub.add_parser(
        "select-source", help="rank pretrained generators for transfer to a target by recall",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="When/Why/Which pretrained GANs: sample every source generator, embed its samples and the "
                    "target images with one extractor, and rank the sources by the recall of the target with "
                    "respect to their samples (k-NN balls), with a bootstrap confidence interval; precision, "
                    "density and coverage are shown beside it. --grad-d-sim adds the image-scale ∇D similarity of "
                    "each source (its D's generator-loss gradient at its samples against the direction to the "
                    "nearest target image, in both sign conventions; see docs/select-source.md).")
    p.add_argument("--sources", nargs="+", required=True,
                   help="snapshot files (.pt / StyleGAN2-ADA .pkl), run directories (latest snapshot) or folders "
                        "of snapshots")
    p.add_argument("--data", default=None, help="target dataset (zip or folder)")
    p.add_argument("--ref", default=None, help="or: target statistics with features (fastgan ref --keep-features yes)")
    p.add_argument("--num", type=int, default=10000, help="samples per source")
    p.add_argument("--k", type=int, default=5, help="nearest neighbours for the balls")
    _add_extractor_args(p, "registered extractor (with --data; --ref brings its own)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the target for the CI")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the interval")
    p.add_argument("--seed", type=int, default=0, help="first seed of the samples (and of the bootstrap)")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass")
    p.add_argument("--device", default=None, help="device (default: cuda when visible, else cpu)")
    p.add_argument("--grad-d-sim", action="store_true",
                   help="also compute each source's ∇D similarity to the target images (needs --data and snapshots "
                        "with D): mean cos(c(x) - x, grad L_G) as loss_gradient and its negative as "
                        "update_direction")
    p.add_argument("--grad-d-num", type=int, default=1000, help="samples per source for the ∇D similarity")
    p.add_argument("--by", choices=["recall", "grad_d_similarity"], default="recall",
                   help="ranking order: recall, or the ∇D similarity in the loss_gradient convention, highest first "
                        "(implies --grad-d-sim)")
    p.add_argument("--out", default="source-ranking.json", help="where to write the ranking (json)")
    p.set_defaults(func=_cmd_select_source)


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
    _add_train(sub)
    _add_transfer(sub)
    _add_generate(sub)
    _add_metrics(sub)
    _add_select_source(sub)
    _add_magnet(sub)
    from fastgan.playground.cli import add_playground_parser
    add_playground_parser(sub)
    from fastgan.demo.cli import add_demo_parser
    add_demo_parser(sub)
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
        name = " ".join(x for x in (args.command, getattr(args, "data_command", None),
                                    getattr(args, "magnet_command", None)) if x)
        print(f"fastgan {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m fastgan.cli
    sys.exit(main())

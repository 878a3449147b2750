"""The op contract: resolve ``impl="auto" | "ref" | "cpp" | "cuda" | "triton"`` for one call.

* An explicit impl that cannot run here raises ``RuntimeError`` naming the op, the impl and the reason.
* ``auto`` takes the first impl of the op's preference list for the tensor's device type that can run.
  Skipping a preferred impl is a *fallback*: it warns once per process (``FastganFallbackWarning``), is
  recorded in :func:`dispatch_report`, and raises instead when ``FASTGAN_STRICT_KERNELS=1``.
* ``FASTGAN_IMPL=<impl>`` replaces ``auto`` everywhere (explicit impls passed in code still win).

Each op registers its impls with :func:`register_impl`: a callable, the device types it runs on, a static
availability check (``device_type -> reason or None``) and an optional per-call input check
(``(device_type, dtype) -> reason or None``, e.g. for unsupported dtypes).
"""
from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

IMPLS = ("ref", "cpp", "cuda", "triton")
_CHOICES = ("auto",) + IMPLS


class FastganFallbackWarning(RuntimeWarning):
    """``impl="auto"`` could not use a preferred kernel and fell back to a slower one."""


@dataclass
class ImplSpec:
    name: str
    fn: Callable[..., Any]
    devices: tuple[str, ...]
    available: Callable[[str], Optional[str]]
    supports: Optional[Callable[..., Optional[str]]] = None


@dataclass
class OpSpec:
    name: str
    auto_order: dict[str, tuple[str, ...]]
    impls: dict[str, ImplSpec] = field(default_factory=dict)


_OPS: dict[str, OpSpec] = {}
_LOCK = threading.Lock()
_WARNED: set[tuple] = set()
_REPORT: dict[tuple[str, str], dict] = {}


def register_op(name: str, auto_order: dict[str, Sequence[str]]) -> OpSpec:
    """Declare an op and its ``auto`` preference per device type (``"cpu"``, ``"cuda"``, ...; ``"*"`` = others)."""
    spec = OpSpec(name, {k: tuple(v) for k, v in auto_order.items()})
    _OPS[name] = spec
    return spec


def register_impl(op: str, impl: str, fn: Callable[..., Any], *, devices: Sequence[str],
                  available: Callable[[str], Optional[str]] = lambda dev: None,
                  supports: Optional[Callable[..., Optional[str]]] = None) -> None:
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; expected one of {IMPLS}")
    _OPS[op].impls[impl] = ImplSpec(impl, fn, tuple(devices), available, supports)


def list_ops() -> list[str]:
    """Names of every registered op (as accepted by :func:`available_impls`)."""
    return sorted(_OPS)


def _device_type(device: Any) -> str:
    if isinstance(device, torch.Tensor):
        return device.device.type
    return torch.device(device).type


def _spec(op_name: str) -> OpSpec:
    try:
        return _OPS[op_name]
    except KeyError:
        raise ValueError(f"unknown op {op_name!r}; registered ops: {', '.join(list_ops())}") from None


def why_unavailable(op_name: str, impl: str, device: Any) -> Optional[str]:
    """None when ``impl`` of ``op_name`` can run on ``device`` here, else the reason it cannot."""
    spec = _spec(op_name)
    dev = _device_type(device)
    ispec = spec.impls.get(impl)
    if ispec is None:
        return f"{op_name} has no {impl!r} implementation"
    if dev not in ispec.devices:
        return f"impl {impl!r} runs on {'/'.join(ispec.devices)} tensors, not {dev}"
    return ispec.available(dev)


def available_impls(op_name: str, device: Any = "cpu") -> list[str]:
    """The impls of ``op_name`` that can run on ``device`` in this process (best ``auto`` choice first)."""
    spec = _spec(op_name)
    dev = _device_type(device)
    order = list(spec.auto_order.get(dev, spec.auto_order.get("*", ("ref",))))
    order += [i for i in IMPLS if i not in order]
    return [i for i in order if i in spec.impls and why_unavailable(op_name, i, dev) is None]


def dispatch_report() -> dict[str, dict]:
    """What ``auto`` chose per (op, device type) so far, and why preferred impls were skipped."""
    with _LOCK:
        return {f"{op}@{dev}": dict(v) for (op, dev), v in _REPORT.items()}


def strict() -> bool:
    return os.environ.get("FASTGAN_STRICT_KERNELS", "0") not in ("", "0", "false", "False")


def resolve(op_name: str, impl: str, x: torch.Tensor) -> tuple[str, Callable[..., Any]]:
    """Pick the implementation of ``op_name`` for a call whose main input is ``x``.

    The choice depends only on (op, impl, device type, dtype), so under ``torch.compile`` it is made once
    at trace time and the chosen callable is traced (``fullgraph=True`` works).
    """
    name = _resolve_name(op_name, impl, x.device.type, str(x.dtype).replace("torch.", ""))
    return name, _OPS[op_name].impls[name].fn


def _usable(op_name: str, impl: str, dev: str, dtype: str) -> Optional[str]:
    reason = why_unavailable(op_name, impl, dev)
    ispec = _OPS[op_name].impls.get(impl)
    if reason is None and ispec is not None and ispec.supports is not None:
        reason = ispec.supports(dev, getattr(torch, dtype))
    return reason


@torch.compiler.assume_constant_result
def _resolve_name(op_name: str, impl: str, dev: str, dtype: str) -> str:
    if impl not in _CHOICES:
        raise ValueError(f"{op_name}: impl must be one of {_CHOICES}, got {impl!r}")
    spec = _spec(op_name)
    if impl == "auto":
        env = os.environ.get("FASTGAN_IMPL", "auto").strip() or "auto"
        if env not in _CHOICES:
            raise ValueError(f"FASTGAN_IMPL must be one of {_CHOICES}, got {env!r}")
        impl = env
    if impl != "auto":
        reason = _usable(op_name, impl, dev, dtype)
        if reason is not None:
            raise RuntimeError(f"fastgan.ops.{op_name}: impl={impl!r} cannot run on {dev} {dtype} tensors: {reason}")
        return impl
    order = spec.auto_order.get(dev, spec.auto_order.get("*", ("ref",)))
    skipped: dict[str, str] = {}
    for name in order:
        reason = _usable(op_name, name, dev, dtype)
        if reason is not None:
            skipped[name] = reason
            continue
        _record(op_name, dev, name, skipped)
        return name
    raise RuntimeError(f"fastgan.ops.{op_name}: no implementation can run on {dev} {dtype} tensors: {skipped}")


def _record(op_name: str, dev: str, chosen: str, skipped: dict[str, str]) -> None:
    with _LOCK:
        _REPORT[(op_name, dev)] = {"chosen": chosen, "skipped": dict(skipped)}
    if not skipped:
        return
    why = "; ".join(f"{k}: {v}" for k, v in skipped.items())
    if strict():
        raise RuntimeError(
            f"fastgan.ops.{op_name}: FASTGAN_STRICT_KERNELS=1 forbids falling back to {chosen!r} on {dev} ({why})")
    key = (op_name, dev, chosen, tuple(sorted(skipped.items())))
    with _LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    warnings.warn(f"fastgan.ops.{op_name}: using impl {chosen!r} on {dev} because {why}. "
                  "Run `fastgan doctor` for details; FASTGAN_STRICT_KERNELS=1 makes this an error.",
                  FastganFallbackWarning, stacklevel=4)


def _reset_for_tests() -> None:
    with _LOCK:
        _WARNED.clear()
        _REPORT.clear()


# ---- availability checks shared by every op family -------------------------------------------------------
def ext_unavailable(family: str, device_type: str) -> Optional[str]:
    """Why the compiled kernels of ``family`` cannot run on ``device_type`` (None when they can)."""
    import fastgan

    if not fastgan.HAS_EXT:
        return f"the compiled extension fastgan._C is not loaded ({fastgan.EXT_ERROR})"
    backends = fastgan.build_info()["families"].get(family, [])
    if device_type not in backends:
        if device_type == "cuda":
            return ("fastgan._C was built without CUDA kernels; reinstall with FASTGAN_BUILD_CUDA=1 "
                    "(needs a CUDA build of torch and nvcc)")
        return f"fastgan._C has no {device_type} kernels for the {family} family"
    if device_type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is visible"
    return None


_TRITON_STATE: dict[str, Optional[str]] = {}


def triton_float_supports(device_type: str, dtype: torch.dtype, what: str = "the Triton kernels") -> Optional[str]:
    """The ``supports`` rule of most Triton impls: float32/float16/bfloat16 only, and no bfloat16 under the CPU
    interpreter (it computes bfloat16 wrongly). None when ``dtype`` is fine."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"{what} take float32/float16/bfloat16, not {dtype}"
    if device_type == "cpu" and dtype == torch.bfloat16:
        return "the Triton interpreter computes bfloat16 wrongly; use float32/float16 on CPU"
    return None


def triton_unavailable(device_type: str) -> Optional[str]:
    """Why Triton kernels cannot run on ``device_type`` (None when they can)."""
    if "import" not in _TRITON_STATE:
        try:
            import triton  # noqa: F401

            _TRITON_STATE["import"] = None
        except Exception as exc:  # pragma: no cover - depends on the environment
            _TRITON_STATE["import"] = f"triton cannot be imported ({type(exc).__name__}: {exc})"
    if _TRITON_STATE["import"] is not None:
        return _TRITON_STATE["import"]
    if device_type == "cuda":
        return None if torch.cuda.is_available() else "no CUDA device is visible"
    if device_type == "cpu":
        if os.environ.get("TRITON_INTERPRET", "0") == "1":
            return None
        return "Triton runs on CPU tensors only under its interpreter, which only the test suite switches on"
    return f"Triton does not run on {device_type} tensors"

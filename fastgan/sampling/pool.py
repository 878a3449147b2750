"""MaGNET pools: candidate latents with the top singular values of the generator's Jacobian at each, in npz files.

File layout (the one of the pools released with MaGNET and polarity sampling, so those load as they are):

* ``latents`` (N, z_dim) float32 — the generator's input latents z (also for pools whose Jacobian is w.r.t. w),
* ``svds`` (N, K) float64 — singular values σ (not their logs), descending; a row of zeros marks a failed
  computation (non-finite Jacobian) and is never sampled,
* ``labels`` (N, num_classes) float32 one-hot, only for conditional pools,
* ``meta`` — fastgan's metadata as a JSON string (absent from released files): network path and sha256, proj_dim,
  seed, latent scheme, top_k, truncation ψ, wrt, ...

Released files produced by chunked runs may have leading chunk axes (``svds`` of shape (chunks, B, K)); they are
flattened to rows as the authors' ``compile_svds.py`` does. In memory, :class:`MagnetPool` keeps
``log_sv = log(svds)`` in float64.

:func:`compute_pool` computes a pool with :func:`~fastgan.sampling.jacobian_log_singular_values`, in chunks that
are each written atomically beside the output, so an interrupted run resumes where it stopped and gives exactly
the file an uninterrupted run gives. Entry i's latent depends only on (seed, i): ``z_i =
numpy.random.RandomState(seed + i).randn(z_dim)``, the latent ``fastgan generate --seeds`` uses for seed
``seed + i``; for conditional generators entry i has class ``i % num_classes`` (balanced classes).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import shutil
import sys
import warnings
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .._io import atomic_path, sha256_file

__all__ = ["MagnetPool", "compute_pool", "pool_latents", "LATENT_SCHEME"]

PathLike = Union[str, os.PathLike]
LATENT_SCHEME = "numpy-randomstate(seed+i).randn; class i % num_classes"
POOL_FORMAT = "fastgan-magnet-pool"


class MagnetPool:
    """Latents, their descending log singular values and optional one-hot labels.

    Args:
        latents: (N, z_dim) latents (any float array or tensor).
        log_sv: (N, K) log σ, descending per row; −inf marks σ = 0 (a row of −inf is a failed computation).
        labels: None, (N, num_classes) one-hot vectors, or (N,) integer classes (made one-hot with
            ``num_classes`` or max + 1 classes).
        meta: free-form metadata (JSON-serialisable), saved with the pool.

    Attributes ``latents`` (float32), ``log_sv`` (float64), ``labels`` (float32 or None), ``meta`` (dict).
    """

    def __init__(self, latents, log_sv, labels=None, *, num_classes: Optional[int] = None,
                 meta: Optional[dict] = None):
        latents = torch.as_tensor(np.asarray(latents) if not isinstance(latents, Tensor) else latents)
        log_sv = torch.as_tensor(np.asarray(log_sv) if not isinstance(log_sv, Tensor) else log_sv)
        if latents.dim() != 2:
            raise ValueError(f"latents must have shape (N, z_dim), got {tuple(latents.shape)}")
        if log_sv.dim() != 2 or log_sv.shape[0] != latents.shape[0]:
            raise ValueError(f"log_sv must have shape (N, K) with N = {latents.shape[0]} latents, got "
                             f"{tuple(log_sv.shape)}")
        if not latents.is_floating_point() or not bool(torch.isfinite(latents).all()):
            raise ValueError("latents must be finite floats")
        if not log_sv.is_floating_point():
            raise ValueError(f"log_sv must be floats, got {log_sv.dtype}")
        log_sv = log_sv.detach().to("cpu", torch.float64)
        if bool(torch.isnan(log_sv).any()) or bool((log_sv == math.inf).any()):
            raise ValueError("log_sv has NaN or +inf entries; mark failed rows with -inf (sigma = 0) instead")
        if log_sv.shape[1] > 1 and bool((log_sv[:, 1:] > log_sv[:, :-1]).any()):
            raise ValueError("log_sv rows must be sorted in descending order (largest singular value first)")
        self.latents = latents.detach().to("cpu", torch.float32).contiguous()
        self.log_sv = log_sv.contiguous()
        self.labels = None if labels is None else self._labels(labels, num_classes)
        self.meta = dict(meta or {})

    def _labels(self, labels, num_classes: Optional[int]) -> Tensor:
        lab = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels).detach().cpu()
        n = self.latents.shape[0]
        if lab.dim() == 1:
            if lab.is_floating_point() and not bool((lab == lab.round()).all()):
                raise ValueError("1-D labels must be integer class indices")
            lab = lab.long()
            if lab.shape[0] != n or (n and int(lab.min()) < 0):
                raise ValueError(f"labels must be {n} non-negative class indices, got shape {tuple(lab.shape)}")
            c = num_classes if num_classes is not None else (int(lab.max()) + 1 if n else 1)
            if n and int(lab.max()) >= c:
                raise ValueError(f"labels go up to {int(lab.max())} but num_classes={c}")
            return torch.nn.functional.one_hot(lab, c).float()
        if lab.dim() != 2 or lab.shape[0] != n or lab.shape[1] < 1:
            raise ValueError(f"labels must have shape (N, num_classes) with N = {n}, got {tuple(lab.shape)}")
        if num_classes is not None and lab.shape[1] != num_classes:
            raise ValueError(f"labels have {lab.shape[1]} columns but num_classes={num_classes}")
        if not bool(torch.isfinite(lab.float()).all()):
            raise ValueError("labels must be finite")
        return lab.float().contiguous()

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def num_classes(self) -> int:
        """0 for an unconditional pool."""
        return 0 if self.labels is None else self.labels.shape[1]

    @property
    def classes(self) -> Optional[Tensor]:
        """(N,) int64 class of each entry (argmax of its label, as the official sampler), or None."""
        return None if self.labels is None else self.labels.argmax(dim=1)

    @property
    def valid(self) -> Tensor:
        """(N,) bool: False for failed rows (every σ = 0, i.e. log σ = −inf everywhere)."""
        if self.log_sv.shape[1] == 0:
            return torch.zeros(len(self), dtype=torch.bool)
        return ~torch.isneginf(self.log_sv).all(dim=1)

    @property
    def svds(self) -> Tensor:
        """(N, K) float64 σ = exp(log_sv), the released files' ``svds``."""
        return self.log_sv.exp()

    def __repr__(self) -> str:
        return (f"MagnetPool(N={len(self)}, z_dim={self.latents.shape[1]}, K={self.log_sv.shape[1]}, "
                f"classes={self.num_classes}, failed={int((~self.valid).sum())})")

    # ------------------------------------------------------------------ files
    def save(self, path: PathLike) -> pathlib.Path:
        """Write the npz atomically (a temporary beside ``path``, renamed when complete)."""
        path = pathlib.Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"pool files are .npz, got {str(path)!r}")
        arrays = {"latents": self.latents.numpy(), "svds": self.svds.numpy(),
                  "meta": np.array(json.dumps({"format": POOL_FORMAT, **self.meta}, sort_keys=True))}
        if self.labels is not None:
            arrays["labels"] = self.labels.numpy()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: PathLike) -> "MagnetPool":
        """Read a fastgan pool or a released MaGNET / polarity npz (keys ``latents``, ``svds``, ``labels``).

        Non-finite σ are treated as failed rows (σ = 0) with a warning; negative σ are an error.
        """
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pool file {str(path)!r} does not exist")
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ValueError(f"{str(path)!r} is not a readable npz file ({type(exc).__name__}: {exc})") from None
        with data:
            missing = [k for k in ("latents", "svds") if k not in data.files]
            if missing:
                raise ValueError(f"{str(path)!r} is not a MaGNET pool: no {missing} (keys: {sorted(data.files)})")
            latents, svds = np.asarray(data["latents"]), np.asarray(data["svds"])
            labels = np.asarray(data["labels"]) if "labels" in data.files else None
            meta = {}
            if "meta" in data.files:
                try:
                    meta = json.loads(str(data["meta"]))
                except (ValueError, TypeError):
                    raise ValueError(f"{str(path)!r}: its 'meta' entry is not JSON") from None
        if latents.ndim < 2 or svds.ndim < 2:
            raise ValueError(f"{str(path)!r}: latents {latents.shape} and svds {svds.shape} must be at least 2-D")
        latents = latents.reshape(-1, latents.shape[-1])
        svds = svds.reshape(-1, svds.shape[-1]).astype(np.float64)
        if latents.shape[0] != svds.shape[0]:
            raise ValueError(f"{str(path)!r}: {latents.shape[0]} latents but {svds.shape[0]} rows of svds")
        if labels is not None:
            if labels.size == 0:
                labels = None  # released unconditional pools store labels=[]
            else:
                labels = labels.reshape(-1, labels.shape[-1]) if labels.ndim >= 2 else labels
                if labels.shape[0] != latents.shape[0]:
                    raise ValueError(f"{str(path)!r}: {latents.shape[0]} latents but {labels.shape[0]} labels")
        bad = ~np.isfinite(svds)
        if (svds[~bad] < 0).any():
            raise ValueError(f"{str(path)!r}: svds has negative singular values")
        if bad.any():
            rows = bad.any(axis=1)
            warnings.warn(f"{path}: {int(rows.sum())} rows have non-finite singular values; treated as failed "
                          "(never sampled)", RuntimeWarning, stacklevel=2)
            svds[rows] = 0.0
        svds = -np.sort(-svds, axis=1)  # descending (released files are; a no-op then)
        with np.errstate(divide="ignore"):
            log_sv = np.log(svds)
        meta.pop("format", None)
        meta.setdefault("source", str(path))
        try:
            return cls(latents, log_sv, labels, meta=meta)
        except ValueError as exc:
            raise ValueError(f"{str(path)!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------------
# computing a pool
# ---------------------------------------------------------------------------------------------------------------

# metadata that must agree for a run to continue another's chunks (the rest — batch size, device, kernels, the
# snapshot's path — changes results by float rounding at most, so a resumed run may change it)
RESUME_KEYS = ("network_sha256", "num", "z_dim", "c_dim", "proj_dim", "proj_seed", "seed", "top_k", "truncation_psi",
               "wrt", "noise_mode", "latent_scheme", "chunk_size")


def pool_latents(seed: int, start: int, count: int, z_dim: int, c_dim: int = 0) -> tuple[Tensor, Optional[Tensor]]:
    """Latents (count, z_dim) and one-hot labels (count, c_dim) or None of pool entries start .. start + count - 1:
    ``z_i = RandomState(seed + i).randn(z_dim)`` and class ``i % c_dim``."""
    if seed < 0 or seed + start + count > 2 ** 32:
        raise ValueError(f"seed + entry index must stay in [0, 2**32): seed={seed}, entries up to {start + count}")
    z = torch.from_numpy(np.stack([np.random.RandomState(seed + i).randn(z_dim) for i in range(start, start + count)])
                         if count else np.zeros((0, z_dim))).float()
    if not c_dim:
        return z, None
    cls = torch.arange(start, start + count) % c_dim
    return z, torch.nn.functional.one_hot(cls, c_dim).float()


def _module_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's config (when it has one) and every tensor of its state_dict."""
    h = hashlib.sha256()
    cfg = getattr(module, "config", None)
    if isinstance(cfg, dict):
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _resolve_generator(generator, device: Optional[str]) -> tuple[Any, dict]:
    if isinstance(generator, (str, os.PathLike)):
        from ..nn.checkpoint import load_network

        path = pathlib.Path(generator)
        G = load_network(path, "G_ema", device=device or "cpu")
        return G, {"network": str(path), "network_sha256": sha256_file(path).hexdigest()}
    if isinstance(generator, torch.nn.Module):
        if device is not None:
            generator = generator.to(device)
        return generator, {"network": type(generator).__name__, "network_sha256": _module_sha256(generator)}
    if callable(generator):
        return generator, {"network": getattr(generator, "__name__", type(generator).__name__),
                           "network_sha256": None}
    raise TypeError(f"generator must be a snapshot path, a module or a callable, got {type(generator).__name__}")


def _read_chunk(path: pathlib.Path, count: int) -> Optional[dict]:
    """A complete chunk file's arrays, or None when it is missing or unreadable (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: np.asarray(data[k]) for k in ("latents", "log_sv", "mask")}
            out["labels"] = np.asarray(data["labels"]) if "labels" in data.files else None
    except Exception:  # noqa: BLE001 - a damaged chunk is recomputed
        return None
    if out["log_sv"].shape[0] != count or out["latents"].shape[0] != count:
        return None
    return out


def _meta_diff(a: dict, b: dict) -> list[str]:
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in RESUME_KEYS if a.get(k) != b.get(k)]


def compute_pool(generator, num: int, out: PathLike, *, proj_dim: Optional[int] = 128, top_k: Optional[int] = None,
                 batch_size: int = 16, seed: int = 0, proj_seed: int = 0, truncation_psi: float = 1.0,
                 wrt: str = "z", noise_mode: str = "const", z_dim: Optional[int] = None, c_dim: Optional[int] = None,
                 chunk_size: int = 1024, device: Optional[str] = None, max_memory: Optional[int] = None,
                 vjp: str = "auto", impl: str = "auto", progress: Optional[bool] = None,
                 log: Callable[[str], None] = print) -> MagnetPool:
    """Compute a pool of ``num`` entries into ``out`` (npz), resumably; returns it.

    ``generator`` is a snapshot path (its G_ema, loaded on ``device``), a module or a callable (then pass ``z_dim``,
    and ``c_dim`` for a conditional one). Entry i: latent ``RandomState(seed + i).randn(z_dim)``, class ``i %
    c_dim``, and the top ``top_k`` (None: all) log σ of its Jacobian from
    :func:`~fastgan.sampling.jacobian_log_singular_values` with ``proj_dim``, ``proj_seed`` (the seed of P),
    ``truncation_psi``, ``wrt``, ``batch_size``, ``max_memory``, ``vjp`` and ``impl``.

    Entries are computed in chunks of ``chunk_size``; each chunk is written atomically to
    ``<out>.parts/chunk-<start>.npz`` next to a ``meta.json``. Run again with the same settings after an
    interruption and the finished chunks are kept: the result is the file an uninterrupted run writes. When all
    chunks exist they are joined into ``out`` (written atomically) and the parts folder is removed. A run whose
    settings (``RESUME_KEYS``) differ from the existing parts or file stops with the differences listed. A
    ``RuntimeWarning`` counts latents whose Jacobian was not finite (stored as σ = 0 rows, never sampled).
    ``progress``: a tqdm bar (None = only when stderr is a terminal). A module generator is put in eval mode.
    """
    from .magnet import jacobian_log_singular_values

    out = pathlib.Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must be an .npz file, got {str(out)!r}")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}")
    for name, v, low in (("chunk_size", chunk_size, 1), ("batch_size", batch_size, 1), ("seed", seed, 0),
                         ("proj_seed", proj_seed, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    if seed + num > 2 ** 32:
        raise ValueError(f"seed + num must be <= 2**32 (entry i uses seed + i), got {seed} + {num}")
    G, net_meta = _resolve_generator(generator, device)
    z_dim = getattr(G, "z_dim", None) if z_dim is None else z_dim
    if not isinstance(z_dim, int) or z_dim < 1:
        raise ValueError("z_dim is unknown: pass z_dim= for a generator without a z_dim attribute")
    c_dim = int(getattr(G, "c_dim", 0) or 0) if c_dim is None else c_dim
    if isinstance(G, torch.nn.Module):
        G.eval()
    meta = dict(net_meta, num=num, z_dim=z_dim, c_dim=c_dim, proj_dim=proj_dim, proj_seed=proj_seed, seed=seed,
                top_k=top_k, truncation_psi=float(truncation_psi), wrt=wrt, noise_mode=noise_mode,
                latent_scheme=LATENT_SCHEME, chunk_size=chunk_size, batch_size=batch_size)

    if out.exists():
        done = MagnetPool.load(out)
        diff = _meta_diff(done.meta, meta)
        if diff:
            raise FileExistsError(f"{str(out)!r} exists and was made with other settings ({'; '.join(diff)}); "
                                  "remove it or choose another --out")
        log(f"{out}: complete ({len(done)} entries), nothing to do")
        return done

    parts = out.with_name(out.name + ".parts")
    meta_file = parts / "meta.json"
    if parts.is_dir() and meta_file.is_file():
        try:
            old = json.loads(meta_file.read_text())
        except ValueError:
            raise ValueError(f"{str(meta_file)!r} is not JSON; remove {str(parts)!r} to start over") from None
        diff = _meta_diff(old, meta)
        if diff:
            raise FileExistsError(f"{str(parts)!r} holds chunks of a run with other settings ({'; '.join(diff)}); "
                                  f"remove it to start over, or rerun with those settings")
    else:
        parts.mkdir(parents=True, exist_ok=True)
        with atomic_path(meta_file) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))

    starts = list(range(0, num, chunk_size))
    chunks: dict[int, dict] = {}
    for s in starts:
        got = _read_chunk(parts / f"chunk-{s:010d}.npz", min(chunk_size, num - s))
        if got is not None:
            chunks[s] = got
    done_n = sum(c["log_sv"].shape[0] for c in chunks.values())
    if done_n:
        log(f"{out}: resuming, {done_n} of {num} entries already computed in {parts}")
    from tqdm import tqdm

    bar = tqdm(total=num, initial=done_n, unit="latent", desc=out.name, file=sys.stderr, dynamic_ncols=True,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    try:
        for s in starts:
            if s in chunks:
                continue
            count = min(chunk_size, num - s)
            z, c = pool_latents(seed, s, count, z_dim, c_dim)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                log_sv, mask = jacobian_log_singular_values(
                    G, z, c=c, proj_dim=proj_dim, top_k=top_k, seed=proj_seed, batch_size=batch_size,
                    truncation_psi=truncation_psi, wrt=wrt, noise_mode=noise_mode, max_memory=max_memory, vjp=vjp,
                    return_mask=True, progress=bar.update, impl=impl)
            for w in caught:  # re-raise everything but the per-chunk non-finite count (summed below)
                if "non-finite output or Jacobian" not in str(w.message):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            arrays = {"latents": z.numpy(), "log_sv": log_sv.numpy(), "mask": mask.numpy()}
            if c is not None:
                arrays["labels"] = c.numpy()
            with atomic_path(parts / f"chunk-{s:010d}.npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **arrays)
            chunks[s] = arrays
    finally:
        bar.close()

    latents = np.concatenate([chunks[s]["latents"] for s in starts])
    log_sv = np.concatenate([chunks[s]["log_sv"] for s in starts])
    mask = np.concatenate([chunks[s]["mask"] for s in starts])
    labels = np.concatenate([chunks[s]["labels"] for s in starts]) if c_dim else None
    failed = int((~mask).sum())
    if failed:
        warnings.warn(f"{out}: {failed} of {num} latents gave a non-finite output or Jacobian; stored as sigma = 0 "
                      "rows (never sampled)", RuntimeWarning, stacklevel=2)
    import fastgan

    meta.update(num_failed=failed, fastgan_version=fastgan.__version__)
    pool = MagnetPool(latents, log_sv, labels, meta=meta)
    pool.save(out)
    shutil.rmtree(parts, ignore_errors=True)
    log(f"wrote {out}: {num} latents, {log_sv.shape[1]} log singular values each"
        + (f", {failed} failed" if failed else ""))
    return MagnetPool.load(out)

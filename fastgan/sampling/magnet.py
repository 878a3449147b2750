"""MaGNET's Jacobian log-volume: the top singular values of a generator's (projected) Jacobian per latent.

For a latent z and the flattened output y = vec(G(z)) (D values), J = ∂y/∂z is D × d. MaGNET measures the
volume of the learned manifold at z with the product of J's largest singular values; to keep the work at a few
VJPs it projects the output first: J_P = P·J with P (proj_dim × D) a fixed random matrix with orthonormal rows
(:func:`fastgan.ops.random_projection`; when larger than ``DENSE_P_BYTES`` it is never stored densely and its
rows are regenerated chunk by chunk, else it is materialised once and reused). Row i of
J_P is the vector-Jacobian product of the cotangent P[i] (an image), so J_P costs one forward pass per latent batch
and proj_dim backward passes, run as *batched* VJPs: ``chunk`` cotangents at once, vmapped over the cotangent
axis (``torch.func.vjp`` + ``torch.func.vmap``, or ``torch.autograd.grad(..., is_grads_batched=True)`` for
generators whose custom autograd functions torch.func cannot transform; ``vjp="auto"`` picks). The top_k
log σ then come from :func:`fastgan.ops.log_singular_values` (Gram matrix and a float64 symmetric eigensolve).
``proj_dim=None`` uses P = I: the exact Jacobian, accumulated as the float64
d × d Gram JᵀJ over chunks of output rows (memory O(d²), not O(D·d)).

Forward mode. When the latent is smaller than the projection (d < proj_dim, or any d for the exact Jacobian),
d Jacobian-vector products are fewer passes than proj_dim VJPs: ``direction="forward"`` gets the columns J·e_j for
``chunk`` unit tangents at once and projects each column with the same P (so both directions compute the same J_P,
to float rounding). fastgan's Generator has its forward mode written out
(:meth:`~fastgan.nn.Generator.forward_tangents`: all tangents through each layer at once, about half the time of
the traced transform); other generators go through ``torch.func.jvp`` vmapped over the tangents (fastgan's fused
modulated conv has a forward-mode rule there too). ``direction="auto"`` (the default) takes forward mode when
d < proj_dim (exact: when the d columns fit in ``max_memory``) and the generator supports it (``torch.func.jvp``
is tried on the first batch), and reverse mode otherwise; for fastgan's Generator also when d = proj_dim, since a
written-out tangent pass costs less than a VJP (CPU, 64 px tiny generator, 4 latents, d = proj_dim = 64: 1.30 s
forward vs 1.73 s reverse; at proj_dim 32 reverse wins, 0.62 s vs 0.81 s).

Since P has orthonormal rows, σ_i(P·J) ≤ σ_i(J) (interlacing), with equality when proj_dim = D.

Memory. A batched VJP over ``chunk`` cotangents holds about ``chunk`` copies of the activation gradients of the
latent batch in flight. Unless ``chunk`` is given, it is chosen per call as ``max_memory // (S + B·D·4)`` (at
least 1, at most proj_dim), where S is the number of bytes autograd saved during the batch's forward (measured
with saved-tensor hooks, parameters excluded) and B·D·4 the cotangents. ``max_memory`` defaults to half the free
memory of the CUDA device, or 1 GiB on the CPU; on the CPU a chunk also has at most ``CPU_MAX_CHUNK`` (16
cotangents, 32 tangents), because wider passes are compute-bound there and only leave the caches. ``batch_size``
latents go through the generator at once.

Determinism. The generator must be a deterministic function of its inputs and treat batch samples
independently (eval mode; no batch statistics): fastgan's :class:`~fastgan.nn.Generator` runs with
``noise_mode="const"`` (or ``"none"``); ``"random"`` is refused. It also runs in float32 (``force_fp32``).

Non-finite rows. A latent whose output or Jacobian has NaN/Inf gets log σ = −inf in every column (σ = 0, the
marker the released MaGNET pools use for failed computations; samplers never draw such rows), a
``RuntimeWarning`` says how many, and ``return_mask=True`` also returns the (N,) bool mask of finite rows.

Style-based generators (fastgan's Generator, or anything with ``mapping``, ``synthesis`` and ``num_ws`` that
takes ``truncation_psi`` like StyleGAN2-ADA's): ``wrt="z"`` differentiates G(z, c) with truncation ψ;
``wrt="w"`` differentiates the synthesis network w.r.t. one w (after the mapping network and truncation)
broadcast to all its layers, so d = w_dim. Any other callable ``generator(z)`` / ``generator(z, c)`` supports
``wrt="z"`` and ψ = 1 only.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Union

import torch
from torch import Tensor

__all__ = ["jacobian_log_singular_values", "default_max_memory", "is_style_generator"]

CPU_MAX_MEMORY = 1 << 30
# On the CPU wider batched passes are compute-bound and only leave the caches. Measured on the tiny 64 px generator,
# 2 latents: reverse 0.88 s at 16 cotangents vs 1.47 s at 64; forward (written-out tangents) 0.31 s at 32 tangents
# vs 0.41 s at 16 and 0.45 s at 64.
CPU_MAX_CHUNK = {"reverse": 16, "forward": 32}
WRT = ("z", "w")
VJP_MODES = ("auto", "func", "autograd")
DIRECTIONS = ("auto", "reverse", "forward")


def default_max_memory(device: Union[str, torch.device]) -> int:
    """Bytes the batched VJPs may use: half the free memory of a CUDA device, 1 GiB elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2)
    return CPU_MAX_MEMORY


def is_style_generator(generator) -> bool:
    """True for generators with a mapping and a synthesis network (fastgan's Generator, StyleGAN2-ADA's G)."""
    return all(hasattr(generator, a) for a in ("mapping", "synthesis", "num_ws"))


def _device_of(generator, fallback: torch.device) -> torch.device:
    if isinstance(generator, torch.nn.Module):
        for t in generator.parameters():
            return t.device
        for t in generator.buffers():
            return t.device
    return fallback


def _int_arg(v, name: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < low:
        raise ValueError(f"{name} must be at least {low}, got {v}")
    return v


def _make_fn(generator, wrt: str, truncation_psi: float, noise_mode: str):
    """(prepare(z, c) -> variable x, f(x, c) -> output, tangents) for the chosen differentiation variable.
    ``tangents(x, c, v)`` -> (y (B, D), J·v (R, B, D)) for R tangents v (R, B, d) is the written-out forward mode of
    fastgan's Generator (:meth:`~fastgan.nn.Generator.forward_tangents`), None for other generators."""
    if is_style_generator(generator):
        from ..nn.networks import Generator

        ours = isinstance(generator, Generator)
        kw = dict(noise_mode=noise_mode)
        if ours:
            kw["force_fp32"] = True
        if wrt == "z":
            def prepare(z, c):
                return z

            def f(x, c):
                return generator(x, c, truncation_psi=truncation_psi, **kw)

            def tangents(x, c, v):
                img, dimg = generator.forward_tangents(x, v, c, truncation_psi=truncation_psi, noise_mode=noise_mode)
                return img.flatten(1), dimg.flatten(2)
        else:
            def prepare(z, c):
                with torch.no_grad():
                    ws = generator.mapping(z, c, truncation_psi=truncation_psi)
                return ws[:, 0].float()

            def f(x, c):
                return generator.synthesis(x.unsqueeze(1).expand(-1, generator.num_ws, -1), **kw)

            def tangents(x, c, v):
                n = generator.num_ws
                img, dimg = generator.synthesis.forward_tangents(x.unsqueeze(1).expand(-1, n, -1),
                                                                 v.unsqueeze(2).expand(-1, -1, n, -1), noise_mode)
                return img.flatten(1), dimg.flatten(2)
        return prepare, f, (tangents if ours else None)
    if wrt != "z":
        raise ValueError("wrt='w' needs a style-based generator (with mapping, synthesis and num_ws attributes)")
    if truncation_psi != 1:
        raise ValueError("truncation_psi != 1 needs a style-based generator (with a mapping network); wrap other "
                         "generators in a callable that truncates")
    if not callable(generator):
        raise TypeError(f"generator must be callable, got {type(generator).__name__}")

    def f(x, c):
        return generator(x) if c is None else generator(x, c)

    return (lambda z, c: z), f, None


class _SavedBytes:
    """Bytes autograd saves during a forward (parameters and buffers excluded, each storage counted once)."""

    def __init__(self, exclude: set):
        self.exclude, self.seen, self.total = exclude, set(), 0

    def pack(self, t: Tensor):
        try:
            ptr = t.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):
            return t
        if ptr not in self.exclude and ptr not in self.seen:
            self.seen.add(ptr)
            self.total += t.untyped_storage().nbytes()
        return t

    @staticmethod
    def unpack(t: Tensor) -> Tensor:
        return t


def _param_ptrs(generator) -> set:
    if not isinstance(generator, torch.nn.Module):
        return set()
    out = set()
    for t in list(generator.parameters()) + list(generator.buffers()):
        try:
            out.add(t.untyped_storage().data_ptr())
        except (RuntimeError, NotImplementedError):
            pass
    return out


DENSE_P_BYTES = 64 << 20  # P (proj_dim x D float32) up to this size is materialised once and reused
_DENSE_P: dict = {}


def _dense_projection(proj_dim: int, dim: int, seed: int, device, impl: str) -> Optional[Tensor]:
    """The (proj_dim, D) float32 P of ``random_projection`` as a dense matrix when it is at most DENSE_P_BYTES
    (kept for the next call with the same arguments, one at a time), else None. Regenerating P's rows costs far
    more than a GEMM with them, and small generators compute many batches with one P."""
    if proj_dim * dim * 4 > DENSE_P_BYTES:
        return None
    key = (proj_dim, dim, seed, str(device), impl)
    if key not in _DENSE_P:
        from ..ops import random_projection

        _DENSE_P.clear()
        eye = torch.eye(proj_dim, dtype=torch.float32, device=device)
        _DENSE_P[key] = random_projection(eye, proj_dim, seed, True, shape=dim, impl=impl)
    return _DENSE_P[key]


def _cotangents(proj_dim: Optional[int], rows: slice, dim: int, seed: int, device, impl: str) -> Tensor:
    """(rows, D) float32: rows of P (or of the identity for the exact Jacobian)."""
    n = rows.stop - rows.start
    if proj_dim is None:
        v = torch.zeros(n, dim, dtype=torch.float32, device=device)
        v[torch.arange(n, device=device), torch.arange(rows.start, rows.stop, device=device)] = 1
        return v
    dense = _dense_projection(proj_dim, dim, seed, device, impl)
    if dense is not None:
        return dense[rows]
    from ..ops import random_projection

    sel = torch.zeros(n, proj_dim, dtype=torch.float32, device=device)
    sel[torch.arange(n, device=device), torch.arange(rows.start, rows.stop, device=device)] = 1
    return random_projection(sel, proj_dim, seed, True, shape=dim, impl=impl)


def _batched_vjp(vjp_mode: str, y: Optional[Tensor], x: Tensor, vjp_fn: Optional[Callable], v: Tensor) -> Tensor:
    """(R, B, d) VJPs of R cotangents v (R, D), each applied to every sample of the batch."""
    cot = v.unsqueeze(1).expand(v.shape[0], x.shape[0], v.shape[1])
    if vjp_mode == "func":
        return torch.func.vmap(vjp_fn)(cot)[0]
    (g,) = torch.autograd.grad(y, x, cot, retain_graph=True, is_grads_batched=True)
    return g


def _unit_tangents(x: Tensor, cols: slice) -> Tensor:
    """(R, B, d): the unit vectors e_j, j in ``cols``, for every sample of the batch x (B, d)."""
    r = cols.stop - cols.start
    tangents = torch.zeros(r, x.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
    tangents[torch.arange(r), :, torch.arange(cols.start, cols.stop)] = 1
    return tangents


def _batched_jvp(f, x: Tensor, cb: Optional[Tensor], cols: slice,
                 written: Optional[Callable] = None) -> tuple[Tensor, Tensor]:
    """(y (B, D), J columns (R, B, D)): the output and J·e_j for the unit tangents j in ``cols``, for every sample;
    from the generator's written-out forward mode when given, else ``torch.func.jvp`` vmapped over the tangents."""
    tangents = _unit_tangents(x, cols)
    if written is not None:
        return written(x, cb, tangents)

    def one(v):
        return torch.func.jvp(lambda t: f(t, cb).flatten(1).float(), (x,), (v,))

    return torch.func.vmap(one, out_dims=(None, 0))(tangents)


def _supports_jvp(f, x: Tensor, cb: Optional[Tensor]) -> bool:
    """Whether ``torch.func.jvp`` runs through the generator (one tangent of one sample)."""
    try:
        _batched_jvp(f, x[:1], None if cb is None else cb[:1], slice(0, 1))
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


def _forward_jacobian(f, x: Tensor, cb: Optional[Tensor], d: int, step: int, proj_dim: Optional[int], seed: int,
                      impl: str, written: Optional[Callable] = None) -> tuple[Tensor, Tensor]:
    """Forward mode: (finite mask (B,), P·J (B, proj_dim, d) float32, or the float64 Gram JᵀJ (B, d, d) when
    proj_dim is None), from the columns J·e_j in chunks of ``step`` tangents."""
    from ..ops import random_projection

    finite, cols = None, []
    for c0 in range(0, d, step):
        y, jc = _batched_jvp(f, x, cb, slice(c0, min(d, c0 + step)), written)  # (B, D), (R, B, D)
        if finite is None:
            finite = torch.isfinite(y).all(dim=1)
        finite &= torch.isfinite(jc).all(dim=2).all(dim=0)
        jc = torch.nan_to_num(jc.detach())
        if proj_dim is not None:
            dense = _dense_projection(proj_dim, jc.shape[2], seed, jc.device, impl)
            flat = jc.flatten(0, 1)
            flat = flat @ dense.t() if dense is not None else random_projection(flat, proj_dim, seed, impl=impl)
            jc = flat.unflatten(0, jc.shape[:2])
        cols.append(jc)
    jac = torch.cat(cols).permute(1, 2, 0)  # (B, proj_dim or D, d)
    if proj_dim is not None:
        return finite, jac
    gram = torch.stack([(j.double().t() @ j.double()) for j in jac])
    return finite, gram


def _reverse_jacobian(f, x: Tensor, cb: Optional[Tensor], mode: str, step: int, proj_dim: Optional[int],
                      k_total: int, out_dim: int, seed: int, impl: str, device, exact: bool):
    """Reverse mode: (finite mask (B,), P·J (B, proj_dim, d) or the float64 Gram JᵀJ (B, d, d) when exact, the
    VJP mode used) from ``k_total`` cotangents in chunks of ``step``. ``mode="auto"`` tries torch.func first."""
    vjp_fn = y = None
    with torch.enable_grad():
        if mode == "auto":  # torch.func where the generator supports it, else plain autograd
            try:
                y, vjp_fn = torch.func.vjp(lambda t: f(t, cb).flatten(1).float(), x)
                _batched_vjp("func", y, x, vjp_fn, y.new_zeros(1, y.shape[1]))
                mode = "func"
            except (RuntimeError, NotImplementedError):
                mode = "autograd"
                y = vjp_fn = None
        if mode == "func":
            if y is None:
                y, vjp_fn = torch.func.vjp(lambda t: f(t, cb).flatten(1).float(), x)
        else:
            xg = x.clone().requires_grad_(True)
            y = f(xg, cb).flatten(1).float()
            x = xg
    finite = torch.isfinite(y).all(dim=1)
    bsz, d = x.shape
    acc = torch.zeros(bsz, d, d, dtype=torch.float64, device=device) if exact else None
    rows = []
    for r0 in range(0, k_total, step):
        sl = slice(r0, min(k_total, r0 + step))
        v = _cotangents(proj_dim, sl, out_dim, seed, device, impl)
        g = _batched_vjp(mode, y, x, vjp_fn, v).transpose(0, 1)  # (B, R, d)
        finite &= torch.isfinite(g).flatten(1).all(dim=1)
        if exact:
            g64 = torch.nan_to_num(g).double()
            acc += g64.transpose(1, 2) @ g64
        else:
            rows.append(g.detach())
    return finite, (acc if exact else torch.cat(rows, dim=1)), mode


def jacobian_log_singular_values(generator, z: Tensor, *, c: Optional[Tensor] = None,
                                 proj_dim: Optional[int] = 128, top_k: Optional[int] = None, seed: int = 0,
                                 batch_size: int = 16, truncation_psi: float = 1.0, wrt: str = "z",
                                 noise_mode: str = "const", max_memory: Optional[int] = None,
                                 chunk: Optional[int] = None, vjp: str = "auto", direction: str = "auto",
                                 return_mask: bool = False,
                                 progress: Optional[Callable[[int], None]] = None,
                                 impl: str = "auto") -> Union[Tensor, tuple[Tensor, Tensor]]:
    """(N, top_k) float64 descending log singular values of J_P = ∂ P·vec(G(z)) / ∂z (or ∂w) per latent.

    Args:
        generator: fastgan Generator, a StyleGAN-like G (``mapping``/``synthesis``), or any callable
            ``generator(z)`` / ``generator(z, c)`` -> (N, ...) outputs. Runs on its own device (parameters').
        z: (N, d) latents. c: (N, c_dim) labels for conditional generators.
        proj_dim: rows of the random orthonormal projection P (128 as MaGNET); None = exact Jacobian (P = I).
        top_k: singular values kept (None = all, min(proj_dim or D, d)).
        seed: seed of P (``fastgan.ops.random_projection``).
        batch_size: latents per generator forward.
        truncation_psi: ψ for style-based generators. wrt: ``"z"`` or ``"w"`` (style-based only).
        noise_mode: per-pixel noise of fastgan's Generator (``"const"`` or ``"none"``).
        max_memory: bytes the batched VJPs may hold (see the module docstring). chunk: cotangents per batched
            VJP, overriding the memory rule.
        vjp: ``"func"`` (``torch.func.vjp`` + ``vmap``: batching rules of every op), ``"autograd"`` (one
            autograd graph and ``torch.autograd.grad(is_grads_batched=True)``: also works for custom autograd
            functions without functorch support, e.g. fastgan's C++ kernels, whose backward vmap then runs per
            cotangent) or ``"auto"``: ``"func"`` when the generator supports it (tried on the first batch),
            else ``"autograd"``.
        direction: ``"reverse"`` (proj_dim VJPs per latent batch), ``"forward"`` (d JVPs, ``torch.func.jvp``;
            ``chunk`` then counts tangents) or ``"auto"``: forward when d < proj_dim (d <= proj_dim for fastgan's
            Generator; exact Jacobian: when the d columns fit in ``max_memory``) and the generator supports it,
            else reverse. See the module docstring.
        return_mask: also return the (N,) bool mask of rows whose output and Jacobian were finite.
        progress: called with the number of latents finished after every batch.
        impl: kernels of ``random_projection`` and ``log_singular_values`` (``"auto"``, ``"ref"``, ...).
    """
    if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ValueError(f"z must be a float tensor of shape (N, d), got "
                         f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}")
    n = z.shape[0]
    if n == 0:
        raise ValueError("z is empty: no latents to differentiate")
    if c is not None and (not isinstance(c, Tensor) or c.dim() != 2 or c.shape[0] != n):
        raise ValueError(f"c must be a tensor of shape (N, c_dim) with N = {n}, got "
                         f"{tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__}")
    if wrt not in WRT:
        raise ValueError(f"wrt must be one of {WRT}, got {wrt!r}")
    if vjp not in VJP_MODES:
        raise ValueError(f"vjp must be one of {VJP_MODES}, got {vjp!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if noise_mode not in ("const", "none"):
        raise ValueError(f"noise_mode must be 'const' or 'none' (the Jacobian of a random-noise generator is not "
                         f"reproducible), got {noise_mode!r}")
    if isinstance(truncation_psi, bool) or not isinstance(truncation_psi, (int, float)) or \
            not math.isfinite(truncation_psi):
        raise ValueError(f"truncation_psi must be a finite number, got {truncation_psi!r}")
    if proj_dim is not None:
        _int_arg(proj_dim, "proj_dim", 1)
    if top_k is not None:
        _int_arg(top_k, "top_k", 1)
    _int_arg(batch_size, "batch_size", 1)
    _int_arg(seed, "seed", 0)
    if chunk is not None:
        _int_arg(chunk, "chunk", 1)
    if max_memory is not None:
        _int_arg(max_memory, "max_memory", 1)

    device = _device_of(generator, z.device)
    prepare, f, written = _make_fn(generator, wrt, float(truncation_psi), noise_mode)
    if max_memory is None:
        max_memory = default_max_memory(device)
    exclude = _param_ptrs(generator)
    outs, masks = [], []
    step = None
    mode = vjp
    forward = {"forward": True, "reverse": False}.get(direction)  # None: decided on the first batch
    for b0 in range(0, n, batch_size):
        zb = z[b0:b0 + batch_size].to(device, torch.float32)
        cb = None if c is None else c[b0:b0 + batch_size].to(device, torch.float32)
        x = prepare(zb, cb).detach()
        bsz, d = x.shape
        if step is None:  # first (largest) batch: output size and the bytes autograd saves per forward
            meter = _SavedBytes(exclude)
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
                probe = f(x.clone().requires_grad_(True), cb)
            if probe.shape[0] != bsz:
                raise ValueError(f"the generator returned {probe.shape[0]} outputs for a batch of {bsz} latents")
            if mode == "autograd" and not probe.requires_grad:
                raise ValueError(f"the generator's output does not depend on {wrt} through autograd (no gradient)")
            out_dim = probe[0].numel()
            del probe
            if proj_dim is not None and proj_dim > out_dim:
                raise ValueError(f"proj_dim={proj_dim} exceeds the output size D={out_dim}; use proj_dim <= D or None")
            k_total = out_dim if proj_dim is None else proj_dim
            m = min(k_total, d)
            keep = m if top_k is None else top_k
            if keep > m:
                raise ValueError(f"top_k={top_k} exceeds the {m} singular values available (min of "
                                 f"{'D' if proj_dim is None else 'proj_dim'}={k_total} and d={d})")
            columns_fit = proj_dim is not None or bsz * out_dim * d * 12 <= max_memory  # fp32 J + fp64 Gram pass
            if forward is None:
                if written is not None:  # a tangent pass costs less than a VJP there: ties go forward too
                    forward = d <= k_total and columns_fit
                else:
                    forward = d < k_total and columns_fit and _supports_jvp(f, x, cb)
            elif forward and written is None and not _supports_jvp(f, x, cb):
                raise ValueError("direction='forward' needs torch.func.jvp through the generator, and it failed "
                                 "(an op without a forward-mode rule?); use direction='reverse' or 'auto'")
            per_pass = max(1, meter.total + bsz * out_dim * 4)
            cap = CPU_MAX_CHUNK["forward" if forward else "reverse"] if device.type == "cpu" else k_total
            step = chunk or max(1, min(d if forward else k_total, max_memory // per_pass, cap))
        exact = proj_dim is None
        if forward:
            finite, jac = _forward_jacobian(f, x, cb, d, step, proj_dim, seed, impl, written)
        else:
            finite, jac, mode = _reverse_jacobian(f, x, cb, mode, step, proj_dim, k_total, out_dim, seed, impl,
                                                  device, exact)
        res = torch.full((bsz, keep), -math.inf, dtype=torch.float64, device=device)
        if bool(finite.any()):
            if exact:
                lam = torch.linalg.eigvalsh(jac[finite]).flip(-1)[:, :m][:, :keep]
                with torch.no_grad():
                    res[finite] = 0.5 * torch.log(lam.clamp_min(0))
            else:
                from ..ops import log_singular_values

                res[finite] = log_singular_values(jac[finite].float(), keep, impl=impl).to(device)
        outs.append(res.cpu())
        masks.append(finite.cpu())
        if progress is not None:
            progress(bsz)
    log_sv = torch.cat(outs)
    mask = torch.cat(masks)
    bad = int((~mask).sum())
    if bad:
        warnings.warn(f"jacobian_log_singular_values: {bad} of {n} latents gave a non-finite output or Jacobian; "
                      "their log singular values are -inf (sigma = 0, never sampled)", RuntimeWarning, stacklevel=2)
    return (log_sv, mask) if return_mask else log_sv

"""MaGNET: the Jacobian log-volume engine against autograd Jacobians, pools (npz, released layout, resumable
computation) and the volume-weighted sampler (frequencies, Gumbel-top-k, classes, mixing, uniformity on a curve)."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from fastgan.nn.networks import Generator
from fastgan.ops import random_projection
from fastgan.sampling import (MagnetPool, MagnetSampler, compute_pool, jacobian_log_singular_values,
                              pool_latents)
from fastgan.sampling import pool as pool_mod
from fastgan.sampling.sampler import LOG_WEIGHT_CLIP


@pytest.fixture(autouse=True)
def _quiet_fallbacks():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*using impl 'ref'")
        yield


def jlsv(*args, **kwargs):
    return jacobian_log_singular_values(*args, **kwargs)


class Toy(torch.nn.Module):
    """A smooth 6-d -> (2, 4, 5) generator with an exact Jacobian from autograd."""

    z_dim = 6

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Parameter(torch.randn(16, 6, generator=g) / 2, requires_grad=False)
        self.b = torch.nn.Parameter(torch.randn(40, 16, generator=g) / 4, requires_grad=False)
        self.calls = 0

    def forward(self, z):
        self.calls += 1
        return (torch.tanh(z @ self.a.t()) @ self.b.t() + 0.1 * z.sum(1, keepdim=True)).view(-1, 2, 4, 5)


def autograd_jacobians(fn, z):
    """(N, D, d) float64 Jacobians of fn (one latent -> flat output) per row of z."""
    return torch.stack([torch.autograd.functional.jacobian(lambda t: fn(t[None]).flatten(), zi).double()
                        for zi in z])


def tiny_g(c_dim=0, seed=0):
    torch.manual_seed(seed)
    return Generator(z_dim=12, c_dim=c_dim, w_dim=12, img_resolution=8, channel_base=64, channel_max=8,
                     mapping_layers=1).eval()


# ------------------------------------------------------------------------------------------------ engine


def test_exact_jacobian_equals_autograd_svdvals():
    G = Toy()
    z = torch.randn(5, 6)
    want = torch.linalg.svdvals(autograd_jacobians(G, z)).log()
    got = jlsv(G, z, proj_dim=None)
    assert got.shape == (5, 6) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    assert bool((got[:, :-1] >= got[:, 1:]).all())  # descending
    top = jlsv(G, z, proj_dim=None, top_k=3)
    torch.testing.assert_close(top, want[:, :3], atol=2e-5, rtol=0)


def test_square_orthogonal_projection_preserves_sigma():
    G = Toy()
    z = torch.randn(4, 6)
    exact = jlsv(G, z, proj_dim=None)
    torch.testing.assert_close(jlsv(G, z, proj_dim=40, seed=3), exact, atol=2e-5, rtol=0)


def test_projection_interlaces_and_uses_the_seeded_projection():
    G = Toy()
    z = torch.randn(6, 6)
    jac = autograd_jacobians(G, z)  # (N, 40, 6)
    exact = torch.linalg.svdvals(jac).log()
    for k in (8, 5, 3):
        got = jlsv(G, z, proj_dim=k, seed=7)
        assert got.shape == (6, min(k, 6))
        assert bool((got <= exact[:, :got.shape[1]] + 1e-5).all())  # sigma_i(PJ) <= sigma_i(J)
        P = random_projection(torch.eye(k, dtype=torch.float64), k, 7, True, shape=40)  # (k, D) rows of P
        want = torch.linalg.svdvals(P @ jac).log()
        torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    # another projection seed gives other values
    assert not torch.allclose(jlsv(G, z, proj_dim=3, seed=8), jlsv(G, z, proj_dim=3, seed=7), atol=1e-3)


def test_chunk_batch_and_vjp_mode_invariance():
    G = Toy()
    z = torch.randn(7, 6)
    base = jlsv(G, z, proj_dim=12, seed=1)
    for kw in (dict(chunk=1), dict(chunk=5, batch_size=3), dict(batch_size=1), dict(max_memory=1),
               dict(vjp="func", batch_size=4), dict(vjp="autograd", chunk=7)):
        torch.testing.assert_close(jlsv(G, z, proj_dim=12, seed=1, **kw), base, atol=1e-5, rtol=0, msg=str(kw))
    exact = jlsv(G, z, proj_dim=None)
    torch.testing.assert_close(jlsv(G, z, proj_dim=None, chunk=7, batch_size=2), exact, atol=1e-5, rtol=0)


def test_forward_and_reverse_directions_agree(monkeypatch):
    """d JVPs (forward mode) and proj_dim VJPs (reverse mode) give the same J_P and exact Jacobian."""
    G = Toy()
    z = torch.randn(5, 6)
    for proj in (12, 3, None):
        fwd = jlsv(G, z, proj_dim=proj, seed=2, direction="forward", chunk=4)
        rev = jlsv(G, z, proj_dim=proj, seed=2, direction="reverse")
        torch.testing.assert_close(fwd, rev, atol=1e-5, rtol=0, msg=str(proj))
        torch.testing.assert_close(jlsv(G, z, proj_dim=proj, seed=2), fwd, atol=1e-5, rtol=0)  # auto
    # fastgan's Generator (its written-out forward mode), with the fused kernels and with the reference path
    for impl in ("auto", "ref"):
        monkeypatch.setenv("FASTGAN_IMPL", impl)
        Gt = tiny_g()
        zt = torch.randn(3, 12)
        fwd = jlsv(Gt, zt, proj_dim=16, top_k=6, direction="forward", chunk=5)
        rev = jlsv(Gt, zt, proj_dim=16, top_k=6, direction="reverse")
        torch.testing.assert_close(fwd, rev, atol=5e-4, rtol=0, msg=impl)


def test_dense_projection_cache_equals_streamed_rows(monkeypatch):
    """Small P is materialised once and reused; the values equal regenerating its rows chunk by chunk."""
    from fastgan.sampling import magnet as mg

    G = Toy()
    z = torch.randn(4, 6)
    cached = {d: jlsv(G, z, proj_dim=12, seed=4, direction=d, chunk=5) for d in ("forward", "reverse")}
    assert any(k[:3] == (12, 40, 4) for k in mg._DENSE_P)
    monkeypatch.setattr(mg, "DENSE_P_BYTES", 0)
    mg._DENSE_P.clear()
    for d, want in cached.items():
        torch.testing.assert_close(jlsv(G, z, proj_dim=12, seed=4, direction=d, chunk=5), want, atol=1e-6, rtol=0)
    assert not mg._DENSE_P
    assert mg._dense_projection(12, 40, 4, "cpu", "auto") is None


class _NoForwardMode(torch.autograd.Function):
    """tanh without a jvp rule: torch.func.jvp cannot go through it."""

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


def test_auto_direction_falls_back_to_reverse_without_forward_mode():
    G = Toy()
    z = torch.randn(3, 6)
    fn = lambda t: _NoForwardMode.apply(G(t))  # noqa: E731
    want = jlsv(lambda t: torch.tanh(G(t)), z, proj_dim=12, direction="reverse")
    torch.testing.assert_close(jlsv(fn, z, proj_dim=12), want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="direction='forward' needs torch.func.jvp"):
        jlsv(fn, z, proj_dim=12, direction="forward")


def _proj_svd(fn, x, k, seed=0):
    """log svdvals of the autograd Jacobian of P vec(fn(x)) per latent, P from random_projection (k x D)."""
    dim = fn(x[:1]).numel()
    P = random_projection(torch.eye(k), k, seed, True, shape=dim)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda t: P @ fn(t[None]).flatten(), xi) for xi in x])
    return torch.linalg.svdvals(jac.double()).log()


def test_tiny_generator_wrt_z_and_w():
    G = tiny_g()
    z = torch.randn(3, 12)
    k, top = 16, 6
    # wrt z, with truncation
    got = jlsv(G, z, proj_dim=k, top_k=top, truncation_psi=0.7)
    want = _proj_svd(lambda t: G(t, None, truncation_psi=0.7, noise_mode="const"), z, k)[:, :top]
    torch.testing.assert_close(got, want, atol=5e-4, rtol=0)
    # wrt w: the synthesis network as a function of one (truncated) w broadcast to every layer
    with torch.no_grad():
        w = G.mapping(z, None, truncation_psi=0.7)[:, 0]
    got_w = jlsv(G, z, proj_dim=k, top_k=top, truncation_psi=0.7, wrt="w")
    want_w = _proj_svd(lambda t: G.synthesis(t[:, None].repeat(1, G.num_ws, 1), noise_mode="const"), w, k)[:, :top]
    torch.testing.assert_close(got_w, want_w, atol=5e-4, rtol=0)
    assert not torch.allclose(got, got_w, atol=1e-2)


def test_conditional_generator_takes_labels():
    G = tiny_g(c_dim=3)
    z = torch.randn(2, 12)
    c = torch.nn.functional.one_hot(torch.tensor([0, 2]), 3).float()
    got = jlsv(G, z, c=c, proj_dim=8, top_k=4)
    want = torch.cat([_proj_svd(lambda t: G(t, c[i:i + 1].expand(t.shape[0], 3), noise_mode="const"), z[i:i + 1], 8)
                      for i in range(2)])[:, :4]
    torch.testing.assert_close(got, want, atol=5e-4, rtol=0)
    with pytest.raises(ValueError, match="conditional"):
        jlsv(G, z, proj_dim=8)


def test_non_finite_rows_are_minus_inf_with_a_warning_and_mask():
    G = Toy()

    def bad(z):
        return G(z) * torch.sqrt(0.5 - z[:, :1]).view(-1, 1, 1, 1)  # NaN for z[0] > 0.5, in that sample only

    z = torch.tensor([[1.0] * 6, [0.0] * 6, [2.0] + [0.0] * 5])
    with pytest.warns(RuntimeWarning, match="2 of 3 latents"):
        ls, mask = jlsv(bad, z, proj_dim=10, return_mask=True)
    assert mask.tolist() == [False, True, False]
    assert bool(torch.isneginf(ls[~mask]).all()) and bool(torch.isfinite(ls[mask]).all())
    torch.testing.assert_close(ls[1:2], jlsv(lambda t: G(t) * math.sqrt(0.5), z[1:2], proj_dim=10), atol=1e-6, rtol=0)


def test_engine_errors_name_the_argument():
    G = Toy()
    z = torch.randn(2, 6)
    cases = [
        (dict(z=torch.randn(6)), "z must"),
        (dict(z=torch.zeros(0, 6)), "z is empty"),
        (dict(c=torch.zeros(3, 2)), "c must"),
        (dict(wrt="x"), "wrt must"),
        (dict(wrt="w"), "wrt='w' needs a style-based"),
        (dict(truncation_psi=0.5), "truncation_psi != 1"),
        (dict(top_k=7, proj_dim=12), "top_k=7 exceeds the 6 singular values"),
        (dict(proj_dim=41), "proj_dim=41 exceeds the output size D=40"),
        (dict(noise_mode="random"), "noise_mode"),
        (dict(vjp="jvp"), "vjp must"),
        (dict(direction="sideways"), "direction must"),
        (dict(truncation_psi=float("nan")), "truncation_psi must"),
    ]
    for kw, msg in cases:
        args = dict(z=z)
        args.update(kw)
        with pytest.raises(ValueError, match=msg):
            jlsv(G, args.pop("z"), **args)
    for kw, msg in [(dict(batch_size=0), "batch_size"), (dict(chunk=0), "chunk"), (dict(proj_dim=0), "proj_dim")]:
        with pytest.raises(ValueError, match=msg):
            jlsv(G, z, **kw)
    with pytest.raises(TypeError, match="proj_dim"):
        jlsv(G, z, proj_dim=2.5)


# ------------------------------------------------------------------------------------------------ pools


def _pool(n=6, k=4, labels=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    ls = torch.sort(torch.randn(n, k, generator=g, dtype=torch.float64), dim=1, descending=True).values
    return MagnetPool(torch.randn(n, 3, generator=g), ls, labels)


def test_pool_npz_round_trip(tmp_path):
    p = _pool(labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    p.log_sv[2] = -math.inf  # a failed row
    p.meta["proj_dim"] = 128
    path = p.save(tmp_path / "pool.npz")
    with np.load(path) as f:
        assert set(f.files) == {"latents", "svds", "labels", "meta"}
        assert np.allclose(f["svds"], np.exp(p.log_sv.numpy())) and (f["svds"][2] == 0).all()
        assert f["labels"].shape == (6, 3) and json.loads(str(f["meta"]))["proj_dim"] == 128
    q = MagnetPool.load(path)
    assert torch.equal(q.latents, p.latents) and torch.equal(q.labels, p.labels)
    torch.testing.assert_close(q.log_sv, p.log_sv, rtol=1e-15, atol=0)
    assert q.valid.tolist() == [True, True, False, True, True, True] and q.num_classes == 3
    assert q.classes.tolist() == [0, 1, 2, 0, 1, 2] and q.meta["proj_dim"] == 128
    unconditional = _pool()
    unconditional.save(tmp_path / "u.npz")
    assert MagnetPool.load(tmp_path / "u.npz").labels is None


def test_loads_the_released_layout(tmp_path):
    r = np.random.RandomState(0)
    # get_svds.py saves chunks of shape (iterations, batch, dim) and labels=[] for unconditional models
    sv = -np.sort(-np.abs(r.randn(2, 5, 128)), axis=-1).astype(np.float32)
    sv[1, 3] = 0.0  # a failed computation
    lat = r.randn(2, 5, 512).astype(np.float32)
    np.savez(tmp_path / "released.npz", svds=sv, latents=lat, labels=[])
    p = MagnetPool.load(tmp_path / "released.npz")
    assert len(p) == 10 and p.latents.shape == (10, 512) and p.log_sv.shape == (10, 128) and p.labels is None
    assert np.allclose(p.svds.numpy(), sv.reshape(10, 128), rtol=1e-7) and p.valid.sum() == 9
    s = MagnetSampler(p, rho=1.0, top_k=30)
    assert 8 not in s.sample_indices(9).tolist()
    # conditional, already compiled to rows (compile_svds.py): one-hot labels
    lab = np.eye(4)[r.randint(0, 4, 10)]
    np.savez(tmp_path / "cond.npz", latents=lat.reshape(10, 512), svds=sv.reshape(10, 128), labels=lab)
    q = MagnetPool.load(tmp_path / "cond.npz")
    assert q.num_classes == 4 and q.classes.tolist() == lab.argmax(1).tolist()


def test_pool_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        MagnetPool.load(tmp_path / "nope.npz")
    np.savez(tmp_path / "a.npz", latents=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"a.npz.*no \['svds'\]"):
        MagnetPool.load(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", latents=np.zeros((3, 2)), svds=-np.ones((3, 4)))
    with pytest.raises(ValueError, match="b.npz.*negative"):
        MagnetPool.load(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", latents=np.zeros((3, 2)), svds=np.ones((4, 4)))
    with pytest.raises(ValueError, match="c.npz': 3 latents but 4 rows"):
        MagnetPool.load(tmp_path / "c.npz")
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="d.npz.*not a readable npz"):
        MagnetPool.load(tmp_path / "d.npz")
    with pytest.raises(ValueError, match="descending"):
        MagnetPool(torch.zeros(2, 3), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="log_sv must have shape"):
        MagnetPool(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="NaN"):
        MagnetPool(torch.zeros(1, 3), torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match=".npz"):
        _pool().save(tmp_path / "x.pt")


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = _pool(seed=1).save(tmp_path / "p.npz")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pool_mod.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        _pool(seed=2).save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]


class Flaky(Toy):
    """Toy that raises after ``fail_after`` forward calls (an interruption in the middle of a pool)."""

    def __init__(self, fail_after=None):
        super().__init__()
        self.fail_after = fail_after

    def forward(self, z):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        return super().forward(z)


def test_compute_pool_resumes_to_the_uninterrupted_result(tmp_path):
    kw = dict(proj_dim=8, top_k=5, chunk_size=4, batch_size=3, seed=11, log=lambda s: None, progress=False)
    full = compute_pool(Flaky(), 18, tmp_path / "full.npz", **kw)
    out = tmp_path / "resumed.npz"
    with pytest.raises(KeyboardInterrupt):
        compute_pool(Flaky(fail_after=9), 18, out, **kw)
    parts = tmp_path / "resumed.npz.parts"
    assert not out.exists() and len(list(parts.glob("chunk-*.npz"))) >= 1 and (parts / "meta.json").is_file()
    done = len(list(parts.glob("chunk-*.npz")))
    g = Flaky()
    lines = []
    kw_resume = dict(kw, log=lines.append)
    res = compute_pool(g, 18, out, **kw_resume)
    assert any("resuming" in ln for ln in lines) and not parts.exists()
    assert g.calls < _uninterrupted_calls(tmp_path, kw)  # finished chunks were not recomputed
    with np.load(tmp_path / "full.npz") as a, np.load(out) as b:
        assert a.files == b.files
        for key in ("latents", "svds"):
            assert np.array_equal(a[key], b[key]), key
        assert json.loads(str(a["meta"])) == json.loads(str(b["meta"]))
    assert done < 5 and len(res) == len(full) == 18
    # entry i is RandomState(seed + i), whatever the chunking
    assert np.array_equal(res.latents.numpy()[7], np.random.RandomState(18).randn(6).astype(np.float32))
    other = compute_pool(Toy(), 18, tmp_path / "other.npz", **dict(kw, chunk_size=7, batch_size=5))
    assert torch.equal(other.latents, res.latents)
    torch.testing.assert_close(other.log_sv, res.log_sv, atol=1e-5, rtol=0)
    # rerunning a complete pool does nothing; other settings are refused with the difference named
    lines.clear()
    compute_pool(Toy(), 18, out, **kw_resume)
    assert "nothing to do" in lines[0]
    with pytest.raises(FileExistsError, match="proj_dim: 8 != 6"):
        compute_pool(Toy(), 18, out, **dict(kw, proj_dim=6))
    with pytest.raises(KeyboardInterrupt):
        compute_pool(Flaky(fail_after=2), 18, tmp_path / "x.npz", **kw)
    with pytest.raises(FileExistsError, match="seed: 11 != 12"):
        compute_pool(Toy(), 18, tmp_path / "x.npz", **dict(kw, seed=12))
    with pytest.raises(FileExistsError, match="network_sha256"):
        compute_pool(Toy(seed=1), 18, tmp_path / "x.npz", **kw)


def _uninterrupted_calls(tmp_path, kw) -> int:
    g = Flaky()
    compute_pool(g, 18, tmp_path / "count.npz", **kw)
    return g.calls


def test_conditional_pool_labels_and_meta(tmp_path):
    G = tiny_g(c_dim=3)
    p = compute_pool(G, 7, tmp_path / "c.npz", proj_dim=8, top_k=4, chunk_size=4, batch_size=4, seed=5,
                     truncation_psi=0.8, wrt="w", log=lambda s: None)
    assert p.classes.tolist() == [i % 3 for i in range(7)]
    z, c = pool_latents(5, 0, 7, 12, 3)
    assert torch.equal(p.latents, z) and torch.equal(p.labels, c)
    m = p.meta
    assert (m["proj_dim"], m["top_k"], m["wrt"], m["truncation_psi"], m["seed"], m["c_dim"]) == (8, 4, "w", 0.8, 5, 3)
    assert len(m["network_sha256"]) == 64 and m["latent_scheme"] == pool_mod.LATENT_SCHEME
    want = jlsv(G, z[:2], c=c[:2], proj_dim=8, top_k=4, truncation_psi=0.8, wrt="w")
    torch.testing.assert_close(p.log_sv[:2], want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="exact"):
        MagnetSampler(p, weights="exact", top_k=4)
    with pytest.raises(ValueError, match="num must"):
        compute_pool(G, 0, tmp_path / "d.npz")
    with pytest.raises(ValueError, match="z_dim"):
        compute_pool(lambda z: z, 3, tmp_path / "e.npz")


# ------------------------------------------------------------------------------------------------ sampler


def _weighted_pool(logvol, z_dim=2, extra_cols=1, labels=None, seed=0):
    """Pool whose top-1 log sigma is ``logvol`` (further columns smaller)."""
    lv = torch.as_tensor(logvol, dtype=torch.float64)
    cols = [lv] + [lv - 5.0 - i for i in range(extra_cols)]
    g = torch.Generator().manual_seed(seed)
    return MagnetPool(torch.randn(len(lv), z_dim, generator=g), torch.stack(cols, dim=1), labels)


LOGVOL = [0.0, 0.5, 1.0, -1.0, 2.0, 0.2]


def _chi2(counts, p):
    counts = np.asarray(counts, dtype=float)
    return stats.chisquare(counts, counts.sum() * np.asarray(p)).pvalue


def test_with_replacement_frequencies_follow_vol_to_the_rho():
    pool = _weighted_pool(LOGVOL)
    rho = 0.7
    s = MagnetSampler(pool, rho=rho, top_k=1)
    idx = s.sample_indices(30000, replace=True, generator=torch.Generator().manual_seed(0))
    counts = np.bincount(idx.numpy(), minlength=6)
    want = np.exp(rho * np.array(LOGVOL))
    want /= want.sum()
    assert _chi2(counts, want) > 1e-3
    wrong = np.exp(np.array(LOGVOL)) / np.exp(np.array(LOGVOL)).sum()  # vol, rho ignored
    assert _chi2(counts, wrong) < 1e-6
    np.testing.assert_allclose(s.probabilities().numpy(), want, rtol=1e-12)


def test_without_replacement_is_sequential_sampling():
    pool = _weighted_pool(LOGVOL)
    s = MagnetSampler(pool, rho=1.0, top_k=1)
    w = np.exp(np.array(LOGVOL))
    g = torch.Generator().manual_seed(1)
    firsts = [int(s.sample_indices(1, generator=g)[0]) for _ in range(3000)]
    assert _chi2(np.bincount(firsts, minlength=6), w / w.sum()) > 1e-3
    # unordered pairs: P({i, j}) = w_i w_j / W (1 / (W - w_i) + 1 / (W - w_j))
    W = w.sum()
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    p_pair = np.array([w[i] * w[j] / W * (1 / (W - w[i]) + 1 / (W - w[j])) for i, j in pairs])
    counts = dict.fromkeys(pairs, 0)
    for _ in range(4000):
        a, b = sorted(s.sample_indices(2, generator=g).tolist())
        counts[(a, b)] += 1
    assert _chi2([counts[p] for p in pairs], p_pair) > 1e-3
    idx = s.sample_indices(6, generator=g)
    assert sorted(idx.tolist()) == list(range(6))


def test_reproducible_with_a_torch_generator():
    pool = _weighted_pool(np.linspace(-2, 2, 50))
    s = MagnetSampler(pool, rho=1.0, top_k=1)
    a = s.sample_indices(20, generator=torch.Generator().manual_seed(3))
    b = s.sample_indices(20, generator=torch.Generator().manual_seed(3))
    c = s.sample_indices(20, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and len(set(a.tolist())) == 20
    z = s.sample(20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(z, pool.latents[a])


def test_per_class_counts_and_class_idx():
    labels = torch.tensor([0, 1, 2] * 10)
    pool = _weighted_pool(np.linspace(-1, 1, 30), labels=labels)
    s = MagnetSampler(pool, rho=1.0, top_k=1)
    for n, want in ((9, [3, 3, 3]), (10, [4, 3, 3]), (11, [4, 4, 3]), (2, [1, 1, 0])):
        idx = s.sample_indices(n, generator=torch.Generator().manual_seed(n))
        assert np.bincount(pool.classes[idx].numpy(), minlength=3).tolist() == want
        assert len(set(idx.tolist())) == n
    z, c = s.sample(5, class_idx=2, generator=torch.Generator().manual_seed(0))
    assert z.shape == (5, 2) and (c.argmax(1) == 2).all()
    probs = s.probabilities()
    for k in range(3):
        assert probs[labels == k].sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="from class 0: it has 10 valid entries"):
        s.sample_indices(33)
    with pytest.raises(ValueError, match="class_idx must be"):
        s.sample_indices(2, class_idx=3)


def test_mix_draws_a_fraction_by_volume_and_the_rest_uniformly():
    pool = _weighted_pool(np.linspace(0, 40, 100))
    s = MagnetSampler(pool, rho=5.0, top_k=1, mix=0.3)
    idx = s.sample_indices(10, generator=torch.Generator().manual_seed(0))
    assert sorted(idx[:3].tolist()) == [97, 98, 99]  # weights exp(5 * 0.4 * gap) dominate
    assert len(set(idx.tolist())) == 10 and not set(idx[3:].tolist()) & {97, 98, 99}
    naive = MagnetSampler(pool, rho=5.0, top_k=1, mix=0.0)
    g = torch.Generator().manual_seed(1)
    draws = torch.cat([naive.sample_indices(10, generator=g) for _ in range(300)])
    assert _chi2(np.bincount(draws.numpy(), minlength=100), np.full(100, 0.01)) > 1e-3


def test_failed_rows_are_dropped_and_official_probabilities_match_the_released_sampler():
    lv = np.array([[3.0, 1.0], [0.5, -np.inf], [-np.inf, -np.inf], [500.0, 400.0], [-2.0, -3.0]])
    pool = MagnetPool(torch.randn(5, 2), lv)
    assert pool.valid.tolist() == [True, True, False, True, True]
    for rho in (1.0, -1.0, 0.5):
        s = MagnetSampler(pool, rho=rho, top_k=2)
        # polSampler: exp(sum log sigma) ** rho, clipped to [1e-200, 1e200], normalised (failed row dropped)
        with np.errstate(over="ignore", divide="ignore"):
            vol = np.exp(lv[:, :2].sum(1))
            w = np.clip(vol ** rho, 1e-200, 1e200)
        w[2] = 0.0
        np.testing.assert_allclose(s.probabilities().numpy(), w / w.sum(), rtol=1e-9)
        idx = s.sample_indices(4, generator=torch.Generator().manual_seed(0))
        assert 2 not in idx.tolist()
    assert MagnetSampler(pool, rho=-1.0, top_k=2).log_weights[1] == LOG_WEIGHT_CLIP  # rank-deficient, clipped
    dead = MagnetPool(torch.zeros(2, 2), torch.full((2, 3), -math.inf))
    with pytest.raises(ValueError, match="failed computations"):
        MagnetSampler(dead, top_k=1)


def test_exact_weights_divide_by_the_prior():
    pool = _weighted_pool([0.0, 1.0, 2.0, 0.5], z_dim=3)
    s = MagnetSampler(pool, rho=1.0, top_k=1, weights="exact")
    z = pool.latents.double().numpy()
    logp = -0.5 * (z ** 2).sum(1) - 1.5 * np.log(2 * np.pi)
    w = np.exp(np.array([0.0, 1.0, 2.0, 0.5]) - logp)
    np.testing.assert_allclose(s.probabilities().numpy(), w / w.sum(), rtol=1e-9)


def test_sampler_errors():
    pool = _weighted_pool(LOGVOL, extra_cols=1)
    empty = MagnetPool(torch.zeros(0, 2), torch.zeros(0, 2))
    with pytest.raises(ValueError, match="empty"):
        MagnetSampler(empty)
    with pytest.raises(ValueError, match=r"top_k=3 but the pool has only 2"):
        MagnetSampler(pool, top_k=3)
    for rho in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rho must be finite"):
            MagnetSampler(pool, rho=rho, top_k=1)
    with pytest.raises(ValueError, match="weights"):
        MagnetSampler(pool, top_k=1, weights="uniform")
    with pytest.raises(ValueError, match="mix"):
        MagnetSampler(pool, top_k=1, mix=1.5)
    s = MagnetSampler(pool, top_k=1)
    with pytest.raises(ValueError, match="without replacement"):
        s.sample_indices(7)
    assert s.sample_indices(7, replace=True).shape == (7,)
    with pytest.raises(ValueError, match="n must"):
        s.sample_indices(-1)
    with pytest.raises(ValueError, match="unconditional"):
        s.sample_indices(1, class_idx=0)
    with pytest.raises(ValueError, match="rho must be finite"):
        s.update_rho(float("nan"))
    with pytest.raises(TypeError, match="MagnetPool"):
        MagnetSampler(np.zeros((3, 2)))


# ------------------------------------------------------------------------------------------------ the effect


def _curve(z):
    """1-D -> 2-D: a half circle of radius 2 at arc-length fraction s = Phi(z)^3 (speed varies strongly)."""
    a = math.pi * torch.special.ndtr(z[:, 0]) ** 3
    return 2.0 * torch.stack([torch.cos(a), torch.sin(a)], dim=1)


def test_magnet_samples_are_more_uniform_on_a_curve():
    z = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0))
    ls = jlsv(_curve, z, proj_dim=None, batch_size=5000)
    zd = z.double()[:, 0]
    speed = 2 * math.pi * 3 * torch.special.ndtr(zd) ** 2 * torch.exp(-zd ** 2 / 2) / math.sqrt(2 * math.pi)
    central = zd.abs() < 2
    torch.testing.assert_close(ls[central, 0], speed[central].log(), atol=1e-4, rtol=0)
    pool = MagnetPool(z, ls)

    def ks(idx):
        s = (torch.special.ndtr(z[idx, 0].double()) ** 3).numpy()  # arc-length fraction of each sample
        return stats.kstest(s, "uniform").statistic

    naive = ks(torch.randperm(20000, generator=torch.Generator().manual_seed(2))[:2000])
    official = ks(MagnetSampler(pool, rho=1.0, top_k=1).sample_indices(
        2000, generator=torch.Generator().manual_seed(1)))
    exact = ks(MagnetSampler(pool, rho=1.0, top_k=1, weights="exact").sample_indices(
        2000, generator=torch.Generator().manual_seed(1)))
    assert naive > 0.3  # the push-forward of the prior is far from uniform on the curve
    assert official < naive - 0.1  # vol-weighting flattens it (towards p(z) on the manifold)
    assert exact < 0.06  # vol / p(z) importance weights make it uniform

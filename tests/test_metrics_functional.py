"""fastgan.metrics on features: closed forms, the anchor implementations (torchmetrics, prdc, scipy), conventions.

Tolerances (METRICS.md section 5.4): full-rank FID within 1e-8 relative of torchmetrics' float64 route; the
rank-deficient Gram route within 1e-9 relative of an SVD route, and within 1e-3 absolute of scipy's sqrtm (whose
d x d route carries ~1e-4 error there); KID equal to the NVlabs closed form and torchmetrics' poly_mmd to 1e-12;
P/R/D/C identical to the prdc package.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastgan import metrics as M
from fastgan import ops
from fastgan.ops import knn as K


def _feats(n, d, seed, scale=1.0, shift=0.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # non-negative, decaying spectrum like Inception pool features
    basis = torch.randn(d, d, generator=g) / d**0.5
    z = torch.randn(n, d, generator=g) * torch.linspace(2.0, 0.05, d)
    return ((z @ basis).abs() * scale + shift).to(dtype)


# ---- Frechet distance ---------------------------------------------------------------------------------------
def test_fd_closed_forms():
    d = 6
    mu1, mu2 = torch.arange(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    a = torch.rand(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s = a @ a.T + torch.eye(d, dtype=torch.float64)
    # equal covariances: only the means count
    assert M.frechet_distance(mu1, s, mu2, s) == pytest.approx(float(((mu1 - mu2) ** 2).sum()), rel=1e-12)
    # diagonal (commuting) covariances: sum (sqrt a - sqrt b)^2
    da, db = torch.rand(d, dtype=torch.float64) + 0.1, torch.rand(d, dtype=torch.float64) + 0.1
    want = float(((mu1 - mu2) ** 2).sum() + ((da.sqrt() - db.sqrt()) ** 2).sum())
    assert M.frechet_distance(mu1, torch.diag(da), mu2, torch.diag(db)) == pytest.approx(want, rel=1e-12)
    # scaled identities: d (sqrt(p) - sqrt(q))^2
    eye = torch.eye(d, dtype=torch.float64)
    assert M.frechet_distance(mu1, 4 * eye, mu1, 9 * eye) == pytest.approx(d * 1.0, rel=1e-12)
    # singular covariances on both sides take the eigendecomposition route
    ps = torch.diag(torch.tensor([1.0, 4.0, 0, 0, 0, 0], dtype=torch.float64))
    qs = torch.diag(torch.tensor([0, 1.0, 0, 0, 9.0, 0], dtype=torch.float64))
    assert M.frechet_distance(mu1, ps, mu1, qs) == pytest.approx(1 + 1 + 9, rel=1e-12)


def test_identical_sets_give_zero():
    a = _feats(400, 32, 0)
    assert abs(M.fid_from_features(a, a)) <= 1e-8 * float(M.mean_cov(a)[1].trace())
    small = a[:20]  # Gram route
    assert abs(M.fid_from_features(small, small)) <= 1e-8 * float(M.mean_cov(small)[1].trace())


def test_fid_matches_torchmetrics_full_rank():
    fid_mod = pytest.importorskip("torchmetrics.image.fid")
    a, b = _feats(3000, 128, 1), _feats(2500, 128, 2, scale=1.1, shift=0.05)
    want = float(fid_mod._compute_fid(*M.mean_cov(a), *M.mean_cov(b)))
    assert M.fid_from_features(a, b) == pytest.approx(want, rel=1e-8)


def _gram_svd_reference(a, b, c_a, c_b):
    """tr sqrt(S_a S_b) through singular values: S_b = L L^T, then the singular values of A L / sqrt(c_a)."""
    xa, xb = a - a.mean(0), b - b.mean(0)
    if b.shape[0] > b.shape[1]:
        chol = torch.linalg.cholesky(xb.T @ xb / c_b)
        tr = torch.linalg.svdvals(xa @ chol).sum() / c_a**0.5
    else:
        tr = torch.linalg.svdvals(xa @ xb.T).sum() / (c_a * c_b) ** 0.5
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + (xa * xa).sum() / c_a + (xb * xb).sum() / c_b - 2 * tr)


@pytest.mark.parametrize("na,nb", [(100, 1000), (1000, 60), (50, 80)])
def test_rank_deficient_fid_is_exact(na, nb):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    d = 256
    a, b = _feats(na, d, 3), _feats(nb, d, 4, shift=0.1)
    got = M.fid_from_features(a, b)
    assert got == pytest.approx(_gram_svd_reference(a, b, na - 1, nb - 1), rel=1e-9)
    # the d x d routes (scipy sqrtm as pytorch-fid / clean-fid / NVlabs; our eigh fallback) agree to ~1e-4
    (m1, s1), (m2, s2) = M.mean_cov(a), M.mean_cov(b)
    root = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy())
    anchor = float(((m1 - m2) ** 2).sum() + s1.trace() + s2.trace()) - 2 * float(np.trace(np.real(root)))
    assert abs(got - anchor) <= 1e-3
    assert abs(M.frechet_distance(m1, s1, m2, s2) - got) <= 1e-3


def test_cov_norm_biased_is_nvlabs():
    a, b = _feats(300, 16, 5), _feats(200, 16, 6, shift=0.3)
    (ma, sa), (mb, sb) = M.mean_cov(a), M.mean_cov(b)
    want = M.frechet_distance(ma, sa * 299 / 300, mb, sb * 199 / 200)
    assert M.fid_from_features(a, b, cov_norm="biased") == pytest.approx(want, rel=1e-10)
    assert M.fid_from_features(a[:10], b[:12], cov_norm="biased") == pytest.approx(
        _gram_svd_reference(a[:10], b[:12], 10, 12), rel=1e-9)
    with pytest.raises(ValueError, match="cov_norm"):
        M.fid_from_features(a, b, cov_norm="n-1")


def test_float32_features_are_upcast():
    a, b = _feats(120, 64, 7, dtype=torch.float32), _feats(90, 64, 8, dtype=torch.float32)
    assert M.fid_from_features(a, b) == M.fid_from_features(a.double(), b.double())


# ---- KID ----------------------------------------------------------------------------------------------------
def _nvlabs_kid(a, b, subsets):
    """stylegan2-ada-pytorch's closed form, re-typed, on given subsets."""
    n = a.shape[1]
    t_all = []
    for ia, ib in subsets:
        x, y = a[ia].numpy(), b[ib].numpy()
        m = len(ia)
        aa = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        bb = (x @ y.T / n + 1) ** 3
        t = (aa.sum() - np.diag(aa).sum()) / (m - 1) - bb.sum() * 2 / m
        t_all.append(t / m)
    return float(np.mean(t_all)), float(np.std(t_all))


def _subsets(na, nb, m, num, seed):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randperm(na, generator=gen)[:m], torch.randperm(nb, generator=gen)[:m]) for _ in range(num)]


def test_kid_matches_nvlabs_closed_form_and_torchmetrics():
    a, b = _feats(300, 24, 9), _feats(250, 24, 10, shift=0.2)
    mean, std = M.kid_from_features(a, b, num_subsets=7, subset_size=100, seed=3)
    subsets = _subsets(300, 250, 100, 7, 3)
    want_mean, want_std = _nvlabs_kid(a, b, subsets)
    assert mean == pytest.approx(want_mean, rel=1e-12, abs=1e-15)
    assert std == pytest.approx(want_std, rel=1e-10, abs=1e-15)
    kid_mod = pytest.importorskip("torchmetrics.image.kid")
    tm = [float(kid_mod.poly_mmd(a[ia], b[ib], degree=3, gamma=1 / 24, coef=1.0)) for ia, ib in subsets]
    assert mean == pytest.approx(float(np.mean(tm)), rel=1e-12, abs=1e-15)


def test_kid_is_unbiased_and_shrinks_or_refuses_small_sets():
    # two halves of one sample: the unbiased estimate averages to ~0; a shifted copy is far from 0
    halves = [_feats(400, 8, s) for s in range(5)]
    same = [M.kid_from_features(x[:200], x[200:], num_subsets=20, subset_size=50)[0] for x in halves]
    shifted = M.kid_from_features(halves[0][:200], halves[0][200:] + 0.5, num_subsets=20, subset_size=50)[0]
    assert abs(np.mean(same)) < 0.05 * shifted
    a, b = _feats(40, 8, 2), _feats(60, 8, 3)
    mean, _ = M.kid_from_features(a, b, num_subsets=3, subset_size=1000, seed=1)  # m shrinks to 40 (NVlabs)
    assert mean == pytest.approx(_nvlabs_kid(a, b, _subsets(40, 60, 40, 3, 1))[0], rel=1e-12)
    with pytest.raises(ValueError, match="strict KID needs at least subset_size = 1000"):
        M.kid_from_features(a, b, subset_size=1000, strict=True)


# ---- k-NN radii and PRDC -------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_radii_match_cdist_topk(k, monkeypatch):
    x = _feats(257, 12, 11)
    want = torch.cdist(x, x).topk(k + 1, largest=False).values[:, k]
    assert torch.allclose(ops.knn_radii(x, k), want, rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(K, "TILE_ELEMS", 1000)  # several tiles of rows
    assert torch.allclose(ops.knn_radii(x, k), want, rtol=1e-10, atol=1e-12)


def test_prdc_matches_the_prdc_package():
    prdc_pkg = pytest.importorskip("prdc")
    rs = np.random.RandomState(0)
    for n_real, n_fake, d, k in [(500, 400, 16, 5), (300, 350, 64, 3), (60, 45, 8, 1)]:
        real, fake = rs.randn(n_real, d), rs.randn(n_fake, d) * 1.2 + 0.1
        want = prdc_pkg.compute_prdc(real, fake, k)
        got = M.prdc(torch.from_numpy(real), torch.from_numpy(fake), k)
        assert got == pytest.approx({key: float(v) for key, v in want.items()}, abs=1e-12), (n_real, n_fake, d, k)


def test_prdc_tiles_give_the_same_answer(monkeypatch):
    real, fake = _feats(300, 10, 12), _feats(280, 10, 13, shift=0.05)
    full = M.prdc(real, fake, 3)
    monkeypatch.setattr(K, "TILE_ELEMS", 700)
    assert M.prdc(real, fake, 3) == full


def test_prdc_ties_pin_the_inclusive_convention():
    # 1-D points 0, 1, 2, 3 (real) and fake exactly on the real radius of its neighbours
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    fake = torch.tensor([[4.0], [5.0], [6.0], [10.0]], dtype=torch.float64)
    # k = 1: real radii are all 1; fake 4 is at distance exactly 1 from real 3
    strict = M.prdc(real, fake, 1, inclusive=False)
    incl = M.prdc(real, fake, 1, inclusive=True)
    assert strict["precision"] == 0.0 and incl["precision"] == 0.25
    assert strict["coverage"] == 0.0 and incl["coverage"] == 0.25
    assert incl["density"] == pytest.approx(0.25)


def test_swapping_real_and_fake_swaps_precision_and_recall():
    real, fake = _feats(200, 6, 14), _feats(150, 6, 15, scale=1.3)
    a, b = M.prdc(real, fake, 4, inclusive=True), M.prdc(fake, real, 4, inclusive=True)
    assert a["precision"] == b["recall"] and a["recall"] == b["precision"]


# ---- bad input -------------------------------------------------------------------------------------------------
def test_bad_input_is_named():
    a = _feats(20, 4, 16)
    bad = a.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="a holds NaN or Inf"):
        M.fid_from_features(bad, a)
    with pytest.raises(ValueError, match="fake holds NaN or Inf"):
        M.prdc(a, bad, 3)
    with pytest.raises(ValueError, match="differ in width: 4 vs 5"):
        M.kid_from_features(a, _feats(20, 5, 17))
    with pytest.raises(ValueError, match="needs at least 6 real samples, got 5"):
        M.prdc(a[:5], a, 5)
    with pytest.raises(ValueError, match=r"must be \(N, D\) features"):
        M.fid_from_features(a[0], a)
    with pytest.raises(TypeError, match="floating point"):
        ops.knn_radii(torch.ones(5, 2, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        ops.knn_radii(a, 0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        M.fid_from_features(a[:1], a)
    with pytest.raises(ValueError, match=r"expected mu \(D,\) and sigma \(D, D\)"):
        M.frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(4))


# ---- Triton k-NN kernel (interpreter on CPU, compiled on CUDA) --------------------------------------------------
def _need_triton(op):
    reason = ops.why_unavailable(op, "triton", "cpu")
    if reason is not None:
        pytest.fail(f"impl 'triton' of {op} should be available in the test environment: {reason}")


@pytest.mark.parametrize("n,d,k", [(100, 40, 1), (77, 33, 3), (130, 64, 5), (9, 5, 8)])
def test_knn_radii_triton_matches_reference(n, d, k):
    _need_triton("knn_radii")
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    x[n // 2] = x[n // 3]  # a duplicate row: distance 0 to another row
    want = ops.knn_radii(x, k, impl="ref")
    got = ops.knn_radii(x.float(), k, impl="triton")
    assert got.dtype == torch.float64 and got.shape == (n,)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-3), (got - want).abs().max()


def test_knn_radii_triton_op_registration():
    _need_triton("knn_radii")
    x = torch.randn(40, 12, generator=torch.Generator().manual_seed(0))
    torch.library.opcheck(torch.ops.fastgan.knn_radii_triton, (x, 3), test_utils=("test_schema", "test_faketensor"))


@pytest.mark.gpu
def test_knn_radii_triton_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = torch.randn(3000, 256, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = ops.knn_radii(x, 5, impl="ref")
    got = ops.knn_radii(x.float().cuda(), 5, impl="triton").cpu()
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-3)
    assert ops.available_impls("knn_radii", "cuda")[0] == "triton"
    fake = torch.randn(2500, 256, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 1.1
    p_ref = M.prdc(x, fake, 5, impl="ref")
    p_gpu = M.prdc(x.float().cuda(), fake.float().cuda(), 5)  # auto: the Triton kernels
    assert p_gpu == pytest.approx(p_ref, abs=2e-3)


@pytest.mark.parametrize("inclusive", [False, True])
@pytest.mark.parametrize("nr,nf,d,k", [(90, 70, 24, 3), (40, 130, 33, 5)])
def test_manifold_stats_triton_matches_reference(inclusive, nr, nf, d, k):
    _need_triton("knn_manifold_stats")
    g = torch.Generator().manual_seed(nr + nf)
    real = torch.randn(nr, d, generator=g, dtype=torch.float64)
    fake = torch.randn(nf, d, generator=g, dtype=torch.float64) * 1.1 + 0.1
    rr, fr = ops.knn_radii(real, k, impl="ref"), ops.knn_radii(fake, k, impl="ref")
    want = ops.manifold_stats(real, fake, rr, fr, inclusive=inclusive, impl="ref")
    got = ops.manifold_stats(real, fake, rr, fr, inclusive=inclusive, impl="triton")
    for key in ("fake_in_real", "real_in_fake", "real_covered"):
        assert got[key].dtype == torch.bool and got[key].shape == want[key].shape
        assert int((got[key] != want[key]).sum()) <= 1, key  # float32 distances: at most a marginal flip
    assert abs(float(got["density_count"]) - float(want["density_count"])) <= 2
    # and the whole PRDC through the kernels
    p_ref = M.prdc(real, fake, k, inclusive=inclusive, impl="ref")
    p_tri = M.prdc(real.float(), fake.float(), k, inclusive=inclusive, impl="triton")
    assert p_tri == pytest.approx(p_ref, abs=0.03)


def test_manifold_stats_triton_op_registration():
    _need_triton("knn_manifold_stats")
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(40, 8, generator=g), torch.randn(50, 8, generator=g)
    args = (real, fake, torch.rand(40, generator=g) + 1, torch.rand(50, generator=g) + 1, True)
    torch.library.opcheck(torch.ops.fastgan.knn_manifold_stats_triton, args,
                          test_utils=("test_schema", "test_faketensor"))


# ---- CUDA C++ k-NN kernels (csrc/knn/knn_cuda.cu) -------------------------------------------------------------
def _ext_knn_ops():
    import fastgan

    if not fastgan.HAS_EXT:
        pytest.skip(f"compiled extension not loaded: {fastgan.EXT_ERROR}")
    assert hasattr(torch.ops.fastgan, "knn_radii") and hasattr(torch.ops.fastgan, "knn_manifold_stats")


def test_knn_cuda_ops_have_schemas_and_fake_kernels():
    """The C++ schemas exist in every build, and their fake kernels give the output metadata without running."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    _ext_knn_ops()
    with FakeTensorMode():
        x = torch.empty(50, 7)
        out = torch.ops.fastgan.knn_radii(x, 3)
        assert out.shape == (50,) and out.dtype == torch.float64
        f = torch.empty(30, 7)
        fi, ri, cnt, cov = torch.ops.fastgan.knn_manifold_stats(x, f, torch.empty(50), torch.empty(30), False)
        assert fi.shape == (30,) and ri.shape == (50,) and cov.shape == (50,) and cnt.shape == ()
        assert fi.dtype == ri.dtype == cov.dtype == torch.bool and cnt.dtype == torch.float64


def test_knn_cuda_impl_reports_why_it_cannot_run_here():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    reason = ops.why_unavailable("knn_radii", "cuda", "cuda")
    assert reason and ("CUDA" in reason or "extension" in reason)
    with pytest.raises(Exception, match="cuda"):
        ops.knn_radii(torch.randn(10, 3), 2, impl="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("n,d,k", [(9, 5, 8), (100, 40, 1), (130, 64, 5), (1000, 77, 5), (257, 31, 20),
                                   (300, 128, 40), (3000, 512, 3)])
def test_knn_radii_cuda_matches_reference(n, d, k):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    x[n // 2] = x[n // 3]
    want = ops.knn_radii(x, k, impl="ref")
    got = ops.knn_radii(x.float().cuda(), k, impl="cuda")
    assert got.dtype == torch.float64 and got.shape == (n,) and got.is_cuda
    assert torch.allclose(got.cpu(), want, rtol=1e-4, atol=1e-3), (got.cpu() - want).abs().max()
    tri = ops.knn_radii(x.float().cuda(), k, impl="triton")
    assert torch.allclose(got, tri, rtol=1e-5, atol=1e-4)


@pytest.mark.gpu
def test_knn_radii_cuda_refuses_large_k_and_checks_inputs():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = torch.randn(100, 8, device="cuda")
    with pytest.raises(RuntimeError, match="k <= 63"):
        ops.knn_radii(x, 64, impl="cuda")
    torch.library.opcheck(torch.ops.fastgan.knn_radii, (x, 3), test_utils=("test_schema", "test_faketensor"))


@pytest.mark.gpu
@pytest.mark.parametrize("inclusive", [False, True])
@pytest.mark.parametrize("nr,nf,d,k", [(90, 70, 24, 3), (40, 130, 33, 5), (2000, 1500, 256, 5)])
def test_manifold_stats_cuda_matches_reference(inclusive, nr, nf, d, k):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator().manual_seed(nr + nf)
    real = torch.randn(nr, d, generator=g, dtype=torch.float64)
    fake = torch.randn(nf, d, generator=g, dtype=torch.float64) * 1.1 + 0.1
    rr, fr = ops.knn_radii(real, k, impl="ref"), ops.knn_radii(fake, k, impl="ref")
    want = ops.manifold_stats(real, fake, rr, fr, inclusive=inclusive, impl="ref")
    got = ops.manifold_stats(real.float().cuda(), fake.float().cuda(), rr.cuda(), fr.cuda(), inclusive=inclusive,
                             impl="cuda")
    tri = ops.manifold_stats(real.float().cuda(), fake.float().cuda(), rr.cuda(), fr.cuda(), inclusive=inclusive,
                             impl="triton")
    for key in ("fake_in_real", "real_in_fake", "real_covered"):
        assert got[key].dtype == torch.bool and got[key].shape == want[key].shape
        assert int((got[key].cpu() != want[key]).sum()) <= max(1, want[key].numel() // 1000), key
        # the Triton kernel computes the same float32 distances up to summation order
        assert int((got[key] != tri[key]).sum()) <= max(1, want[key].numel() // 1000), key
    assert abs(float(got["density_count"]) - float(want["density_count"])) <= max(2, nr * nf // 100000)
    args = (real.float().cuda(), fake.float().cuda(), rr.cuda(), fr.cuda(), inclusive)
    torch.library.opcheck(torch.ops.fastgan.knn_manifold_stats, args, test_utils=("test_schema", "test_faketensor"))

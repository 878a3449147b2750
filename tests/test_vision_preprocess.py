"""fastgan.ops.vision_preprocess: the fused DiffAugment + area resize + normalise of the vision backbones.

Every impl is compared with the reference (forward and gradient) over shapes that upsample, downsample, keep the size
and are not square, and over policies; the reference itself equals the unfused path preprocess(diffaugment(...))
bit for bit; gradcheck in float64 (cpp, ref); low precision within the op contract's budget; bad inputs; opcheck
and a torch.compile smoke; the VisionBackbone integration.
"""
from __future__ import annotations

import importlib
import math

import pytest
import torch

from fastgan import ops
from fastgan.nn.vision import backbones as B
from fastgan.testing import assert_against_ref
from fastgan.train import rng
from fastgan.train.augment import apply_diffaugment, diffaugment, diffaugment_params

# the module (fastgan.ops.vision_preprocess, the attribute, is the function of the same name)
VP = importlib.import_module("fastgan.ops.vision_preprocess")
FULL = "color,translation,cutout"


def _need(impl, device="cpu"):
    reason = ops.why_unavailable("vision_preprocess", impl, device)
    if reason is not None:
        pytest.fail(f"impl {impl!r} of vision_preprocess should be available in the test environment: {reason}")


def _case(n, h, w, policy, seed=0, dtype=torch.float32, c=3):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, c, h, w, generator=g) * 2 - 1).to(dtype)
    keys = rng.sample_keys(rng.derive(seed, 5), range(n))
    params = diffaugment_params(keys, policy, h, w) if policy is not None else None
    return x, keys, params


def _fwd_bwd(x, params, size, impl, mean=VP.CLIP_MEAN, std=VP.CLIP_STD, gout=None):
    xx = x.detach().clone().requires_grad_(True)
    out = ops.vision_preprocess(xx, params, size, mean, std, impl=impl)
    if gout is None:
        gout = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (gx,) = torch.autograd.grad(out, xx, gout)
    return out.detach(), gx


def _assert_close(name, got, want, rel=2e-5):
    scale = max(1.0, want.abs().max().item())
    err = (got.double() - want.double()).abs().max().item()
    assert err <= rel * scale, f"{name}: max abs error {err:.3g} > {rel * scale:.3g}"


# ---- the reference is the unfused path -------------------------------------------------------------------------
@pytest.mark.parametrize("h,w,size,policy", [(16, 16, 24, FULL), (13, 9, 7, FULL), (8, 8, None, "translation,cutout"),
                                              (12, 12, 12, "color"), (10, 6, 5, None)])
def test_reference_equals_unfused_composition(h, w, size, policy):
    x, keys, params = _case(4, h, w, policy)
    want = B.preprocess(diffaugment(x, policy, keys) if policy else x, size, VP.CLIP_MEAN, VP.CLIP_STD)
    got = ops.vision_preprocess(x, params, size, impl="ref")
    assert torch.equal(got, want)
    assert got.shape == (4, 3) + ((h, w) if size is None else (size, size))


def test_packed_table_identity_rows_and_flags():
    x, keys, params = _case(3, 10, 10, "translation,cutout")
    table, flags = VP.pack_params(params, x)
    assert flags == VP.TRANSLATION | VP.CUTOUT and table.dtype == torch.float64 and table.shape == (3, 9)
    assert torch.equal(table[:, :3], torch.tensor([[0.0, 1.0, 1.0]]).expand(3, 3))  # colour columns: identity
    assert torch.equal(table[:, 3:5].long(), params.get("translation"))
    assert torch.equal(table[:, 5:].long(), params.get("cutout"))
    assert VP.pack_params(None, x)[1] == 0


# ---- every impl against the reference --------------------------------------------------------------------------
CASES = [  # (n, h, w, size, policy)
    (2, 8, 8, 12, FULL),            # upsample (an area upscale repeats pixels)
    (2, 16, 13, 7, FULL),           # downsample, not square, windows of 2-3 pixels
    (1, 9, 9, None, "translation,cutout"),  # size None: no resize, batch 1
    (2, 10, 6, 10, "brightness,contrast"),  # H = size but W != size
    (3, 12, 12, 12, "saturation"),  # size met: no resize
    (2, 7, 11, 16, None),           # no augmentation
]


# the interpreter is slow: the first four cases cover every Triton code path
IMPL_CASES = [("cpp", c) for c in CASES] + [("triton", c) for c in CASES[:4]]


@pytest.mark.parametrize("impl,case", IMPL_CASES, ids=[f"{i}-{c[1]}x{c[2]}to{c[3]}_{c[4]}" for i, c in IMPL_CASES])
def test_impl_matches_reference_forward_and_backward(impl, case):
    _need(impl)
    n, h, w, size, policy = case
    x, _, params = _case(n, h, w, policy, seed=h * w)
    want, gwant = _fwd_bwd(x, params, size, "ref")
    got, ggot = _fwd_bwd(x, params, size, impl)
    assert got.shape == want.shape and got.dtype == want.dtype and ggot.shape == x.shape
    _assert_close("out", got, want)
    _assert_close("grad", ggot, gwant)


def test_cpp_large_downsample_and_non_contiguous_input():
    _need("cpp")
    x, _, params = _case(3, 40, 40, FULL, seed=3)
    xt = x.transpose(2, 3)  # non-contiguous; params drawn for 40 x 40 either way
    for inp, size in ((x, 9), (xt, 17)):
        want, gwant = _fwd_bwd(inp, params, size, "ref")
        got, ggot = _fwd_bwd(inp, params, size, "cpp")
        _assert_close("out", got, want)
        _assert_close("grad", ggot, gwant)


def test_one_channel_and_custom_stats():
    _need("cpp")
    x, _, params = _case(2, 9, 9, FULL, c=1)
    for impl in ("cpp", "triton"):
        want, gwant = _fwd_bwd(x, params, 5, "ref", mean=[0.25], std=[2.0])
        got, ggot = _fwd_bwd(x, params, 5, impl, mean=torch.tensor([0.25]), std=(2.0,))
        _assert_close(f"{impl} out", got, want)
        _assert_close(f"{impl} grad", ggot, gwant)


@pytest.mark.parametrize("impl,dtype", [("cpp", torch.float16), ("cpp", torch.bfloat16), ("triton", torch.float16)])
def test_low_precision_within_budget(impl, dtype):
    _need(impl)
    x64, _, params = _case(2, 12, 12, FULL, seed=7, dtype=torch.float64)
    x = x64.to(dtype)
    ref64, gref64 = _fwd_bwd(x.double(), params, 18, "ref")
    lowp, glowp = _fwd_bwd(x, params, 18, "ref", gout=None)
    got, ggot = _fwd_bwd(x, params, 18, impl)
    assert got.dtype == dtype and ggot.dtype == dtype
    assert_against_ref("out", got, ref64, lowp)
    assert_against_ref("grad", ggot, gref64, glowp)


@pytest.mark.parametrize("impl", ["ref", "cpp"])
def test_gradcheck_double(impl):
    _need(impl)
    x, _, params = _case(2, 6, 5, FULL, seed=11, dtype=torch.float64)
    x.requires_grad_(True)
    for size in (4, 9):  # down and up
        assert torch.autograd.gradcheck(lambda a: ops.vision_preprocess(a, params, size, impl=impl), (x,),
                                        fast_mode=True)


def test_double_backward_is_differentiable_in_the_output_gradient():
    _need("cpp")
    x, _, params = _case(2, 6, 6, FULL, seed=2, dtype=torch.float64)
    x.requires_grad_(True)
    gout = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)

    def first(impl):
        out = ops.vision_preprocess(x, params, 4, impl=impl)
        (gx,) = torch.autograd.grad(out, x, gout, create_graph=True)
        return torch.autograd.grad((gx ** 2).sum(), gout)[0]

    torch.testing.assert_close(first("cpp"), first("ref"))


# ---- parameters, policies and errors ------------------------------------------------------------------------------
def test_params_depend_only_on_keys_and_fusable_policies():
    x, keys, params = _case(6, 14, 14, FULL)
    part = diffaugment_params(keys[2:5], FULL, 14, 14)
    for op in params.ops:
        assert torch.equal(part.get(op), params.get(op)[2:5])
    assert params.fusable and diffaugment_params(keys, "translation,cutout", 14, 14).fusable
    assert not diffaugment_params(keys, "cutout,translation", 14, 14).fusable
    assert not diffaugment_params(keys, "color,brightness", 14, 14).fusable
    sub = params.select(slice(1, 3))
    torch.testing.assert_close(ops.vision_preprocess(x[1:3], sub, 10, impl="ref"),
                               ops.vision_preprocess(x, params, 10, impl="ref")[1:3], rtol=0, atol=0)


def test_bad_inputs_raise_clear_errors():
    x, keys, params = _case(2, 8, 8, FULL)
    with pytest.raises(ValueError, match="4-D"):
        ops.vision_preprocess(x[0], None)
    with pytest.raises(TypeError, match="float32, float64"):
        ops.vision_preprocess(x.to(torch.int32), None)
    with pytest.raises(ValueError, match="mean has 3 entries but x has 4 channels"):
        ops.vision_preprocess(torch.zeros(2, 4, 8, 8), None)
    with pytest.raises(ValueError, match="mean must be finite"):
        ops.vision_preprocess(x, params, 8, mean=(0.5, float("nan"), 0.5))
    with pytest.raises(ValueError, match="std must be finite"):
        ops.vision_preprocess(x, params, 8, std=(0.5, 0.5, float("inf")))
    with pytest.raises(ValueError, match="std must be non-zero"):
        ops.vision_preprocess(x, params, 8, std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="size must be at least 1"):
        ops.vision_preprocess(x, params, 0)
    with pytest.raises(TypeError, match="size must be an int or None"):
        ops.vision_preprocess(x, params, True)
    with pytest.raises(ValueError, match="params batch mismatch"):
        ops.vision_preprocess(x[:1], params)
    with pytest.raises(ValueError, match="drawn for 8x8 images but x is 9x8"):
        ops.vision_preprocess(torch.zeros(2, 3, 9, 8), params)
    with pytest.raises(ValueError, match="cannot be fused"):
        ops.vision_preprocess(x, diffaugment_params(keys, "cutout,translation", 8, 8))
    with pytest.raises(TypeError, match="DiffAugmentParams"):
        ops.vision_preprocess(x, keys)
    with pytest.raises(RuntimeError, match="impl='cuda' cannot run on cpu"):
        ops.vision_preprocess(x, params, impl="cuda")
    with pytest.raises(ValueError, match="impl must be one of"):
        ops.vision_preprocess(x, params, impl="fast")


def test_compiled_op_checks_its_arguments():
    _need("cpp")
    x, _, params = _case(2, 8, 8, FULL)
    table, flags = VP.pack_params(params, x)
    f = torch.ops.fastgan.vision_preprocess
    with pytest.raises(RuntimeError, match="table must have shape"):
        f(x, table[:1], flags, 4, 4, list(VP.CLIP_MEAN), list(VP.CLIP_STD))
    with pytest.raises(RuntimeError, match="table must be float64"):
        f(x, table.float(), flags, 4, 4, list(VP.CLIP_MEAN), list(VP.CLIP_STD))
    with pytest.raises(RuntimeError, match="flags must be"):
        f(x, table, 99, 4, 4, list(VP.CLIP_MEAN), list(VP.CLIP_STD))
    with pytest.raises(RuntimeError, match="std must be non-zero"):
        f(x, table, flags, 4, 4, list(VP.CLIP_MEAN), [1.0, 0.0, 1.0])


def test_window_extent_bounds_every_pooling_window():
    from fastgan.kernels.vision_preprocess import window_extent

    for src in range(1, 40):
        for dst in range(1, 40):
            lens = [((p + 1) * src + dst - 1) // dst - (p * src) // dst for p in range(dst)]
            assert max(lens) <= window_extent(src, dst)
            cover = [sum(1 for p in range(dst) if (p * src) // dst <= i < ((p + 1) * src + dst - 1) // dst)
                     for i in range(src)]
            assert min(cover) >= 1 and max(cover) <= window_extent(dst, src)


# ---- registration ---------------------------------------------------------------------------------------------
OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("impl", ["cpp", "triton"])
def test_opcheck(impl):
    _need(impl)
    x, _, params = _case(2, 6, 6, FULL)
    table, flags = VP.pack_params(params, x)
    name = "vision_preprocess" if impl == "cpp" else "vision_preprocess_triton"
    fwd, bwd = getattr(torch.ops.fastgan, name), getattr(torch.ops.fastgan, name + "_backward")
    tests = OPCHECK_TESTS if impl == "cpp" else ("test_schema", "test_faketensor")
    args = (x.clone().requires_grad_(True), table, flags, 4, 4, list(VP.CLIP_MEAN), list(VP.CLIP_STD))
    torch.library.opcheck(fwd.default, args, test_utils=tests)
    torch.library.opcheck(bwd.default, (torch.randn(2, 3, 4, 4), table, flags, 6, 6, list(VP.CLIP_STD)),
                          test_utils=tests)


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    _need("cpp")
    x, _, params = _case(2, 8, 8, FULL)

    def f(a):
        return ops.vision_preprocess(a, params, 6, impl="cpp").square().sum()

    xx = x.clone().requires_grad_(True)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = compiled(xx)
    (g1,) = torch.autograd.grad(got, xx)
    want = f(xx)
    (g2,) = torch.autograd.grad(want, xx)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(g1, g2)


def test_doctor_parity_case():
    from fastgan import doctor

    for impl in ("ref", "cpp", "triton"):
        assert doctor.parity("vision_preprocess", impl, "cpu") is None, impl


# ---- the backbone integration -----------------------------------------------------------------------------------
def test_backbone_fuses_where_it_pays_and_matches_the_unfused_path():
    _need("cpp")
    bb = B.build_backbone("random")
    x, keys, params = _case(3, 20, 20, FULL)
    assert bb.fused_impl(x, params) == "cpp" and B.FUSED_IMPLS["cpu"] == ("cpp",)
    assert bb.fused_impl(x, diffaugment_params(keys, "cutout,translation", 20, 20)) is None
    xx = x.clone().requires_grad_(True)
    fused = bb(xx, params)
    (g_fused,) = torch.autograd.grad(sum(t.sum() for t in fused), xx)
    bb.preprocess_mode = "unfused"
    assert bb.fused_impl(x, params) is None
    plain = bb(xx, params)
    (g_plain,) = torch.autograd.grad(sum(t.sum() for t in plain), xx)
    # the unfused path is exactly preprocess(diffaugment(...))
    want = B.preprocess(diffaugment(x, FULL, keys), bb.input_size, bb.mean, bb.std)
    assert torch.equal(bb.preprocess(x, params), want)
    assert torch.equal(bb.preprocess(x, params), B.preprocess(apply_diffaugment(x, params), 32, bb.mean, bb.std))
    for a, b in zip(fused, plain):
        _assert_close("features", a.detach(), b.detach(), rel=1e-4)
    _assert_close("grad", g_fused, g_plain, rel=1e-4)
    bb.preprocess_mode = "sometimes"
    with pytest.raises(ValueError, match="preprocess_mode must be one of"):
        bb(x, params)
    bb.preprocess_mode = "auto"
    with pytest.raises(TypeError, match="augment must be DiffAugmentParams"):
        bb(x, keys)


def test_backbone_respects_the_global_ref_override(monkeypatch):
    bb = B.build_backbone("random")
    x, _, params = _case(2, 12, 12, FULL)
    monkeypatch.setenv("FASTGAN_IMPL", "ref")
    assert bb.fused_impl(x, params) is None
    monkeypatch.setenv("FASTGAN_IMPL", "cpp")
    assert bb.fused_impl(x, params) == "cpp"
    assert math.isfinite(bb.pooled(x).sum().item())


# ---- the benchmark ----------------------------------------------------------------------------------------------
def test_benchmark_writes_train_family_rows(tmp_path, monkeypatch):
    import csv

    from benchmarks import bench_preprocess, common

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    argv = ["--device", "cpu", "--res", "9", "--size", "6", "--batch", "2", "--modes", "fwd,fwdbwd", "--budget", "0",
            "--out", str(tmp_path)]
    assert bench_preprocess.main(argv) == 0
    assert bench_preprocess.main(argv[:-2] + ["--policy", "none", "--out", str(tmp_path)]) == 0
    with (tmp_path / "train.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == common.HEADER
    recs = [dict(zip(common.HEADER, r)) for r in rows[1:]]
    got = sorted((r["case"], r["provider"], r["mode"]) for r in recs)
    want = sorted((c, p, m) for c in ("preprocess_R9to6_B2", "preprocess_noaug_R9to6_B2") for p in ("ref", "cpp")
                  for m in ("fwd", "fwdbwd"))
    assert got == want  # cuda / triton are unavailable on a CPU-only machine: reported, not written
    for r in recs:
        assert r["family"] == "train" and r["unit"] == "img/s" and r["dtype"] == "fp32" and r["peak_mem_mb"] == ""
        assert float(r["throughput"]) == pytest.approx(2 / (float(r["median_ms"]) * 1e-3), rel=1e-3)
    with pytest.raises(SystemExit, match="--modes"):
        bench_preprocess.main(["--device", "cpu", "--modes", "full", "--dry-run"])

"""Primitives-PS ops: counter-based RNG, spectral field, min-max quantisation and shape rasterisation.

Every impl is checked against the reference: bit-equal for the uint8 rasteriser and the quantiser, within
float32 rounding for the spectral field, and at most one grey level (on a tiny fraction of pixels) for whole
noise images, whose inverse FFTs come from different libraries.
"""
from __future__ import annotations

import math

import pytest
import torch

from fastgan import ops
from fastgan.ops import synth as S

CPU_IMPLS = ["cpp", "triton"]
ALL_IMPLS = ["ref", "cpp", "cuda", "triton"]


def _need(op, impl, device="cpu"):
    reason = ops.why_unavailable(op, impl, device)
    if reason is not None and device == "cuda" and impl == "cuda" and "without CUDA" in reason:
        pytest.skip(f"CUDA kernels not built on this GPU machine: {reason}")
    if reason is not None:
        pytest.fail(f"impl {impl!r} of {op} should be available in the test environment: {reason}")


# ---- random numbers -----------------------------------------------------------------------------------------
def _mix_py(x: int) -> int:
    m = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & m
    x ^= x >> 15
    x = (x * 0x846CA68B) & m
    return x ^ (x >> 16)


def test_mix32_matches_uint32_arithmetic():
    vals = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xDEADBEEF, 123456789] + [
        int(v) for v in torch.randint(0, 2**32, (200,), dtype=torch.int64)]
    got = S.mix32(torch.tensor(vals, dtype=torch.int64)).tolist()
    assert got == [_mix_py(v) for v in vals]


def test_draws_are_uniform_and_streams_independent():
    keys = S.rng_keys(7, torch.arange(4), 0)
    u = S.draw32(keys[:, :1], keys[:, 1:], torch.arange(50000))
    assert u.min() >= 0 and u.max() < 2**32
    f = S.uniform24(u)
    assert abs(f.mean().item() - 0.5) < 0.01 and abs(f.var().item() - 1 / 12) < 0.005
    # different images, streams and seeds give different keys
    k = torch.cat([S.rng_keys(7, torch.arange(100), 0), S.rng_keys(7, torch.arange(100), 1),
                   S.rng_keys(8, torch.arange(100), 0)])
    assert len({tuple(r) for r in k.tolist()}) == 300
    # the same image index always gives the same key, whatever else is in the batch
    assert torch.equal(S.rng_keys(7, torch.tensor([5, 9]), 3)[1], S.rng_keys(7, torch.tensor([9]), 3)[0])


def test_randint_range_and_large_seed():
    keys = S.rng_keys(2**63 - 1, torch.tensor([2**62]), 0)
    u = S.draw32(keys[:, :1], keys[:, 1:], torch.arange(20000))
    r = S.randint(u, 3, 10)
    assert r.min() == 3 and r.max() == 9
    with pytest.raises(ValueError, match="seed"):
        S.rng_keys(-1, torch.arange(2), 0)
    with pytest.raises(TypeError, match="seed"):
        S.rng_keys(1.5, torch.arange(2), 0)


# ---- spectral field -------------------------------------------------------------------------------------
def _field_inputs(n, c, seed=3, device="cpu"):
    keys = S.rng_keys(seed, torch.arange(10, 10 + n, device=device), 0)
    exps = S.spectral_exponents(n, channels=c, seed=seed, start=10, device=device)
    return keys, exps


@pytest.mark.parametrize("size", [8, 9, 16, 33])
@pytest.mark.parametrize("n,c", [(1, 3), (3, 1), (2, 2)])
def test_field_reference_is_hermitian_consistent(size, n, c):
    """irfft2 then rfft2 gives the half spectrum back: the drawn field is a real image's spectrum."""
    keys, exps = _field_inputs(n, c)
    f = torch.view_as_complex(S._spectral_field_ref(keys, exps, size))
    back = torch.fft.rfft2(torch.fft.irfft2(f, s=(size, size)))
    assert (back - f).abs().max() <= 1e-5 * f.abs().max()


def _check_field(impl, size, n, c, device="cpu"):
    keys, exps = _field_inputs(n, c, device=device)
    ref = S._spectral_field_ref(keys.cpu(), exps.cpu(), size)
    got = getattr(torch.ops.fastgan, "synth_spectral_field" + ("_triton" if impl == "triton" else ""))(
        keys, exps, size).cpu()
    assert got.shape == ref.shape and got.dtype == torch.float32
    scale = ref.abs().amax(dim=(1, 2, 3, 4), keepdim=True)
    err = ((got - ref).abs() / (ref.abs() + 1e-6 * scale)).max().item()
    assert err < 5e-5, f"{impl}: spectral field relative error {err:.3g}"


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("size,n,c", [(8, 1, 3), (9, 2, 1), (16, 2, 3), (17, 1, 2), (64, 2, 3), (255, 1, 1)])
def test_field_impls(impl, size, n, c):
    _need("synth_spectral_field", impl)
    _check_field(impl, size, n, c)


# ---- min-max quantisation ---------------------------------------------------------------------------------
def _quant(impl, x):
    return ops.minmax_quantize(x, impl=impl)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (3, 1, 8, 8), (2, 3, 16, 9), (4, 37)])
def test_quantize_impls_bit_equal(impl, shape):
    _need("synth_minmax_quantize", impl)
    x = torch.randn(shape) * 1e3 + 5
    ref = S._minmax_quantize_ref(x)
    got = _quant(impl, x)
    assert got.dtype == torch.uint8 and torch.equal(got, ref)
    # the extremes of every image map to 0 and 255
    flat = got.reshape(shape[0], -1)
    assert (flat.amin(1) == 0).all() and (flat.amax(1) == 255).all()


@pytest.mark.parametrize("impl", ["ref"] + CPU_IMPLS)
def test_quantize_constant_and_noncontiguous(impl):
    _need("synth_minmax_quantize", impl)
    x = torch.randn(2, 3, 6, 10)
    x[1] = 4.0  # a constant image quantises to zeros
    got = _quant(impl, x)
    assert torch.equal(got[1], torch.zeros_like(got[1]))
    nc = torch.randn(2, 3, 10, 6).transpose(2, 3)
    assert torch.equal(_quant(impl, nc), S._minmax_quantize_ref(nc.contiguous()))


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_quantize_long_images_with_nan_and_inf(impl):
    # images longer than one parallel chunk, lengths that are not multiples of the SIMD width, and non-finite values:
    # NaN anywhere makes the whole image 0 (like the reference), an infinity makes the range infinite
    _need("synth_minmax_quantize", impl)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3 * 97 * 61, generator=g) * 50
    x[1, 12345] = float("nan")
    x[2, -1] = float("nan")
    x[3, 7] = float("inf")
    x[4, 17000] = -float("inf")
    assert torch.equal(_quant(impl, x), S._minmax_quantize_ref(x))
    assert (_quant(impl, x)[1:3] == 0).all()


def test_quantize_matches_official_truncation():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    # (x - min) / (max - min) * 255 truncated: 0, 85, 170, 255
    assert S._minmax_quantize_ref(x).tolist() == [[0, 85, 170, 255]]


def test_quantize_bad_input():
    with pytest.raises(TypeError, match="float32"):
        ops.minmax_quantize(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-empty"):
        ops.minmax_quantize(torch.zeros(0, 3))


# ---- whole noise images -------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_noise_impls_match_reference(impl):
    _need("synth_spectral_field", impl)
    ref = ops.power_spectrum_noise(3, 32, seed=11, start=4, impl="ref")
    got = ops.power_spectrum_noise(3, 32, seed=11, start=4, impl=impl)
    diff = (got.int() - ref.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


def test_noise_is_deterministic_whatever_the_batch_split():
    full = ops.power_spectrum_noise(6, 16, seed=5, start=100, impl="ref")
    parts = torch.cat([ops.power_spectrum_noise(2, 16, seed=5, start=100, impl="ref"),
                       ops.power_spectrum_noise(1, 16, seed=5, start=102, impl="ref"),
                       ops.power_spectrum_noise(3, 16, seed=5, start=103, impl="ref")])
    assert torch.equal(full, parts)
    other = ops.power_spectrum_noise(6, 16, seed=5, start=100, stream=1, impl="ref")
    assert not torch.equal(full, other)


def test_noise_bad_input():
    with pytest.raises(ValueError, match="n must be at least 1"):
        ops.power_spectrum_noise(0, 16, seed=0)
    with pytest.raises(ValueError, match="size"):
        ops.power_spectrum_noise(1, 1, seed=0)
    with pytest.raises(ValueError, match="exponent_range"):
        ops.power_spectrum_noise(1, 8, seed=0, exponent_range=(2.0, 1.0))
    with pytest.raises(TypeError, match="size"):
        ops.power_spectrum_noise(1, 8.0, seed=0)


# ---- rasterisation: exact pixel sets ----------------------------------------------------------------------
def _paint(impl, shapes, h=12, w=12, c=1, canvas=None, texture=None):
    if canvas is None:
        canvas = torch.zeros(1, c, h, w, dtype=torch.uint8)
    t = torch.tensor(shapes, dtype=torch.float32).view(1, -1, 10)
    return ops.rasterize_shapes(canvas, t, texture=texture, impl=impl)


def _pixels(img):
    return {(int(i), int(j)) for i, j in torch.nonzero(img[0, 0]).tolist()}


def _brute(h, w, pred):
    return {(i, j) for i in range(h) for j in range(w) if pred(j, i)}


RASTER_IMPLS = ["ref"] + CPU_IMPLS


@pytest.mark.parametrize("impl", RASTER_IMPLS)
def test_pixel_sets_of_each_kind(impl):
    _need("rasterize_shapes", impl)
    h = w = 12
    # circle: (x - 5)^2 + (y - 6)^2 <= 9, boundary pixels included
    got = _pixels(_paint(impl, [2, 200, 0, 0, 5, 6, 3, 0, 0, 0]))
    assert got == _brute(h, w, lambda x, y: (x - 5) ** 2 + (y - 6) ** 2 <= 9)
    assert (8, 6) in got and (6, 8) in got and (9, 7) not in got  # (x=8, y=6) is on the boundary
    # rectangle with swapped corners, inclusive
    got = _pixels(_paint(impl, [4, 1, 0, 0, 7, 9, 2, 3, 0, 0]))
    assert got == _brute(h, w, lambda x, y: 2 <= x <= 7 and 3 <= y <= 9)
    # axis-aligned ellipse rx=4 (along x), ry=2
    got = _pixels(_paint(impl, [3, 1, 0, 0, 6, 5, 4, 2, 0, 0]))
    assert got == _brute(h, w, lambda x, y: ((x - 6) / 4) ** 2 + ((y - 5) / 2) ** 2 <= 1)
    # rotated by 90 degrees: the rx axis now points down (+y)
    got = _pixels(_paint(impl, [3, 1, 0, 0, 6, 5, 4, 2, 90, 0]))
    assert got == _brute(h, w, lambda x, y: ((y - 5) / 4) ** 2 + ((x - 6) / 2) ** 2 <= 1 + 1e-9)
    # 30 degrees: clockwise on screen, the rx axis points along (cos 30, sin 30) with y down
    got = _pixels(_paint(impl, [3, 1, 0, 0, 6, 5, 5, 1.5, 30, 0]))
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    assert got == _brute(h, w, lambda x, y: (((x - 6) * c + (y - 5) * s) / 5) ** 2
                         + ((-(x - 6) * s + (y - 5) * c) / 1.5) ** 2 <= 1)
    assert (7, 10) in got and (3, 10) not in got  # (x=10, y=7) is on the axis; its mirror (x=10, y=3) is not
    # thick line: capsule of radius t/2 = 1.5 around (1,1)-(9,5)
    got = _pixels(_paint(impl, [1, 1, 0, 0, 1, 1, 9, 5, 3, 0]))

    def capsule(x, y, ax=1, ay=1, bx=9, by=5, r=1.5):
        dx, dy = bx - ax, by - ay
        t = max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)))
        return (x - ax - t * dx) ** 2 + (y - ay - t * dy) ** 2 <= r * r + 1e-12

    assert got == _brute(h, w, capsule)
    assert (0, 0) in got and (11, 11) not in got  # round cap reaches the corner pixel at distance sqrt(2)
    # degenerate line (a point) with thickness 4 is a disc of radius 2
    got = _pixels(_paint(impl, [1, 1, 0, 0, 5, 5, 5, 5, 4, 0]))
    assert got == _brute(h, w, lambda x, y: (x - 5) ** 2 + (y - 5) ** 2 <= 4)


@pytest.mark.parametrize("impl", RASTER_IMPLS)
def test_painters_order_and_kinds_that_paint_nothing(impl):
    _need("rasterize_shapes", impl)
    big = [4, 10, 20, 30, 0, 0, 11, 11, 0, 0]
    small = [2, 40, 50, 60, 5, 5, 2, 0, 0, 0]
    out = _paint(impl, [big, small], c=3)
    assert out[0, :, 5, 5].tolist() == [40, 50, 60] and out[0, :, 0, 0].tolist() == [10, 20, 30]
    out = _paint(impl, [small, big], c=3)  # the later rectangle covers the circle
    assert out[0, :, 5, 5].tolist() == [10, 20, 30]
    # kind 0, unknown kinds and non-integer kinds paint nothing; textured rows need a texture
    for kind in (0, 5, 7, 8, 13, -1, 2.5):
        out = _paint(impl, [[kind, 9, 9, 9, 5, 5, 3, 3, 0, 0]])
        assert out.sum() == 0, kind
    # an ellipse with a zero radius has no area (the bare test would cover a line, or the whole canvas)
    for rx, ry, angle in ((0, 0, 0), (0, 3, 0), (4, 0, 30), (0, 0, 45)):
        out = _paint(impl, [[3, 9, 9, 9, 5, 5, rx, ry, angle, 0]])
        assert out.sum() == 0, (rx, ry, angle)


@pytest.mark.parametrize("impl", RASTER_IMPLS)
def test_textured_shapes_and_per_channel_flags(impl):
    _need("rasterize_shapes", impl)
    canvas = torch.full((1, 3, 8, 8), 7, dtype=torch.uint8)
    texture = torch.arange(3 * 64, dtype=torch.int64).remainder(251).to(torch.uint8).view(1, 3, 8, 8)
    # textured rectangle over the left half; channel 1's flag is 0 so it keeps the canvas there
    out = _paint(impl, [[12, 5, 0, 9, 0, 0, 3, 7, 0, 0]], canvas=canvas, texture=texture)
    assert torch.equal(out[0, 0, :, :4], texture[0, 0, :, :4])
    assert torch.equal(out[0, 2, :, :4], texture[0, 2, :, :4])
    assert (out[0, 1] == 7).all() and (out[0, :, :, 4:] == 7).all()
    # a solid shape under a textured one shows through the unflagged channel
    out = _paint(impl, [[4, 100, 101, 102, 0, 0, 7, 7, 0, 0], [12, 5, 0, 9, 0, 0, 3, 7, 0, 0]], canvas=canvas,
                 texture=texture)
    assert (out[0, 1, :, :4] == 101).all() and torch.equal(out[0, 0, :, :4], texture[0, 0, :, :4])
    with pytest.raises(ValueError, match="texture"):
        _paint(impl, [[12, 5, 0, 9, 0, 0, 3, 7, 0, 0]], canvas=canvas)


@pytest.mark.parametrize("impl", RASTER_IMPLS)
def test_uint8_colour_clamp_and_float_canvas(impl):
    _need("rasterize_shapes", impl)
    out = _paint(impl, [[4, 300.7, -5, 17.9, 0, 0, 3, 3, 0, 0]], c=3)
    assert out[0, :, 0, 0].tolist() == [255, 0, 17]
    fc = torch.full((1, 2, 6, 6), -1.0)
    out = _paint(impl, [[2, 0.25, -0.5, 9, 2, 2, 1, 0, 0, 0]], canvas=fc)
    assert out.dtype == torch.float32 and out[0, :, 2, 2].tolist() == [0.25, -0.5] and out[0, 0, 5, 5] == -1.0


def random_table(b, s, h, w, *, textured=True, seed=0, integer=True):
    """A shape table with every kind, integer (or quarter-pixel) geometry, some shapes off the canvas."""
    g = torch.Generator().manual_seed(seed)

    def ri(lo, hi, *shape):
        return torch.randint(lo, hi, shape or (b, s), generator=g).float()

    kinds = torch.tensor([1, 2, 3, 4, 0, 9, 10, 11, 12] if textured else [1, 2, 3, 4, 0])[
        torch.randint(0, 9 if textured else 5, (b, s), generator=g)].float()
    t = torch.zeros(b, s, 10)
    t[..., 0] = kinds
    t[..., 1:4] = ri(0, 256, b, s, 3)
    t[..., 4] = ri(-3, w + 3)
    t[..., 5] = ri(-3, h + 3)
    t[..., 6] = ri(-3, w + 3)
    t[..., 7] = ri(-3, h + 3)
    t[..., 8] = ri(0, 360)
    circ = (kinds % 8 == 2) | (kinds % 8 == 3)
    t[..., 6] = torch.where(circ, ri(1, max(2, w // 2)), t[..., 6])
    t[..., 7] = torch.where(kinds % 8 == 3, ri(1, max(2, h // 2)), t[..., 7])
    t[..., 8] = torch.where(kinds % 8 == 1, ri(1, 6), t[..., 8])
    if not integer:
        t[..., 4:8] += torch.randint(0, 4, (b, s, 4), generator=g).float() * 0.25
    return t


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("b,s,c,h,w", [(1, 1, 3, 8, 8), (2, 17, 3, 13, 11), (3, 40, 1, 20, 24), (1, 0, 2, 5, 5)])
@pytest.mark.parametrize("integer", [True, False])
def test_raster_impls_bit_equal(impl, b, s, c, h, w, integer):
    _need("rasterize_shapes", impl)
    table = random_table(b, s, h, w, seed=b * 100 + s, integer=integer)
    canvas = torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8)
    texture = torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8)
    ref = S._rasterize_shapes_ref(canvas, table, texture)
    got = ops.rasterize_shapes(canvas, table, texture=texture, impl=impl)
    assert torch.equal(got, ref)
    # float canvas, non-contiguous inputs, and the inputs are untouched
    fcanvas = torch.randn(b, c, w, h).transpose(2, 3)
    ftex = torch.randn(b, c, w, h).transpose(2, 3)
    before = fcanvas.clone()
    ref = S._rasterize_shapes_ref(fcanvas, table, ftex)
    got = ops.rasterize_shapes(fcanvas, table, texture=ftex, impl=impl)
    assert torch.equal(got, ref) and torch.equal(fcanvas, before)


def test_raster_bad_input():
    c = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"shapes must have shape \(B, S, 10\)"):
        ops.rasterize_shapes(c, torch.zeros(1, 4, 9))
    with pytest.raises(TypeError, match="real"):
        ops.rasterize_shapes(c, torch.zeros(1, 4, 10, dtype=torch.complex64))
    # integer and float64 tables are converted to float32
    t = torch.tensor([[[2, 9, 9, 9, 3, 3, 2, 0, 0, 0]]])
    assert torch.equal(ops.rasterize_shapes(c, t, impl="ref"), ops.rasterize_shapes(c, t.float(), impl="ref"))
    assert torch.equal(ops.rasterize_shapes(c, t.double(), impl="ref"), ops.rasterize_shapes(c, t.float(), impl="ref"))
    with pytest.raises(ValueError, match="1 to 3 channels"):
        ops.rasterize_shapes(torch.zeros(1, 4, 8, 8, dtype=torch.uint8), torch.zeros(1, 4, 10))
    with pytest.raises(TypeError, match="uint8 or float32"):
        ops.rasterize_shapes(c.double(), torch.zeros(1, 4, 10))
    with pytest.raises(ValueError, match="texture must match"):
        ops.rasterize_shapes(c, torch.zeros(1, 4, 10), texture=torch.zeros(1, 3, 8, 7, dtype=torch.uint8))


def test_ops_registered_and_opcheck():
    for name in ("synth_spectral_field", "synth_minmax_quantize", "rasterize_shapes"):
        assert "ref" in ops.available_impls(name, "cpu")
    table = random_table(2, 5, 9, 9)
    canvas = torch.randint(0, 256, (2, 3, 9, 9), dtype=torch.uint8)
    tex = torch.randint(0, 256, (2, 3, 9, 9), dtype=torch.uint8)
    torch.library.opcheck(torch.ops.fastgan.rasterize_shapes_triton, (canvas, table, tex),
                          test_utils=("test_schema", "test_faketensor"))
    if hasattr(torch.ops.fastgan, "rasterize_shapes"):
        torch.library.opcheck(torch.ops.fastgan.rasterize_shapes.default, (canvas, table, tex))
        keys, exps = _field_inputs(2, 3)
        torch.library.opcheck(torch.ops.fastgan.synth_spectral_field.default, (keys, exps, 8))
        torch.library.opcheck(torch.ops.fastgan.synth_minmax_quantize.default, (torch.randn(2, 3, 4, 4),))


# ---- GPU lane ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton", "ref"])
def test_gpu_impls_match_cpu_reference(impl):
    for op in ("synth_spectral_field", "synth_minmax_quantize", "rasterize_shapes"):
        _need(op, impl, "cuda")
    for size, n, c in [(8, 1, 3), (17, 2, 2), (64, 3, 3)]:
        if impl != "ref":
            _check_field(impl, size, n, c, device="cuda")
    x = torch.randn(3, 3, 33, 31)
    assert torch.equal(ops.minmax_quantize(x.cuda(), impl=impl).cpu(), S._minmax_quantize_ref(x))
    for b, s, c, h, w in [(2, 17, 3, 13, 11), (4, 101, 3, 64, 64), (1, 300, 1, 70, 33)]:
        table = random_table(b, s, h, w, seed=s)
        canvas = torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8)
        tex = torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8)
        ref = S._rasterize_shapes_ref(canvas, table, tex)
        got = ops.rasterize_shapes(canvas.cuda(), table.cuda(), texture=tex.cuda(), impl=impl).cpu()
        assert torch.equal(got, ref), (b, s, c, h, w)
    ref = ops.power_spectrum_noise(4, 64, seed=3, impl="ref")
    got = ops.power_spectrum_noise(4, 64, seed=3, device="cuda", impl=impl).cpu()
    diff = (got.int() - ref.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_ops_trace_under_torch_compile(impl):
    # Training code synthesises batches inside compiled regions: the ops must not break the graph.
    for op in ("synth_minmax_quantize", "rasterize_shapes"):
        _need(op, impl)
    table = random_table(2, 7, 12, 10, seed=5)
    canvas = torch.randint(0, 256, (2, 3, 12, 10), dtype=torch.uint8)
    tex = torch.randint(0, 256, (2, 3, 12, 10), dtype=torch.uint8)
    field = torch.randn(2, 3, 12, 10)

    def step(canvas, table, tex, field):
        return ops.rasterize_shapes(canvas, table, texture=tex, impl=impl), ops.minmax_quantize(field, impl=impl)

    torch._dynamo.reset()
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(canvas, table, tex, field)
    assert torch.equal(got[0], S._rasterize_shapes_ref(canvas, table, tex))
    assert torch.equal(got[1], S._minmax_quantize_ref(field))


def _hard_table(mode, b=2, s=40, seed=0):
    """Float geometry the row-run estimates of the kernels must not get wrong: skinny ellipses, nearly
    horizontal / vertical lines, zero-thickness lines, tangent integer circles, huge and non-finite values."""
    g = torch.Generator().manual_seed(seed)
    t = torch.zeros(b, s, 10)
    t[..., 0] = torch.randint(1, 5, (b, s), generator=g).float()
    t[..., 1:4] = torch.randint(0, 256, (b, s, 3), generator=g).float()
    t[..., 4:8] = torch.rand(b, s, 4, generator=g) * 50 - 8
    t[..., 8] = torch.rand(b, s, generator=g) * 360
    if mode == "skinny":
        t[..., 6] = torch.rand(b, s, generator=g) * 0.7 + 1e-3
    elif mode == "horizontal":
        t[..., 7] = t[..., 5] + torch.randn(b, s, generator=g) * 1e-3
        t[..., 8] = torch.rand(b, s, generator=g) * 3
    elif mode == "vertical":
        t[..., 6] = t[..., 4] + torch.randn(b, s, generator=g) * 1e-3
    elif mode == "thin":
        t[..., 4:8] = t[..., 4:8].round()
        t[..., 8] = 0.0
    elif mode == "tangent":
        t[..., 4:8] = t[..., 4:8].round().abs() % 20
        t[..., 8] = torch.randint(0, 4, (b, s), generator=g).float() * 90
    elif mode == "huge":
        t[0, :5, 4] = 1e8
        t[0, 5:8, 6] = float("inf")
        t[1, :3, 5] = float("nan")
        t[1, 3:6, 6] = 3e6
    return t


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("mode", ["skinny", "horizontal", "vertical", "thin", "tangent", "huge"])
def test_raster_impls_bit_equal_on_hard_geometry(impl, mode):
    _need("rasterize_shapes", impl)
    table = _hard_table(mode)
    canvas = torch.randint(0, 256, (2, 3, 30, 37), dtype=torch.uint8)
    tex = torch.randint(0, 256, (2, 3, 30, 37), dtype=torch.uint8)
    ref = S._rasterize_shapes_ref(canvas, table, tex)
    assert torch.equal(ops.rasterize_shapes(canvas, table, texture=tex, impl=impl), ref), mode

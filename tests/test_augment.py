"""fastgan.train.augment: DiffAugment, the ADA pipeline and the ADA p controller."""
import numpy as np
import pytest
import torch

from fastgan.train import rng
from fastgan.train.augment import (DIFFAUGMENT_FUSED_ORDER, AdaController, AdaptiveAugment, DiffAugmentParams,
                                   apply_diffaugment, diffaugment, diffaugment_params)


def _keys(n, key=7):
    return rng.sample_keys(key, range(n))


def _img(n=8, c=3, h=16, w=16, seed=0, positive=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g) * 2 - 1
    return x * 0.5 + 0.5 if positive else x  # positive: values in [0, 1), nonzero almost surely


# ---------------------------------------------------------------------------------------------------- keys


@pytest.mark.parametrize("policy", ["color,translation,cutout", "translation", "cutout", "color"])
def test_diffaugment_depends_only_on_key(policy):
    x, k = _img(8), _keys(8)
    full = diffaugment(x, policy, k)
    assert torch.equal(diffaugment(x[2:5], policy, k[2:5]), full[2:5])
    assert not torch.equal(full, x)
    # Global RNG neither used nor consumed.
    state = torch.get_rng_state()
    torch.manual_seed(123)
    again = diffaugment(x, policy, k)
    assert torch.equal(again, full)
    torch.set_rng_state(state)


def test_ada_depends_only_on_key():
    x, k = _img(16), _keys(16)
    aug = AdaptiveAugment("bgc", p=0.7, cutout=1.0)
    full = aug(x, k)
    assert torch.equal(aug(x[2:5], k[2:5]), full[2:5])
    assert torch.equal(aug(x[5:13], k[5:13]), full[5:13])
    assert (full != x).flatten(1).any(1).all()
    # At small p the batch mixes untouched samples with augmented ones (exact-copy and grid_sample paths).
    low = aug(x, k, p=0.1)
    changed = (low != x).flatten(1).any(1)
    assert changed.any() and not changed.all()
    assert torch.equal(aug(x[3:9], k[3:9], p=0.1), low[3:9])


def test_color_is_brightness_saturation_contrast():
    x, k = _img(4), _keys(4)
    assert torch.equal(diffaugment(x, "color", k), diffaugment(x, "brightness,saturation,contrast", k))


# ---------------------------------------------------------------------------------------------------- ADA ops


def test_ada_p0_identity_and_p1_changes_all():
    x, k = _img(16), _keys(16)
    aug = AdaptiveAugment("bgc", p=0.0, cutout=1.0)
    assert torch.equal(aug(x, k), x)
    aug.p.fill_(1.0)
    y = aug(x, k)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert (y != x).flatten(1).any(1).all()


def test_ada_cutout_modes():
    x, k = _img(16, positive=True), _keys(16)
    # "always" (vision-aided-gan's heads): DiffAugment's cutout on every sample, even at p = 0.
    y = AdaptiveAugment("none", p=0.0, cutout=1.0, cutout_mode="always")(x, k)
    assert ((y == 0).flatten(1).sum(1) >= 3 * 4 * 4).all()
    # "ada": a cutout_size box around a uniform centre, only where the p * cutout gate fires.
    z = AdaptiveAugment("none", p=0.5, cutout=1.0)(x, k)
    hit = (z == 0).flatten(1).any(1)
    assert hit.any() and not hit.all()
    assert ((z == 0).flatten(1).sum(1)[hit] <= 3 * 8 * 8).all()


def test_ada_xflip_exact():
    x, k = _img(16), _keys(16)
    y = AdaptiveAugment("none", p=1.0, xflip=1)(x, k)
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(16)]
    same = [torch.equal(y[i], x[i]) for i in range(16)]
    assert all(f or s for f, s in zip(flipped, same))
    assert any(flipped) and any(same)


def test_ada_rotate90_exact():
    x, k = _img(16), _keys(16)
    y = AdaptiveAugment("none", p=1.0, rotate90=1)(x, k)
    used = set()
    for i in range(16):
        hits = [r for r in range(4) if torch.equal(y[i], torch.rot90(x[i], r, dims=(1, 2)))]
        assert len(hits) == 1, f"sample {i} is not an exact rotation by a multiple of 90 degrees"
        used.add(hits[0])
    assert len(used) >= 3


def test_ada_xint_exact_shift_with_symmetric_reflection():
    n, h, w = 12, 16, 16
    x, k = _img(n, h=h, w=w), _keys(n)
    y = AdaptiveAugment("none", p=1.0, xint=1)(x, k).numpy()
    m = int(0.125 * w) + 1
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (m, m), (m, m)), mode="symmetric")
    nonzero = 0
    for i in range(n):
        shifts = [(dy, dx) for dy in range(-m + 1, m) for dx in range(-m + 1, m)
                  if np.array_equal(y[i], padded[i, :, m - dy:m - dy + h, m - dx:m - dx + w])]
        assert shifts, f"sample {i} is not an exact integer shift within xint_max"
        nonzero += shifts[0] != (0, 0)
    assert nonzero >= n // 2


@pytest.mark.parametrize("ops", [dict(rotate90=1), dict(xflip=1, xint=1)])
def test_ada_exact_path_agrees_with_grid_sample_path(ops):
    # For integer maps both paths must give the same image: checks the grid convention and the reflection.
    h, w = (12, 12) if "rotate90" in ops else (10, 14)
    x, k = _img(12, h=h, w=w), _keys(12)
    aug = AdaptiveAugment("none", p=1.0, interpolation="bilinear", **ops)
    g = aug._geometric_matrix(k, 1.0, w, h)
    exact = aug(x, k)
    assert not torch.equal(exact, x)
    assert torch.allclose(aug._resample(x, g), exact, atol=1e-5)


def test_ada_geometric_preserves_constant_images():
    # Reflection padding and interpolation weights summing to 1 keep a flat image flat (no zero fill).
    x, k = torch.full((8, 3, 12, 12), 0.37), _keys(8)
    y = AdaptiveAugment("bg", p=1.0)(x, k)
    assert torch.allclose(y, x, atol=1e-5)


def test_ada_statistics_roughly_preserved():
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(64, 3, 32, 32, generator=g) * 0.4).clamp(-1, 1)
    y = AdaptiveAugment("bgc", p=0.2)(x, _keys(64))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert abs(float(y.mean() - x.mean())) < 0.05
    assert 0.8 < float(y.std() / x.std()) < 1.3


def test_ada_color_single_channel_and_lumaflip():
    x, k = _img(16, c=1), _keys(16)
    y = AdaptiveAugment("bgc", p=0.8)(x, k)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # ADA's gray rule: lumaflip negates a gray image; hue/saturation are skipped for C=1.
    z = AdaptiveAugment("none", p=1.0, lumaflip=1, hue=1, saturation=1)(x, k)
    neg = [torch.allclose(z[i], -x[i], atol=1e-6) for i in range(16)]
    same = [torch.equal(z[i], x[i]) for i in range(16)]
    assert all(a or b for a, b in zip(neg, same)) and any(neg) and any(same)


def test_ada_hue_saturation_keep_luma():
    x, k = _img(8), _keys(8)
    y = AdaptiveAugment("none", p=1.0, hue=1, saturation=1)(x, k)
    assert torch.allclose(y.mean(1), x.mean(1), atol=1e-5)  # luma axis (1,1,1)/sqrt(3) is fixed
    assert not torch.allclose(y, x)


def test_ada_state_dict_roundtrip():
    a = AdaptiveAugment("bgc", p=0.3)
    sd = a.state_dict()
    assert sd["p"].dtype == torch.float32 and float(sd["p"]) == pytest.approx(0.3)
    b = AdaptiveAugment("bgc")
    b.load_state_dict(sd)
    assert torch.equal(b.p, a.p)
    x, k = _img(4), _keys(4)
    assert torch.equal(a(x, k), b(x, k))


@pytest.mark.parametrize("interp,p", [("bicubic", 0.9), ("bilinear", 0.9), ("bicubic", 0.15)])
def test_ada_gradcheck(interp, p):
    n = 3 if p > 0.5 else 12  # at p=0.15 the batch mixes untouched, exact-copy and resampled samples
    x = _img(n, h=6, w=6).double().requires_grad_(True)
    aug = AdaptiveAugment("bgc", p=p, cutout=1.0, interpolation=interp)
    torch.autograd.gradcheck(lambda t: aug(t, _keys(n)), (x,), fast_mode=True)


# ---------------------------------------------------------------------------------------------------- DiffAugment ops


def test_diffaugment_translation_exact_zero_pad():
    n, h, w = 16, 16, 24
    x, k = _img(n, h=h, w=w, positive=True), _keys(n)
    y = diffaugment(x, "translation", k)
    sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
    pad = torch.nn.functional.pad(x, (sw, sw, sh, sh))
    moved = 0
    for i in range(n):
        hits = [(dy, dx) for dy in range(-sh, sh + 1) for dx in range(-sw, sw + 1)
                if torch.equal(y[i], pad[i, :, sh + dy:sh + dy + h, sw + dx:sw + dx + w])]
        assert len(hits) == 1, f"sample {i} is not a zero-padded integer shift within +-{sh}, +-{sw}"
        moved += hits[0] != (0, 0)
    assert moved >= n // 2


def test_diffaugment_cutout_region():
    n, h, w = 64, 16, 10
    x, k = _img(n, h=h, w=w, positive=True), _keys(n)
    y = diffaugment(x, "cutout", k)
    ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    clipped = 0
    for i in range(n):
        zero = y[i] == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])
        z = zero[0]
        rows = z.any(1).nonzero().flatten()
        cols = z.any(0).nonzero().flatten()
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        box = torch.zeros_like(z)
        box[y0:y1, x0:x1] = True
        assert torch.equal(z, box), "cutout must zero one axis-aligned rectangle"
        # Full size unless clipped at a border; the centre stays inside the image.
        assert (y1 - y0 == ch) or (y0 == 0 or y1 == h)
        assert (x1 - x0 == cw) or (x0 == 0 or x1 == w)
        assert y1 - y0 >= ch - ch // 2 and x1 - x0 >= cw - cw // 2
        clipped += (y1 - y0 < ch) or (x1 - x0 < cw)
        assert torch.equal(y[i][:, ~z], x[i][:, ~z])
    assert 0 < clipped < n


def test_diffaugment_brightness_adds_constant():
    x, k = _img(8), _keys(8)
    d = (diffaugment(x, "brightness", k) - x).flatten(1)
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-6)
    assert (d[:, 0].abs() <= 0.5).all() and d[:, 0].std() > 0.05


def test_diffaugment_saturation_contrast_ranges():
    x, k = _img(32), _keys(32)
    ys = diffaugment(x, "saturation", k)
    f = ((ys - ys.mean(1, keepdim=True)) / (x - x.mean(1, keepdim=True))).flatten(1).median(1).values
    assert (f >= -1e-4).all() and (f < 2 + 1e-4).all()
    assert torch.allclose(ys.mean(1), x.mean(1), atol=1e-6)
    yc = diffaugment(x, "contrast", k)
    assert torch.allclose(yc.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-6)


def test_diffaugment_gradcheck():
    x = _img(2, h=6, w=6).double().requires_grad_(True)
    k = _keys(2)
    torch.autograd.gradcheck(lambda t: diffaugment(t, "color,translation,cutout", k), (x,))


def test_diffaugment_identity_policies():
    x, k = _img(2), _keys(2)
    assert torch.equal(diffaugment(x, "", k), x)
    assert torch.equal(diffaugment(x, "none", k), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("policy", ["color,translation,cutout", "cutout,translation", "color,color", "saturation", ""])
def test_diffaugment_is_apply_of_drawn_params(policy, dtype):
    x, k = _img(6, h=12, w=9).to(dtype), _keys(6)
    params = diffaugment_params(k, policy, 12, 9)
    assert isinstance(params, DiffAugmentParams) and params.batch == 6 and (params.height, params.width) == (12, 9)
    assert torch.equal(apply_diffaugment(x, params), diffaugment(x, policy, k))  # bit for bit, every dtype
    # a sub-batch's parameters are the batch's rows (keys only), and select() slices them the same way
    sub = diffaugment_params(k[1:4], policy, 12, 9)
    for a, b in zip(sub.values, params.select(slice(1, 4)).values):
        assert torch.equal(a, b)


def test_diffaugment_params_values():
    k = _keys(400)
    p = diffaugment_params(k, "color,translation,cutout", 16, 10)
    assert p.ops == DIFFAUGMENT_FUSED_ORDER and p.fusable
    b, s, c = p.get("brightness"), p.get("saturation"), p.get("contrast")
    assert b.dtype == torch.float64 and (b >= -0.5).all() and (b < 0.5).all()
    assert (s >= 0).all() and (s < 2).all() and (c >= 0.5).all() and (c < 1.5).all()
    t = p.get("translation")
    assert t.dtype == torch.int64 and t.shape == (400, 2)
    assert t[:, 0].abs().max() == 2 and t[:, 1].abs().max() == 1  # int(16/8 + .5), int(10/8 + .5)
    box = p.get("cutout")
    assert box.shape == (400, 4) and (box[:, 1] - box[:, 0]).max() == 8 and (box[:, 3] - box[:, 2]).max() == 5
    assert ((box[:, 0] >= 0) & (box[:, 1] <= 16) & (box[:, 2] >= 0) & (box[:, 3] <= 10)).all()
    assert diffaugment_params(k, "translation", 16).get("brightness") is None  # width defaults to height
    assert not diffaugment_params(k, "cutout,color", 8).fusable
    moved = p.to("cpu")
    assert moved.device.type == "cpu" and all(torch.equal(a, b) for a, b in zip(moved.values, p.values))


def test_diffaugment_params_errors():
    x, k = _img(4, h=8, w=8), _keys(4)
    with pytest.raises(TypeError, match="keys must be a 1-D int64"):
        diffaugment_params(k.float(), "color", 8)
    with pytest.raises(ValueError, match="height must be a positive int"):
        diffaugment_params(k, "color", 0)
    with pytest.raises(ValueError, match="width must be a positive int"):
        diffaugment_params(k, "color", 8, 2.5)
    with pytest.raises(ValueError, match="valid names"):
        diffaugment_params(k, "colour", 8)
    p = diffaugment_params(k, "color,translation", 8)
    with pytest.raises(ValueError, match="unknown op"):
        p.get("flip")
    with pytest.raises(ValueError, match="params batch mismatch"):
        apply_diffaugment(x[:3], p)
    with pytest.raises(ValueError, match="drawn for 8x8 images but x is 8x6"):
        apply_diffaugment(x[..., :6], p)
    with pytest.raises(TypeError, match="DiffAugmentParams"):
        apply_diffaugment(x, k)


# ---------------------------------------------------------------------------------------------------- controller


def test_controller_rises_by_ada_step():
    c = AdaController(batch_size=16, target=0.6, interval=4, speed_kimg=500)
    step = 16 * 4 / (500 * 1000)
    expect = 0.0
    for i in range(1, 13):
        p = c.step(torch.ones(16, 1))
        if i % 4 == 0:
            expect += step
        assert p == expect
    assert c.rt == 1.0 and c.p == pytest.approx(3 * step)
    assert torch.equal(c.pending(), torch.zeros(2, dtype=torch.float64))  # cleared by each update
    for _ in range(4):  # r_t covers only the last interval: one negative interval steps p down once
        c.step(-torch.ones(16, 1))
    assert c.rt == -1.0 and c.p == expect - step


def test_controller_negative_stays_zero_and_clamps_one():
    c = AdaController(batch_size=16)
    for _ in range(12):
        c.step(-torch.ones(8))
    assert c.p == 0.0 and c.rt == -1.0
    c = AdaController(batch_size=1000, interval=1, speed_kimg=1, p=0.5)
    c.step(torch.ones(3))
    assert c.p == 1.0


def test_controller_pending_merges_across_processes():
    g = torch.Generator().manual_seed(3)
    logits = [torch.randn(8, 1, generator=g) + 1.0 for _ in range(8)]
    single = AdaController(batch_size=8, target=0.3)
    a, b = AdaController(batch_size=8, target=0.3), AdaController(batch_size=8, target=0.3)
    for lg in logits:
        single.accumulate(lg)
        a.accumulate(lg[:4])
        b.accumulate(lg[4:])
        due = [single.tick(), a.tick(), b.tick()]
        assert due[0] == due[1] == due[2]
        if due[0]:
            merged = a.pending() + b.pending()  # what all_reduce(SUM) gives
            assert torch.equal(merged, single.pending())
            single.update(single.pending())
            a.update(merged)
            b.update(merged)
            assert single.p == a.p == b.p and single.rt == a.rt
    assert single.p > 0


def test_controller_state_roundtrip():
    g = torch.Generator().manual_seed(4)
    logits = [torch.randn(6, generator=g) + 0.3 for _ in range(20)]
    a = AdaController(batch_size=6, target=0.2, interval=3)
    for lg in logits[:7]:  # stop mid-interval, with pending sums
        a.step(lg)
    b = AdaController(batch_size=6, target=0.2, interval=3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.pending(), a.pending()) and b.pending()[1] > 0
    for lg in logits[7:]:
        assert a.step(lg) == b.step(lg)
        assert a.rt == b.rt
    assert a.p > 0


# ---------------------------------------------------------------------------------------------------- bad input


def test_bad_inputs():
    x, k = _img(4), _keys(4)
    aug = AdaptiveAugment(p=0.5)
    with pytest.raises(ValueError, match="4-D"):
        diffaugment(x[0], "color", k)
    with pytest.raises(ValueError, match="4-D"):
        aug(x[0], k)
    with pytest.raises(ValueError, match="keys must have shape"):
        diffaugment(x, "color", k[:3])
    with pytest.raises(ValueError, match="keys must have shape"):
        aug(x, k[:3])
    with pytest.raises(ValueError, match="keys is required"):
        diffaugment(x, "color")
    with pytest.raises(TypeError, match="int64"):
        diffaugment(x, "color", k.float())
    with pytest.raises(ValueError, match="valid names"):
        diffaugment(x, "color,flip", k)
    with pytest.raises(ValueError, match="valid presets"):
        AdaptiveAugment("bgcfnc")
    with pytest.raises(TypeError, match="unknown keyword"):
        AdaptiveAugment(xflips=1)
    with pytest.raises(ValueError, match="C=1 or C=3"):
        aug(torch.zeros(4, 2, 8, 8), k)
    with pytest.raises(ValueError, match="pending"):
        AdaController(4).update(torch.zeros(3))
    with pytest.raises(ValueError, match="batch_size"):
        AdaController(0)

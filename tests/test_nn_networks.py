"""StyleGAN2-style networks: resampling against independent formulations, split-invariance, checkpoints."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastgan.nn import Discriminator, Generator, build_network, load_network, load_snapshot, save_snapshot
from fastgan.nn.layers import (Conv2dLayer, MinibatchStdLayer, SynthesisLayer, setup_filter, upfirdn2d,
                               upsample2d)
from fastgan.train import rng

SMALL = dict(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16, mapping_layers=2)


def test_upsampling_layer_equals_blur_first_then_conv():
    """The transposed-conv up layer is the modulated conv of the FIR-upsampled input (float64, exact)."""
    torch.manual_seed(0)
    layer = SynthesisLayer(5, 6, 8, 16, up=2, use_noise=False).double()
    x = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    w = torch.randn(2, 8, dtype=torch.float64)
    s = layer.affine(w)
    up = upfirdn2d(x * s[:, :, None, None], setup_filter().double(), up=2, padding=(3, 2, 3, 2), gain=4)
    y = F.conv2d(up, layer.weight.flip([2, 3]))
    d = (s.square() @ layer.weight.square().sum([2, 3]).t() + 1e-8).rsqrt()
    want = F.leaky_relu(y * d[:, :, None, None] + layer.bias[None, :, None, None], 0.2) * math.sqrt(2)
    torch.testing.assert_close(layer(x, w), want, rtol=0, atol=1e-12)


def test_stride1_layer_matches_grouped_reference():
    torch.manual_seed(1)
    layer = SynthesisLayer(4, 3, 8, 8, use_noise=False, impl="ref").double()
    x, w = torch.randn(3, 4, 8, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    s = layer.affine(w)
    wn = layer.weight[None] * s[:, None, :, None, None]
    wn = wn * (wn.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    y = torch.cat([F.conv2d(x[i: i + 1], wn[i], padding=1) for i in range(3)])
    want = F.leaky_relu(y + layer.bias[None, :, None, None], 0.2) * math.sqrt(2)
    torch.testing.assert_close(layer(x, w), want, rtol=0, atol=1e-12)


def test_fir_resampling_keeps_constants_and_halves_or_doubles():
    f = setup_filter()
    x = torch.full((1, 2, 8, 8), 3.0)
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
    down = Conv2dLayer(2, 2, 1, bias=False, down=2)
    with torch.no_grad():
        down.weight.copy_(torch.eye(2)[:, :, None, None] * math.sqrt(2))  # weight_gain 1/sqrt(2) cancels
    y = down(x)
    assert y.shape == (1, 2, 4, 4)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], torch.full((1, 2, 2, 2), 3.0))
    assert Conv2dLayer(2, 4, 3, down=2)(x).shape == (1, 4, 4, 4)


def test_minibatch_std_groups_are_consecutive_and_split_invariant():
    torch.manual_seed(2)
    x = torch.randn(8, 6, 4, 4)
    layer = MinibatchStdLayer(4)
    full = layer(x)
    torch.testing.assert_close(torch.cat([layer(x[:4]), layer(x[4:])]), full)
    group0 = (x[:4] - x[:4].mean(0)).square().mean(0).add(1e-8).sqrt().mean()  # samples 0-3 by hand
    torch.testing.assert_close(full[:4, 6], group0.expand(4, 4, 4))
    strided = MinibatchStdLayer(4, grouping="strided")(x)  # StyleGAN2: samples 0, 2, 4, 6 form a group
    g = x[0::2]
    torch.testing.assert_close(strided[0::2, 6], (g - g.mean(0)).square().mean(0).add(1e-8).sqrt().mean()
                               .expand(4, 4, 4))
    with pytest.raises(ValueError, match="group size 4 must divide"):
        layer(x[:6])
    with pytest.raises(ValueError, match="grouping"):
        MinibatchStdLayer(4, grouping="random")


def test_generator_shapes_truncation_and_config_round_trip():
    torch.manual_seed(3)
    G = Generator(**SMALL).eval()
    assert G.num_ws == 1 + 2 + 2 + 1  # b4: conv1; b8, b16: conv0+conv1; the last toRGB
    z = torch.randn(4, 16)
    img = G(z, noise_mode="const")
    assert img.shape == (4, 3, 16, 16) and torch.isfinite(img).all()
    same = G(torch.randn(4, 16), truncation_psi=0.0, noise_mode="const")
    torch.testing.assert_close(same, same[:1].expand_as(same))  # psi = 0: every z gives the average image
    G2 = build_network("G", G.config).eval()
    G2.load_state_dict(G.state_dict())
    assert torch.equal(G2(z, noise_mode="const"), img)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 16\)"):
        G(torch.randn(2, 15))
    with pytest.raises(ValueError, match="power of two"):
        Generator(img_resolution=24)
    with pytest.raises(ValueError, match="does not match"):
        build_network("G", {"bogus": 1})


def test_noise_keys_make_samples_independent_of_batch():
    torch.manual_seed(4)
    G = Generator(**SMALL)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    z = torch.randn(6, 16)
    keys = rng.sample_keys(rng.derive(1, 2), range(6))
    full = G(z, noise_keys=keys)
    part = G(z[2:5], noise_keys=keys[2:5])
    torch.testing.assert_close(part, full[2:5], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(G(z, noise_keys=keys), G(z, noise_keys=keys + 1))


def test_conditional_networks_need_labels_and_produce_gradients():
    torch.manual_seed(5)
    G = Generator(c_dim=3, **SMALL)
    D = Discriminator(c_dim=3, img_resolution=16, channel_base=128, channel_max=16)
    c = torch.eye(3)[[0, 1, 2, 0]]
    img = G(torch.randn(4, 16), c)
    logits = D(img, c)
    assert logits.shape == (4, 1)
    logits.sum().backward()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with pytest.raises(ValueError, match="conditional"):
        G(torch.randn(4, 16))
    with pytest.raises(ValueError, match="conditional"):
        D(img.detach())
    with pytest.raises(ValueError, match=r"img must have shape \(N, 3, 16, 16\)"):
        D(torch.randn(4, 3, 8, 8), c)


def test_r1_and_path_length_double_backward():
    from fastgan.train import loss as L

    torch.manual_seed(6)
    G, D = Generator(**SMALL), Discriminator(img_resolution=16, channel_base=128, channel_max=16)
    real = torch.randn(4, 3, 16, 16, requires_grad=True)
    pen = L.r1_penalty(real, D(real))
    pen.sum().backward()
    assert D.b16.conv0.weight.grad is not None and D.b4.fc.weight.grad.abs().sum() > 0
    ws = G.mapping(torch.randn(4, 16), None)
    lengths = L.path_lengths(lambda w: G.synthesis(w, noise_mode="const"), ws, torch.randn(4, 3, 16, 16))
    assert lengths.shape == (4,) and (lengths > 0).all()
    lengths.sum().backward()
    assert G.synthesis.b16.conv1.weight.grad is not None


def test_snapshot_round_trip_and_errors(tmp_path):
    torch.manual_seed(7)
    G, D = Generator(**SMALL), Discriminator(img_resolution=16, channel_base=128, channel_max=16)
    path = save_snapshot(tmp_path / "snap.pt", {"G": G, "G_ema": G, "D": D}, kimg=1.5,
                         training_set={"resolution": 16})
    blob = load_snapshot(path)
    assert blob["kimg"] == 1.5 and blob["training_set"] == {"resolution": 16}
    D2 = load_network(path, "D")
    img = torch.randn(4, 3, 16, 16)
    assert torch.equal(D2(img), D.eval()(img))
    with pytest.raises(ValueError, match="holds"):
        save_snapshot(tmp_path / "g.pt", {"G_ema": G})
        load_network(tmp_path / "g.pt", "D")
    torch.save({"format": "something"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a fastgan snapshot"):
        load_snapshot(tmp_path / "bad.pt")
    blob["version"] = 99
    torch.save(blob, tmp_path / "v99.pt")
    with pytest.raises(ValueError, match="version 99"):
        load_snapshot(tmp_path / "v99.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_snapshot(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_snapshot(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown network names"):
        save_snapshot(tmp_path / "x.pt", {"generator": G})


@pytest.mark.gpu
def test_fp16_blocks_on_cuda_match_fp32():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    torch.manual_seed(8)
    G = Generator(num_fp16_res=2, conv_clamp=256, **SMALL).cuda().eval()
    z = torch.randn(8, 16, device="cuda")
    a = G(z, noise_mode="const")
    b = G(z, noise_mode="const", force_fp32=True)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=5e-2)

"""Written-out forward mode of fastgan's generator (``forward_tangents``) against ``torch.func.jvp`` of its forward,
the bias_act slope against autograd, and MaGNET's engine taking the written path."""
from __future__ import annotations

import pytest
import torch

from fastgan.nn import Generator
from fastgan.nn.layers import FullyConnectedLayer, SynthesisLayer, ToRGBLayer, act_slope, bias_act
from fastgan.nn.networks import SynthesisNetwork
from fastgan.sampling import jacobian_log_singular_values

SMALL = dict(z_dim=10, w_dim=10, img_resolution=16, channel_base=128, channel_max=12, mapping_layers=2)


def _generator(seed=0, **kw) -> Generator:
    torch.manual_seed(seed)
    G = Generator(**{**SMALL, **kw}).eval().requires_grad_(False)
    with torch.no_grad():  # non-trivial noise, biases and AdaFM parameters (all start at 0 / 1)
        for name, p in G.named_parameters():
            if "noise_strength" in name or "adafm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
        G.mapping.w_avg.normal_()
    return G


def _traced(fn, x, dx):
    """(fn(x), J·dx for each of the V tangents dx (V, ...)) by torch.func.jvp, vmapped."""
    return torch.func.vmap(lambda v: torch.func.jvp(fn, (x,), (v,)), out_dims=(None, 0))(dx)


def _close(got, want):
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, atol=2e-5 * max(scale, 1.0), rtol=0)


@pytest.mark.parametrize("kw", [dict(), dict(conv_clamp=0.5), dict(c_dim=3, adafm_resolutions=[8, 16]),
                                dict(use_noise=False), dict(impl="ref")],
                         ids=["plain", "clamp", "conditional-adafm", "no-noise", "ref-kernels"])
@pytest.mark.parametrize("psi", [1.0, 0.6])
def test_generator_tangents_match_traced_jvp(kw, psi):
    G = _generator(**kw)
    z, dz = torch.randn(3, 10), torch.randn(5, 3, 10)
    c = torch.randn(3, 3) if G.c_dim else None
    for noise_mode in ("const", "none"):
        img, dimg = G.forward_tangents(z, dz, c, truncation_psi=psi, noise_mode=noise_mode)
        want_img, want_dimg = _traced(lambda t: G(t, c, truncation_psi=psi, noise_mode=noise_mode,
                                                  force_fp32=True), z, dz)
        assert torch.equal(img, want_img)  # the same ops as forward: bit for bit
        assert dimg.shape == (5, 3, 3, 16, 16)
        _close(dimg, want_dimg)
    if "conv_clamp" in kw:  # the clamp saturates somewhere, so its zero slope is exercised
        outs = []
        hooks = [m.register_forward_hook(lambda mod, a, out: outs.append(out)) for m in G.modules()
                 if isinstance(m, SynthesisLayer)]
        G(z, c, noise_mode="const", force_fp32=True)
        for h in hooks:
            h.remove()
        assert any((o.abs() == 0.5).any() for o in outs) and any((o.abs() < 0.5).any() for o in outs)


def test_truncation_cutoff_and_per_layer_tangents_of_ws():
    G = _generator(seed=1)
    z, dz = torch.randn(2, 10), torch.randn(4, 2, 10)
    img, dimg = G.forward_tangents(z, dz, truncation_psi=0.5, truncation_cutoff=2)
    want = _traced(lambda t: G(t, truncation_psi=0.5, truncation_cutoff=2, noise_mode="const", force_fp32=True),
                   z, dz)
    assert torch.equal(img, want[0])
    _close(dimg, want[1])
    # the synthesis network with an independent tangent for every layer's w
    ws, dws = torch.randn(2, G.num_ws, 10), torch.randn(6, 2, G.num_ws, 10)
    img, dimg = G.synthesis.forward_tangents(ws, dws)
    want = _traced(lambda t: G.synthesis(t, noise_mode="const", force_fp32=True), ws, dws)
    assert torch.equal(img, want[0])
    _close(dimg, want[1])


@pytest.mark.parametrize("up", [1, 2])
def test_layer_tangents_with_and_without_an_input_tangent(up):
    torch.manual_seed(2)
    layer = SynthesisLayer(4, 5, 6, 8, up=up, conv_clamp=1.0).eval().requires_grad_(False)
    with torch.no_grad():
        layer.noise_strength.fill_(0.2)
        layer.bias.normal_()
    h = 8 // up
    x, w = torch.randn(2, 4, h, h), torch.randn(2, 6)
    dx, dw = torch.randn(3, 2, 4, h, h), torch.randn(3, 2, 6)
    y, dy = layer.forward_tangents(x, dx, w, dw)
    want = torch.func.vmap(lambda a, b: torch.func.jvp(lambda xx, ww: layer(xx, ww, noise_mode="const"), (x, w),
                                                       (a, b)), out_dims=(None, 0))(dx, dw)
    assert torch.equal(y, want[0])
    _close(dy, want[1])
    y0, dy0 = layer.forward_tangents(x, None, w, dw)  # None: a zero input tangent
    want0 = torch.func.vmap(lambda b: torch.func.jvp(lambda ww: layer(x, ww, noise_mode="const"), (w,), (b,)),
                            out_dims=(None, 0))(dw)
    _close(dy0, want0[1])
    rgb = ToRGBLayer(5, 3, 6, conv_clamp=0.3).eval().requires_grad_(False)
    dyy = torch.randn(3, *y.shape)
    _, drgb = rgb.forward_tangents(y, dyy, w, dw)
    _close(drgb, torch.func.vmap(lambda a, b: torch.func.jvp(rgb, (y, w), (a, b)), out_dims=(None, 0))(dyy, dw)[1])


def test_act_slope_is_the_autograd_derivative_of_bias_act():
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.25, 1.0, 3.0]]).reshape(1, 6, 1, 1).repeat(2, 1, 2, 2)
    x[1] += torch.randn(6, 2, 2)
    b = torch.tensor([0.0, 0.5, 0.0, -0.25, 0.0, 0.0])
    for act, gain, clamp in [("lrelu", None, None), ("lrelu", 2.0, 1.5), ("linear", None, 0.5),
                             ("linear", 3.0, None), ("lrelu", 1.0, 0.0)]:
        slope = act_slope(x, b, act=act, gain=gain, clamp=clamp)
        xg = x.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(bias_act(xg, b, act=act, gain=gain, clamp=clamp).sum(), xg)
        torch.testing.assert_close(slope, want, rtol=0, atol=0, msg=f"{act} {gain} {clamp}")
    assert act_slope(x, b) is None  # linear, gain 1, no clamp: the identity
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        act_slope(x, b, act="tanh")


def test_forward_tangent_errors_name_the_problem():
    G = _generator()
    z = torch.randn(2, 10)
    with pytest.raises(ValueError, match="dz"):
        G.forward_tangents(z, torch.randn(4, 3, 10))
    ws = torch.randn(2, G.num_ws, 10)
    with pytest.raises(ValueError, match="dws must have shape"):
        G.synthesis.forward_tangents(ws, torch.randn(4, 2, G.num_ws - 1, 10))
    with pytest.raises(ValueError, match="ws must have shape"):
        G.synthesis.forward_tangents(ws[:, :2], torch.randn(4, 2, 2, 10))
    with pytest.raises(ValueError, match="noise_mode 'const' or 'none'"):
        G.synthesis.forward_tangents(ws, torch.randn(4, *ws.shape), noise_mode="random")
    layer = SynthesisLayer(4, 4, 6, 8)
    with pytest.raises(ValueError, match="float32"):
        layer.forward_tangents(torch.randn(1, 4, 8, 8, dtype=torch.float64), None, torch.randn(1, 6),
                               torch.randn(2, 1, 6))
    with pytest.raises(ValueError, match="dx must have shape"):
        layer.forward_tangents(torch.randn(1, 4, 8, 8), torch.randn(3, 1, 4, 8, 8), torch.randn(1, 6),
                               torch.randn(2, 1, 6))
    with pytest.raises(ValueError, match="needs a linear layer"):
        FullyConnectedLayer(4, 4, activation="lrelu").tangent(torch.randn(2, 4))


def test_magnet_engine_takes_the_written_forward_mode(monkeypatch):
    """Forward mode on a fastgan Generator runs SynthesisNetwork.forward_tangents (no torch.func trace of the
    synthesis) and gives reverse mode's values, for wrt='z' and wrt='w'."""
    G = _generator(seed=3)
    z = torch.randn(3, 10)
    calls = []
    original = SynthesisNetwork.forward_tangents

    def spy(self, ws, dws, noise_mode="const"):
        calls.append(dws.shape[0])
        return original(self, ws, dws, noise_mode)

    monkeypatch.setattr(SynthesisNetwork, "forward_tangents", spy)
    for wrt in ("z", "w"):
        calls.clear()
        fwd = jacobian_log_singular_values(G, z, proj_dim=24, top_k=8, wrt=wrt, truncation_psi=0.8,
                                           direction="forward", chunk=4)
        assert calls == [4, 4, 2]  # d = 10 tangents in chunks of 4
        rev = jacobian_log_singular_values(G, z, proj_dim=24, top_k=8, wrt=wrt, truncation_psi=0.8,
                                           direction="reverse")
        torch.testing.assert_close(fwd, rev, atol=5e-4, rtol=0, msg=wrt)
        for proj, forward in ((24, True), (10, True), (9, False)):  # auto: forward while d = 10 <= proj_dim
            calls.clear()
            jacobian_log_singular_values(G, z, proj_dim=proj, top_k=8, wrt=wrt)
            assert bool(calls) == forward, (wrt, proj)


@pytest.mark.gpu
def test_generator_tangents_on_cuda_match_traced_jvp():
    """On CUDA: the fused kernels' primal and cuDNN's tangent convolutions, fp16 blocks forced to float32."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    G = _generator(seed=4, num_fp16_res=2, conv_clamp=256).cuda()
    z, dz = torch.randn(4, 10, device="cuda"), torch.randn(6, 4, 10, device="cuda")
    img, dimg = G.forward_tangents(z, dz, truncation_psi=0.7)
    want = _traced(lambda t: G(t, truncation_psi=0.7, noise_mode="const", force_fp32=True), z, dz)
    torch.testing.assert_close(img, want[0], rtol=0, atol=1e-5)
    _close(dimg, want[1])

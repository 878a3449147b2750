"""fastgan.nn.ModulatedConv2d and AdaFMConv2d: wrapping, identity init, folding, frozen weights."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastgan import nn as fnn
from fastgan.ops.modconv import _modulated_conv2d_ref


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_module_matches_reference(demodulate):
    m = fnn.ModulatedConv2d(4, 6, 3, demodulate=demodulate)
    x, s = torch.randn(3, 4, 7, 5), torch.randn(3, 4)
    ref = _modulated_conv2d_ref(x.double(), m.weight.double(), s.double() / math.sqrt(4 * 9), demodulate)
    torch.testing.assert_close(m(x, s).double(), ref, rtol=1e-5, atol=1e-5)
    assert "demodulate" in repr(m)


def test_modulated_conv2d_demodulated_output_has_unit_scale():
    m = fnn.ModulatedConv2d(64, 64, 3)
    y = m(torch.randn(16, 64, 16, 16), torch.randn(16, 64))
    assert 0.8 < y[:, :, 1:-1, 1:-1].std().item() < 1.2


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
    nn.Conv2d(4, 6, 1), nn.Conv2d(4, 6, 3, padding="same"), nn.Conv2d(4, 6, (3, 1), padding=(1, 0)),
])
def test_adafm_from_conv_is_identity_and_fold_roundtrips(conv):
    x = torch.randn(2, 4, 9, 7)
    m = fnn.AdaFMConv2d.from_conv(conv)
    torch.testing.assert_close(m(x), conv(x), rtol=1e-5, atol=1e-5)
    assert not m.weight.requires_grad and m.gamma.requires_grad and m.beta.requires_grad
    with torch.no_grad():
        m.gamma.add_(0.3 * torch.randn_like(m.gamma))
        m.beta.add_(0.1 * torch.randn_like(m.beta))
    folded = m.fold()
    assert isinstance(folded, nn.Conv2d)
    torch.testing.assert_close(folded(x), m(x), rtol=1e-5, atol=1e-5)


def test_adafm_trains_only_gamma_beta_when_weight_frozen():
    m = fnn.AdaFMConv2d.from_conv(nn.Conv2d(4, 6, 3, padding=1))
    m(torch.randn(2, 4, 5, 5)).square().mean().backward()
    assert m.weight.grad is None and m.bias.grad is None
    assert m.gamma.grad is not None and m.beta.grad is not None
    m2 = fnn.AdaFMConv2d.from_conv(nn.Conv2d(4, 6, 3, padding=1), freeze_weight=False, freeze_bias=False)
    m2(torch.randn(2, 4, 5, 5)).square().mean().backward()
    assert m2.weight.grad is not None and m2.bias.grad is not None


def test_adafm_from_conv_rejects_unsupported_convs():
    with pytest.raises(ValueError, match="groups=1"):
        fnn.AdaFMConv2d.from_conv(nn.Conv2d(4, 6, 3, groups=2))
    with pytest.raises(ValueError, match="zero padding"):
        fnn.AdaFMConv2d.from_conv(nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(TypeError, match="nn.Conv2d"):
        fnn.AdaFMConv2d.from_conv(nn.Linear(3, 3))

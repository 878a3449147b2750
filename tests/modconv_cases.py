"""Shared input builders and reference runners for the modulated-conv / AdaFM tests."""
from __future__ import annotations

import torch

from fastgan.ops.modconv import _adafm_conv2d_ref, _modulated_conv2d_ref


def randn(shape, dtype, device, noncontig=False, scale=1.0):
    if noncontig:  # every other element of the last dimension: strided, not contiguous
        t = (torch.randn(*shape[:-1], 2 * shape[-1], dtype=torch.float64) * scale).to(device=device, dtype=dtype)
        t = t[..., ::2]
    else:
        t = (torch.randn(*shape, dtype=torch.float64) * scale).to(device=device, dtype=dtype)
    if noncontig:
        assert not t.is_contiguous()
    return t


def grads_of(fn, inputs, grad_out):
    """Output and the gradients of every input that requires grad (None for the others)."""
    out = fn(*inputs)
    wanted = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    got = iter(torch.autograd.grad(out, wanted, grad_out))
    grads = [next(got) if isinstance(t, torch.Tensor) and t.requires_grad else None for t in inputs]
    return out.detach(), grads


def as_leaf(t, dtype, requires_grad=True):
    if t is None:
        return None
    return t.detach().to(dtype).requires_grad_(requires_grad)


def modconv_inputs(n, cin, cout, k, h, w, dtype, device, noncontig=False):
    x = randn((n, cin, h, w), dtype, device, noncontig)
    weight = randn((cout, cin, k, k), dtype, device)
    styles = randn((n, cin), dtype, device, noncontig, scale=1.5)
    return x, weight, styles


def modconv_reference(x, weight, styles, demodulate, padding, grad_out):
    """(out64, grads64, out_lowp, grads_lowp): the reference in float64 and in the inputs' dtype."""
    res = []
    for dt in (torch.float64, x.dtype):
        ins = [as_leaf(t, dt) for t in (x, weight, styles)]
        res.append(grads_of(lambda a, b, c: _modulated_conv2d_ref(a, b, c, demodulate, padding), ins,
                            grad_out.to(dt)))
    return res[0][0], res[0][1], res[1][0], res[1][1]


def adafm_inputs(n, cin, cout, k, h, w, dtype, device, bias, noncontig=False):
    x = randn((n, cin, h, w), dtype, device, noncontig)
    weight = randn((cout, cin, k, k), dtype, device)
    gamma = (1 + 0.3 * randn((cout, cin), torch.float64, "cpu")).to(device=device, dtype=dtype)
    beta = 0.1 * randn((cout, cin), dtype, device)
    b = randn((cout,), dtype, device) if bias else None
    return x, weight, gamma, beta, b


def adafm_reference(inputs, needs, stride, padding, grad_out):
    res = []
    for dt in (torch.float64, inputs[0].dtype):
        ins = [as_leaf(t, dt, r) for t, r in zip(inputs, needs)]
        res.append(grads_of(lambda a, b, c, d, e: _adafm_conv2d_ref(a, b, c, d, e, stride, padding), ins,
                            grad_out.to(dt)))
    return res[0][0], res[0][1], res[1][0], res[1][1]

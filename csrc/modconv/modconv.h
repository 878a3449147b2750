// Fused modulated conv and AdaFM conv: the device-independent host code.
//
// Modulated conv (semantics in fastgan/ops/modconv.py, `_modulated_conv2d_ref`):
//   w_n = weight * styles[n] (over Cin); if demodulate, w_n /= sqrt(sum_{Cin,kh,kw} w_n^2 + eps);
//   out[n] = conv2d(x[n], w_n).
// Fused form used here -- no per-sample weight is ever built:
//   sigma[n] = power of two >= max_i |styles[n,i]|   (exact rescaling that keeps fp16 activations in range)
//   pre[n,i]  = styles[n,i] / sigma[n]
//   q[o,i]    = sum_taps weight[o,i,:,:]^2
//   d[n,o]    = rsqrt(sum_i styles[n,i]^2 q[o,i] + eps)       (demodulation from one (N,Cout) pass)
//   coef[n,o] = sigma[n] * d[n,o]  (or sigma[n] without demodulation)
//   out       = coef[n,o] * conv2d(x * pre[n,i], weight)       (one shared-weight convolution)
// Backward (g[n,o] = sum_hw grad_out*out, A = g*d^2):
//   gy = grad_out*coef;  gxs = conv_input_grad(gy, weight);  grad_x = gxs*pre
//   grad_styles = sum_hw(gxs*x)/sigma - styles*(A @ q)
//   grad_weight = conv_weight_grad(x*pre, gy) - weight * (A^T @ styles^2)
//
// AdaFM conv: W' = gamma*weight + beta (gamma, beta per (Cout,Cin), broadcast over taps); out = conv2d(x, W', bias).
// Backward: dW' from the convolution's weight gradient only when gamma, beta or weight need a gradient;
//   grad_gamma = sum_taps dW'*weight, grad_beta = sum_taps dW', grad_weight = dW'*gamma.
//
// Each backend provides the primitives of `Backend` (CPU: OpenMP in modconv.cpp, CUDA: kernels in modconv_cuda.cu);
// the convolutions themselves go through at::convolution / at::convolution_backward (oneDNN on CPU, cuDNN on CUDA).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/util/OptionalArrayRef.h>
#include <c10/util/ArrayRef.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

#include "common/checks.h"

namespace fastgan::modconv {

// The op-math dtype of the small per-call tensors: float32, or float64 for float64 inputs.
inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Small per-call tensors, all in acc_dtype; filled by the backend's prep().
struct Prep {
  at::Tensor sigma;  // (N,)
  at::Tensor pre;    // (N, Cin)
  at::Tensor coef;   // (N, Cout)
  at::Tensor q;      // (Cout, Cin), defined only when demodulating
  at::Tensor d;      // (N, Cout), defined only when demodulating

  static Prep allocate(const at::Tensor& weight, const at::Tensor& styles, bool demodulate) {
    const int64_t n = styles.size(0), cin = styles.size(1), cout = weight.size(0);
    const auto opts = styles.options().dtype(acc_dtype(styles.scalar_type()));
    Prep p;
    p.sigma = at::empty({n}, opts);
    p.pre = at::empty({n, cin}, opts);
    p.coef = at::empty({n, cout}, opts);
    if (demodulate) {
      p.q = at::empty({cout, cin}, opts);
      p.d = at::empty({n, cout}, opts);
    }
    return p;
  }
};

// Backend primitives (see CpuBackend in modconv.cpp / CudaBackend in modconv_cuda.cu): each accepts any layout and
// makes its inputs contiguous (free for the NCHW-contiguous tensors passed here) and returns NCHW-contiguous
// results.

// ---- argument checks shared by CPU and CUDA entry points -------------------------------------------
inline void check_modconv_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& styles,
                               c10::IntArrayRef padding, c10::DeviceType dev) {
  FASTGAN_CHECK_DIM(x, 4);
  FASTGAN_CHECK_DIM(weight, 4);
  FASTGAN_CHECK_DIM(styles, 2);
  FASTGAN_CHECK_DEVICE_TYPE(x, dev);
  FASTGAN_CHECK_SAME_DEVICE(x, weight);
  FASTGAN_CHECK_SAME_DEVICE(x, styles);
  FASTGAN_CHECK_FLOATING(x);
  FASTGAN_CHECK_SAME_DTYPE(x, weight);
  FASTGAN_CHECK_SAME_DTYPE(x, styles);
  TORCH_CHECK(weight.size(1) == x.size(1), "weight has ", weight.size(1), " input channels but x has ",
              x.size(1));
  TORCH_CHECK(styles.size(0) == x.size(0) && styles.size(1) == x.size(1), "styles must have shape (N, Cin) = (",
              x.size(0), ", ", x.size(1), "), got ", styles.sizes());
  TORCH_CHECK(padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0,
              "padding must be two non-negative integers, got ", padding);
  const int64_t ho = x.size(2) + 2 * padding[0] - weight.size(2) + 1;
  const int64_t wo = x.size(3) + 2 * padding[1] - weight.size(3) + 1;
  TORCH_CHECK(ho > 0 && wo > 0, "modulated_conv2d: output would be empty (input ", x.sizes(), ", kernel ",
              weight.sizes(), ", padding ", padding, ")");
  check_index_range(x, "x");
}

inline void check_adafm_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& gamma,
                             const at::Tensor& beta, const c10::optional<at::Tensor>& bias,
                             c10::IntArrayRef stride, c10::IntArrayRef padding, c10::DeviceType dev) {
  FASTGAN_CHECK_DIM(x, 4);
  FASTGAN_CHECK_DIM(weight, 4);
  FASTGAN_CHECK_DIM(gamma, 2);
  FASTGAN_CHECK_DIM(beta, 2);
  FASTGAN_CHECK_DEVICE_TYPE(x, dev);
  FASTGAN_CHECK_SAME_DEVICE(x, weight);
  FASTGAN_CHECK_SAME_DEVICE(x, gamma);
  FASTGAN_CHECK_SAME_DEVICE(x, beta);
  FASTGAN_CHECK_FLOATING(x);
  FASTGAN_CHECK_SAME_DTYPE(x, weight);
  FASTGAN_CHECK_SAME_DTYPE(x, gamma);
  FASTGAN_CHECK_SAME_DTYPE(x, beta);
  TORCH_CHECK(weight.size(1) == x.size(1), "weight has ", weight.size(1), " input channels but x has ",
              x.size(1));
  TORCH_CHECK(gamma.size(0) == weight.size(0) && gamma.size(1) == weight.size(1),
              "gamma must have shape (Cout, Cin) = (", weight.size(0), ", ", weight.size(1), "), got ",
              gamma.sizes());
  TORCH_CHECK(beta.sizes() == gamma.sizes(), "beta must have the shape of gamma ", gamma.sizes(), ", got ",
              beta.sizes());
  if (bias.has_value() && bias->defined()) {
    FASTGAN_CHECK_DIM((*bias), 1);
    FASTGAN_CHECK_SAME_DEVICE(x, (*bias));
    FASTGAN_CHECK_SAME_DTYPE(x, (*bias));
    TORCH_CHECK(bias->size(0) == weight.size(0), "bias must have Cout = ", weight.size(0), " elements, got ",
                bias->size(0));
  }
  TORCH_CHECK(stride.size() == 2 && stride[0] >= 1 && stride[1] >= 1, "stride must be two positive integers, got ",
              stride);
  TORCH_CHECK(padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0,
              "padding must be two non-negative integers, got ", padding);
  const int64_t ho = (x.size(2) + 2 * padding[0] - weight.size(2)) / stride[0] + 1;
  const int64_t wo = (x.size(3) + 2 * padding[1] - weight.size(3)) / stride[1] + 1;
  TORCH_CHECK(x.size(2) + 2 * padding[0] >= weight.size(2) && x.size(3) + 2 * padding[1] >= weight.size(3) &&
                  ho > 0 && wo > 0,
              "adafm_conv2d: output would be empty (input ", x.sizes(), ", kernel ", weight.sizes(), ")");
  check_index_range(x, "x");
}

inline at::Tensor empty_grad(const at::Tensor& like) { return at::empty({0}, like.options()); }

inline at::Tensor conv(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias,
                       c10::IntArrayRef stride, c10::IntArrayRef padding) {
  const std::array<int64_t, 2> dil{1, 1}, outpad{0, 0};
  return at::convolution(x, w, bias, stride, padding, dil, /*transposed=*/false, outpad, /*groups=*/1);
}

// ---- modulated conv ---------------------------------------------------------------------------------
template <class B>
at::Tensor modconv_forward(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& styles_in,
                           bool demodulate, c10::IntArrayRef padding, double eps) {
  check_modconv_args(x_in, weight_in, styles_in, padding, B::kDevice);
  typename B::Guard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), styles = styles_in.contiguous();
  const Prep p = B::prep(weight, styles, demodulate, eps);
  const at::Tensor xs = B::modulate(x, p.pre);
  const std::array<int64_t, 2> one{1, 1};
  const at::Tensor y = conv(xs, weight, c10::nullopt, one, padding);
  return B::modulate(y, p.coef);
}

template <class B>
std::tuple<at::Tensor, at::Tensor, at::Tensor> modconv_backward(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& weight_in,
    const at::Tensor& styles_in, const at::Tensor& out_in, bool demodulate, c10::IntArrayRef padding, double eps,
    std::array<bool, 3> mask) {
  check_modconv_args(x_in, weight_in, styles_in, padding, B::kDevice);
  FASTGAN_CHECK_SAME_DEVICE(x_in, grad_out_in);
  FASTGAN_CHECK_SAME_DTYPE(x_in, grad_out_in);
  TORCH_CHECK(grad_out_in.dim() == 4 && grad_out_in.size(0) == x_in.size(0) &&
                  grad_out_in.size(1) == weight_in.size(0),
              "grad_out must have shape (N, Cout, Ho, Wo), got ", grad_out_in.sizes());
  if (demodulate) TORCH_CHECK(out_in.sizes() == grad_out_in.sizes(), "out must have the shape of grad_out");
  typename B::Guard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), styles = styles_in.contiguous();
  const at::Tensor grad_out = grad_out_in.contiguous();
  const bool need_x = mask[0], need_w = mask[1], need_s = mask[2];
  at::Tensor gx = empty_grad(x), gw = empty_grad(x), gs = empty_grad(x);
  if (!need_x && !need_w && !need_s) return {gx, gw, gs};

  const Prep p = B::prep(weight, styles, demodulate, eps);
  const at::Tensor gy = B::modulate(grad_out, p.coef);
  const at::Tensor xs = need_w ? B::modulate(x, p.pre) : x;
  const std::array<int64_t, 2> one{1, 1}, dil{1, 1}, outpad{0, 0};
  const std::array<bool, 3> cmask{need_x || need_s, need_w, false};
  auto [gxs, gwc, unused] = at::convolution_backward(gy, xs, weight, c10::nullopt, one, padding, dil, false, outpad,
                                                     1, cmask);
  (void)unused;
  if (need_x) gx = B::modulate(gxs, p.pre);
  at::Tensor a;  // (N, Cout) fp32: g * d^2
  if (demodulate && (need_s || need_w)) {
    const at::Tensor out = out_in.contiguous();
    a = B::channel_dot(grad_out, out) * p.d * p.d;
  }
  const at::ScalarType acc = p.pre.scalar_type();
  const at::Tensor s32 = styles.to(acc);
  if (need_s) {
    at::Tensor gs32 = B::channel_dot(gxs, x) / p.sigma.unsqueeze(1);
    if (demodulate) gs32 = gs32 - s32 * at::mm(a, p.q);
    gs = gs32.to(styles.scalar_type());
  }
  if (need_w) {
    if (demodulate) {
      const at::Tensor corr = at::mm(a.t(), s32 * s32);  // (Cout, Cin)
      gw = (gwc.to(acc) - weight.to(acc) * corr.unsqueeze(2).unsqueeze(3)).to(weight.scalar_type());
    } else {
      gw = gwc;
    }
  }
  return {gx, gw, gs};
}

// ---- AdaFM conv -----------------------------------------------------------------------------------
template <class B>
at::Tensor adafm_forward(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& gamma_in,
                         const at::Tensor& beta_in, const c10::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                         c10::IntArrayRef padding) {
  check_adafm_args(x_in, weight_in, gamma_in, beta_in, bias, stride, padding, B::kDevice);
  typename B::Guard guard(x_in.device());
  const at::Tensor w = B::adafm_weight(weight_in.contiguous(), gamma_in.contiguous(), beta_in.contiguous());
  return conv(x_in.contiguous(), w, bias, stride, padding);
}

template <class B>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> adafm_backward(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& gamma_in,
    const at::Tensor& beta_in, c10::IntArrayRef stride, c10::IntArrayRef padding, std::array<bool, 5> mask) {
  check_adafm_args(x_in, weight_in, gamma_in, beta_in, c10::nullopt, stride, padding, B::kDevice);
  FASTGAN_CHECK_SAME_DEVICE(x_in, grad_out_in);
  FASTGAN_CHECK_SAME_DTYPE(x_in, grad_out_in);
  TORCH_CHECK(grad_out_in.dim() == 4 && grad_out_in.size(0) == x_in.size(0) &&
                  grad_out_in.size(1) == weight_in.size(0),
              "grad_out must have shape (N, Cout, Ho, Wo), got ", grad_out_in.sizes());
  typename B::Guard guard(x_in.device());
  const bool need_x = mask[0], need_w = mask[1], need_g = mask[2], need_b = mask[3], need_bias = mask[4];
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), gamma = gamma_in.contiguous(),
                   beta = beta_in.contiguous(), grad_out = grad_out_in.contiguous();
  at::Tensor gx = empty_grad(x), gw = empty_grad(x), gg = empty_grad(x), gb = empty_grad(x), gbias = empty_grad(x);
  const bool need_wp = need_w || need_g || need_b;  // the modulated weight's gradient dW'
  if (need_x || need_wp || need_bias) {
    const at::Tensor wp = B::adafm_weight(weight, gamma, beta);
    const std::array<int64_t, 2> dil{1, 1}, outpad{0, 0};
    const std::array<int64_t, 1> bias_sizes{weight.size(0)};
    const at::OptionalIntArrayRef bias_opt =
        need_bias ? at::OptionalIntArrayRef(c10::IntArrayRef(bias_sizes)) : at::OptionalIntArrayRef(c10::nullopt);
    auto [cgx, cgwp, cgbias] = at::convolution_backward(grad_out, x, wp, bias_opt, stride, padding, dil, false,
                                                        outpad, 1, {need_x, need_wp, need_bias});
    if (need_x) gx = cgx;
    if (need_bias) gbias = cgbias;
    if (need_wp) std::tie(gw, gg, gb) = B::adafm_reduce(cgwp, weight, gamma, need_w, need_g, need_b);
  }
  return {gx, gw, gg, gb, gbias};
}

// ---- registration: the same four kernels for every backend ------------------------------------------
template <class B>
void register_backend(torch::Library& m) {
  m.impl("modulated_conv2d", &modconv_forward<B>);
  m.impl("modulated_conv2d_backward", &modconv_backward<B>);
  m.impl("adafm_conv2d", &adafm_forward<B>);
  m.impl("adafm_conv2d_backward", &adafm_backward<B>);
}

}  // namespace fastgan::modconv

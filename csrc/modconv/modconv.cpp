// CPU backend of the modulated-conv / AdaFM-conv family: OpenMP primitives (at::parallel_for) around one
// shared-weight oneDNN convolution, and the CPU kernel registrations.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>

#include "common/registry.h"
#include "modconv/modconv.h"

namespace fastgan::modconv {
namespace {

// Smallest power of two >= m (1 for m == 0 or non-finite m): an exact rescaling factor.
template <typename acc_t>
acc_t pow2_ceil(acc_t m) {
  if (!(m > 0) || !std::isfinite(m)) return acc_t(1);
  int e = 0;
  const acc_t f = std::frexp(m, &e);  // m = f * 2^e, f in [0.5, 1)
  return std::ldexp(acc_t(1), f == acc_t(0.5) ? e - 1 : e);
}

struct CpuBackend {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CPU;
  struct Guard {
    explicit Guard(c10::Device) {}
  };

  static Prep prep(const at::Tensor& weight, const at::Tensor& styles, bool demodulate, double eps) {
    const int64_t n = styles.size(0), cin = styles.size(1), cout = weight.size(0);
    const int64_t taps = weight.size(2) * weight.size(3);
    Prep p = Prep::allocate(weight, styles, demodulate);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, styles.scalar_type(), "modconv_prep_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* s = styles.const_data_ptr<scalar_t>();
      const scalar_t* w = weight.const_data_ptr<scalar_t>();
      acc_t* sigma = p.sigma.mutable_data_ptr<acc_t>();
      acc_t* pre = p.pre.mutable_data_ptr<acc_t>();
      at::parallel_for(0, n, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          acc_t m = 0;
          for (int64_t i = 0; i < cin; ++i) m = std::max(m, std::abs(static_cast<acc_t>(s[b * cin + i])));
          sigma[b] = pow2_ceil(m);
          for (int64_t i = 0; i < cin; ++i) pre[b * cin + i] = static_cast<acc_t>(s[b * cin + i]) / sigma[b];
        }
      });
      acc_t* coef = p.coef.mutable_data_ptr<acc_t>();
      if (!demodulate) {
        for (int64_t b = 0; b < n; ++b)
          for (int64_t o = 0; o < cout; ++o) coef[b * cout + o] = sigma[b];
        return;
      }
      acc_t* q = p.q.mutable_data_ptr<acc_t>();
      at::parallel_for(0, cout * cin, 256, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
          acc_t acc = 0;
          const scalar_t* wk = w + k * taps;
          for (int64_t t = 0; t < taps; ++t) acc += static_cast<acc_t>(wk[t]) * static_cast<acc_t>(wk[t]);
          q[k] = acc;
        }
      });
      acc_t* d = p.d.mutable_data_ptr<acc_t>();
      at::parallel_for(0, n * cout, 16, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
          const int64_t b = k / cout, o = k % cout;
          acc_t acc = 0;
          for (int64_t i = 0; i < cin; ++i) {
            const acc_t si = static_cast<acc_t>(s[b * cin + i]);
            acc += si * si * q[o * cin + i];
          }
          d[k] = acc_t(1) / std::sqrt(acc + static_cast<acc_t>(eps));
          coef[k] = sigma[b] * d[k];
        }
      });
    });
    return p;
  }

  // out[n, c, :, :] = x[n, c, :, :] * scale[n, c]; x contiguous NCHW, scale (N, C) in the op-math dtype.
  static at::Tensor modulate(const at::Tensor& x_in, const at::Tensor& scale) {
    const at::Tensor x = x_in.contiguous();  // free for the (contiguous) tensors the host code passes
    at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
    const int64_t nc = x.size(0) * x.size(1), hw = x.size(2) * x.size(3);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "modconv_modulate_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* src = x.const_data_ptr<scalar_t>();
      const acc_t* sc = scale.const_data_ptr<acc_t>();
      scalar_t* dst = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, nc, std::max<int64_t>(1, 32768 / std::max<int64_t>(hw, 1)), [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
          const acc_t f = sc[k];
          const scalar_t* a = src + k * hw;
          scalar_t* o = dst + k * hw;
          for (int64_t t = 0; t < hw; ++t) o[t] = static_cast<scalar_t>(static_cast<acc_t>(a[t]) * f);
        }
      });
    });
    return out;
  }

  // (N, C) op-math sum over H, W of a * b; both contiguous NCHW of one shape.
  static at::Tensor channel_dot(const at::Tensor& a_in, const at::Tensor& b_in) {
    const at::Tensor a = a_in.contiguous(), b = b_in.contiguous();
    const int64_t n = a.size(0), c = a.size(1), hw = a.size(2) * a.size(3);
    at::Tensor out = at::empty({n, c}, a.options().dtype(acc_dtype(a.scalar_type())));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "modconv_channel_dot_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* pa = a.const_data_ptr<scalar_t>();
      const scalar_t* pb = b.const_data_ptr<scalar_t>();
      acc_t* po = out.mutable_data_ptr<acc_t>();
      at::parallel_for(0, n * c, std::max<int64_t>(1, 32768 / std::max<int64_t>(hw, 1)), [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
          acc_t acc = 0;
          const scalar_t* x = pa + k * hw;
          const scalar_t* y = pb + k * hw;
          for (int64_t t = 0; t < hw; ++t) acc += static_cast<acc_t>(x[t]) * static_cast<acc_t>(y[t]);
          po[k] = acc;
        }
      });
    });
    return out;
  }

  // W'[o, i, :, :] = gamma[o, i] * W[o, i, :, :] + beta[o, i]
  static at::Tensor adafm_weight(const at::Tensor& w, const at::Tensor& gamma, const at::Tensor& beta) {
    at::Tensor out = at::empty_like(w, at::MemoryFormat::Contiguous);
    const int64_t oi = w.size(0) * w.size(1), taps = w.size(2) * w.size(3);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "adafm_weight_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* pw = w.const_data_ptr<scalar_t>();
      const scalar_t* pg = gamma.const_data_ptr<scalar_t>();
      const scalar_t* pb = beta.const_data_ptr<scalar_t>();
      scalar_t* po = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, oi, 1024, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
          const acc_t g = static_cast<acc_t>(pg[k]), b = static_cast<acc_t>(pb[k]);
          for (int64_t t = 0; t < taps; ++t)
            po[k * taps + t] = static_cast<scalar_t>(g * static_cast<acc_t>(pw[k * taps + t]) + b);
        }
      });
    });
    return out;
  }

  // From dW': grad_weight = dW' * gamma, grad_gamma = sum_taps dW' * W, grad_beta = sum_taps dW'.
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> adafm_reduce(const at::Tensor& gwp_in, const at::Tensor& w,
                                                                     const at::Tensor& gamma, bool need_w,
                                                                     bool need_g, bool need_b) {
    const at::Tensor gwp = gwp_in.contiguous();
    const int64_t oi = w.size(0) * w.size(1), taps = w.size(2) * w.size(3);
    at::Tensor gw = need_w ? at::empty_like(w, at::MemoryFormat::Contiguous) : empty_grad(w);
    at::Tensor gg = need_g ? at::empty_like(gamma, at::MemoryFormat::Contiguous) : empty_grad(w);
    at::Tensor gb = need_b ? at::empty_like(gamma, at::MemoryFormat::Contiguous) : empty_grad(w);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "adafm_reduce_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* pd = gwp.const_data_ptr<scalar_t>();
      const scalar_t* pw = w.const_data_ptr<scalar_t>();
      const scalar_t* pg = gamma.const_data_ptr<scalar_t>();
      scalar_t* ow = need_w ? gw.mutable_data_ptr<scalar_t>() : nullptr;
      scalar_t* og = need_g ? gg.mutable_data_ptr<scalar_t>() : nullptr;
      scalar_t* ob = need_b ? gb.mutable_data_ptr<scalar_t>() : nullptr;
      at::parallel_for(0, oi, 1024, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
          const acc_t g = static_cast<acc_t>(pg[k]);
          acc_t sg = 0, sb = 0;
          for (int64_t t = 0; t < taps; ++t) {
            const acc_t dv = static_cast<acc_t>(pd[k * taps + t]);
            sg += dv * static_cast<acc_t>(pw[k * taps + t]);
            sb += dv;
            if (ow) ow[k * taps + t] = static_cast<scalar_t>(dv * g);
          }
          if (og) og[k] = static_cast<scalar_t>(sg);
          if (ob) ob[k] = static_cast<scalar_t>(sb);
        }
      });
    });
    return {gw, gg, gb};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) { register_backend<CpuBackend>(m); }

FASTGAN_REGISTER_FAMILY("modconv", "cpu");

}  // namespace fastgan::modconv

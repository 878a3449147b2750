// CPU backend of the fused vision-backbone preprocessing: one image per task (at::parallel_for over the batch), with
// per-task scratch buffers at native resolution, and the CPU kernel registrations.
//
// Forward, per image (acc_t = float, or double for float64 images):
//   1. colour pass: y2 = saturation(x + b) into a C x H x W buffer; the contrast mean M of y2 accumulated in float64,
//      then y3 = (y2 - M) k + M in place;
//   2. row pass: for each channel and row i, the line z[j] = 0.5 y5[i, j] + 0.5 with y5 the translated (source
//      (i + ty, j + tx), zero outside) and cut-out (zero) image, summed over each column window -> C x H x OW;
//   3. column pass: sums over each row window, divided by the window size, then (v - mean_c) / std_c.
// Backward, per image: the output gradient / std_c / window size is scattered over each row window (C x H x OW),
// then over each column window and times 0.5, cut out, and moved back by the translation (C x H x W); then the
// contrast adjoint g2 = k g3 + (1 - k) sum(g3) / (C H W) (sum in float64) and the saturation adjoint
// g1_c = s g2_c + (1 - s) sum_c(g2) / C. Brightness passes the gradient through.
// Work is split only over images: a batch smaller than the thread count leaves threads idle.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/registry.h"
#include "vision_preprocess/vision_preprocess.h"

namespace fastgan::vision {
namespace {

struct Geometry {
  int64_t c, h, w, oh, ow;
};

// Per-task scratch: the native-resolution image (C x H x W), the row-pooled planes (C x H x OW), work lines, and
// the column windows [q0[q], q1[q]) with their sizes (computed once: integer divisions are not free).
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> buf, rows, line, acc, wcnt;
  std::vector<int64_t> q0, q1;
  explicit Scratch(const Geometry& g)
      : buf(g.c * g.h * g.w), rows(g.c * g.h * g.ow), line(std::max(g.w, g.h * g.w)), acc(g.ow), wcnt(g.ow),
        q0(g.ow), q1(g.ow) {
    for (int64_t q = 0; q < g.ow; ++q) {
      q0[q] = win_start(q, g.w, g.ow);
      q1[q] = win_end(q, g.w, g.ow);
      wcnt[q] = static_cast<acc_t>(q1[q] - q0[q]);
    }
  }
};

template <typename scalar_t, typename acc_t>
void forward_image(const scalar_t* xn, const Params& prm, int64_t flags, const Geometry& g, const double* mean,
                   const double* std, scalar_t* on, Scratch<acc_t>& sc) {
  const int64_t C = g.c, H = g.h, W = g.w, OH = g.oh, OW = g.ow, HW = H * W;
  const bool bright = flags & kBrightness, sat = flags & kSaturation, con = flags & kContrast;
  const bool trans = flags & kTranslation, cut = flags & kCutout;
  const acc_t b = static_cast<acc_t>(prm.b), s = static_cast<acc_t>(prm.s), k = static_cast<acc_t>(prm.k);
  acc_t* buf = sc.buf.data();
  // 1. colour: brightness, saturation (channel mean per pixel), contrast (image mean, float64 sum)
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* xc = xn + c * HW;
    acc_t* bc = buf + c * HW;
    if (bright) {
      for (int64_t t = 0; t < HW; ++t) bc[t] = static_cast<acc_t>(xc[t]) + b;
    } else {
      for (int64_t t = 0; t < HW; ++t) bc[t] = static_cast<acc_t>(xc[t]);
    }
  }
  if (sat) {
    acc_t* m = sc.line.data();  // H * W channel means
    std::copy(buf, buf + HW, m);
    for (int64_t c = 1; c < C; ++c)
      for (int64_t t = 0; t < HW; ++t) m[t] += buf[c * HW + t];
    const acc_t cc = static_cast<acc_t>(C);
    for (int64_t t = 0; t < HW; ++t) m[t] = m[t] / cc;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < HW; ++t) buf[c * HW + t] = (buf[c * HW + t] - m[t]) * s + m[t];
  }
  if (con) {
    double sum = 0;
    for (int64_t t = 0; t < C * HW; ++t) sum += static_cast<double>(buf[t]);
    const acc_t m = static_cast<acc_t>(sum / static_cast<double>(C * HW));
    for (int64_t t = 0; t < C * HW; ++t) buf[t] = (buf[t] - m) * k + m;
  }
  // 2. translation, cutout, x * 0.5 + 0.5 per row, then sums over each column window
  const int64_t ty = trans ? prm.ty : 0, tx = trans ? prm.tx : 0;
  const int64_t j_lo = std::max<int64_t>(0, -tx), j_hi = std::min<int64_t>(W, W - tx);  // j with 0 <= j + tx < W
  acc_t* line = sc.line.data();
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = 0; i < H; ++i) {
      const int64_t si = i + ty;
      if (si >= 0 && si < H && j_lo < j_hi) {
        const acc_t* src = buf + c * HW + si * W + tx;
        std::fill(line, line + j_lo, acc_t(0.5));
        for (int64_t j = j_lo; j < j_hi; ++j) line[j] = src[j] * acc_t(0.5) + acc_t(0.5);
        std::fill(line + j_hi, line + W, acc_t(0.5));
        if (cut && i >= prm.y0 && i < prm.y1)
          std::fill(line + std::max<int64_t>(0, prm.x0), line + std::min<int64_t>(W, prm.x1), acc_t(0.5));
      } else {
        std::fill(line, line + W, acc_t(0.5));  // the whole row is translated in from outside: zeros
      }
      acc_t* r = sc.rows.data() + (c * H + i) * OW;
      for (int64_t q = 0; q < OW; ++q) {
        acc_t a = 0;
        for (int64_t j = sc.q0[q]; j < sc.q1[q]; ++j) a += line[j];
        r[q] = a;
      }
    }
  }
  // 3. sums over each row window, average, normalise
  const acc_t* wcnt = sc.wcnt.data();
  acc_t* a = sc.acc.data();
  for (int64_t c = 0; c < C; ++c) {
    const acc_t mc = static_cast<acc_t>(mean[c]), sd = static_cast<acc_t>(std[c]);
    for (int64_t p = 0; p < OH; ++p) {
      const int64_t i0 = win_start(p, H, OH), i1 = win_end(p, H, OH);
      const acc_t* r0 = sc.rows.data() + (c * H + i0) * OW;
      std::copy(r0, r0 + OW, a);
      for (int64_t i = i0 + 1; i < i1; ++i) {
        const acc_t* ri = sc.rows.data() + (c * H + i) * OW;
        for (int64_t q = 0; q < OW; ++q) a[q] += ri[q];
      }
      const acc_t hc = static_cast<acc_t>(i1 - i0);
      scalar_t* o = on + (c * OH + p) * OW;
      for (int64_t q = 0; q < OW; ++q) o[q] = static_cast<scalar_t>((a[q] / (hc * wcnt[q]) - mc) / sd);
    }
  }
}

template <typename scalar_t, typename acc_t>
void backward_image(const scalar_t* gn, const Params& prm, int64_t flags, const Geometry& g, const double* std,
                    scalar_t* xn, Scratch<acc_t>& sc) {
  const int64_t C = g.c, H = g.h, W = g.w, OH = g.oh, OW = g.ow, HW = H * W;
  const bool sat = flags & kSaturation, con = flags & kContrast;
  const bool trans = flags & kTranslation, cut = flags & kCutout;
  const acc_t s = static_cast<acc_t>(prm.s), k = static_cast<acc_t>(prm.k);
  acc_t* buf = sc.buf.data();
  acc_t* rows = sc.rows.data();
  // normalise and row-window adjoint: rows[c, i, q] = sum over the windows p holding row i of g / std / window size
  const acc_t* wcnt = sc.wcnt.data();
  std::fill(sc.rows.begin(), sc.rows.end(), acc_t(0));
  acc_t* v = sc.acc.data();
  for (int64_t c = 0; c < C; ++c) {
    const acc_t sd = static_cast<acc_t>(std[c]);
    for (int64_t p = 0; p < OH; ++p) {
      const int64_t i0 = win_start(p, H, OH), i1 = win_end(p, H, OH);
      const acc_t hc = static_cast<acc_t>(i1 - i0);
      const scalar_t* gp = gn + (c * OH + p) * OW;
      for (int64_t q = 0; q < OW; ++q) v[q] = static_cast<acc_t>(gp[q]) / sd / (hc * wcnt[q]);
      for (int64_t i = i0; i < i1; ++i) {
        acc_t* ri = rows + (c * H + i) * OW;
        for (int64_t q = 0; q < OW; ++q) ri[q] += v[q];
      }
    }
  }
  // column-window adjoint, x 0.5, cutout, inverse translation -> buf (the gradient at the colour ops' output)
  std::fill(sc.buf.begin(), sc.buf.end(), acc_t(0));
  const int64_t ty = trans ? prm.ty : 0, tx = trans ? prm.tx : 0;
  const int64_t j_lo = std::max<int64_t>(0, -tx), j_hi = std::min<int64_t>(W, W - tx);
  acc_t* line = sc.line.data();
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = 0; i < H; ++i) {
      const int64_t si = i + ty;
      if (si < 0 || si >= H || j_lo >= j_hi) continue;
      std::fill(line, line + W, acc_t(0));
      const acc_t* r = rows + (c * H + i) * OW;
      for (int64_t q = 0; q < OW; ++q)
        for (int64_t j = sc.q0[q]; j < sc.q1[q]; ++j) line[j] += r[q];
      if (cut && i >= prm.y0 && i < prm.y1)
        std::fill(line + std::max<int64_t>(0, prm.x0), line + std::min<int64_t>(W, prm.x1), acc_t(0));
      acc_t* dst = buf + c * HW + si * W + tx;
      for (int64_t j = j_lo; j < j_hi; ++j) dst[j] = line[j] * acc_t(0.5);
    }
  }
  // contrast adjoint
  if (con) {
    double sum = 0;
    for (int64_t t = 0; t < C * HW; ++t) sum += static_cast<double>(buf[t]);
    const acc_t gm = static_cast<acc_t>(sum / static_cast<double>(C * HW));
    const acc_t off = (acc_t(1) - k) * gm;
    for (int64_t t = 0; t < C * HW; ++t) buf[t] = buf[t] * k + off;
  }
  // saturation adjoint (brightness: identity), write
  if (sat) {
    acc_t* m = sc.line.data();  // H * W channel means of the gradient
    std::copy(buf, buf + HW, m);
    for (int64_t c = 1; c < C; ++c)
      for (int64_t t = 0; t < HW; ++t) m[t] += buf[c * HW + t];
    const acc_t cc = static_cast<acc_t>(C), one_s = acc_t(1) - s;
    for (int64_t t = 0; t < HW; ++t) m[t] = one_s * (m[t] / cc);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < HW; ++t) xn[c * HW + t] = static_cast<scalar_t>(buf[c * HW + t] * s + m[t]);
  } else {
    for (int64_t t = 0; t < C * HW; ++t) xn[t] = static_cast<scalar_t>(buf[t]);
  }
}

at::Tensor vision_preprocess_cpu(const at::Tensor& x_in, const at::Tensor& table_in, int64_t flags, int64_t out_h,
                                 int64_t out_w, c10::ArrayRef<double> mean, c10::ArrayRef<double> std) {
  check_forward_args(x_in, table_in, flags, out_h, out_w, mean, std, c10::DeviceType::CPU);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor table = table_in.contiguous();
  const Geometry g{x.size(1), x.size(2), x.size(3), out_h, out_w};
  const int64_t n = x.size(0);
  at::Tensor out = at::empty({n, g.c, out_h, out_w}, x.options());
  if (n == 0) return out;
  const double* tab = table.const_data_ptr<double>();
  const std::vector<double> mv(mean.begin(), mean.end()), sv(std.begin(), std.end());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "vision_preprocess_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, 1, [&](int64_t n0, int64_t n1) {
      Scratch<acc_t> scratch(g);
      for (int64_t i = n0; i < n1; ++i)
        forward_image<scalar_t, acc_t>(px + i * g.c * g.h * g.w, load_params(tab + i * kCols), flags, g, mv.data(),
                                       sv.data(), po + i * g.c * out_h * out_w, scratch);
    });
  });
  return out;
}

at::Tensor vision_preprocess_backward_cpu(const at::Tensor& grad_in, const at::Tensor& table_in, int64_t flags,
                                          int64_t height, int64_t width, c10::ArrayRef<double> std) {
  check_backward_args(grad_in, table_in, flags, height, width, std, c10::DeviceType::CPU);
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor table = table_in.contiguous();
  const Geometry g{grad.size(1), height, width, grad.size(2), grad.size(3)};
  const int64_t n = grad.size(0);
  at::Tensor gx = at::empty({n, g.c, height, width}, grad.options());
  if (n == 0) return gx;
  const double* tab = table.const_data_ptr<double>();
  const std::vector<double> sv(std.begin(), std.end());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "vision_preprocess_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    scalar_t* px = gx.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, 1, [&](int64_t n0, int64_t n1) {
      Scratch<acc_t> scratch(g);
      for (int64_t i = n0; i < n1; ++i)
        backward_image<scalar_t, acc_t>(pg + i * g.c * g.oh * g.ow, load_params(tab + i * kCols), flags, g,
                                        sv.data(), px + i * g.c * g.h * g.w, scratch);
    });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("vision_preprocess", &vision_preprocess_cpu);
  m.impl("vision_preprocess_backward", &vision_preprocess_backward_cpu);
}

FASTGAN_REGISTER_FAMILY("vision", "cpu");

}  // namespace fastgan::vision

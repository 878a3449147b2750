// Fused vision-backbone preprocessing (DiffAugment -> x * 0.5 + 0.5 -> area resize -> (x - mean) / std): the parts
// shared by the CPU (vision_preprocess.cpp) and CUDA (vision_preprocess_cuda.cu) backends. Semantics are defined by
// the torch reference in fastgan/ops/vision_preprocess.py:
//   vision_preprocess(x, table, flags, out_h, out_w, mean, std)             (N, C, H, W) -> (N, C, out_h, out_w)
//   vision_preprocess_backward(grad_out, table, flags, height, width, std)  gradient w.r.t. x (the map is affine)
// table: float64 (N, 9) rows [b, s, k, ty, tx, y0, y1, x0, x1]; flags: bit set of the DiffAugment ops that are on.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

#include "common/checks.h"

#if defined(__CUDACC__)
#define VP_HD __host__ __device__ __forceinline__
#else
#define VP_HD inline
#endif

namespace fastgan::vision {

constexpr int64_t kBrightness = 1, kSaturation = 2, kContrast = 4, kTranslation = 8, kCutout = 16;
constexpr int64_t kAllOps = 31;
constexpr int64_t kCols = 9;

// Adaptive average pooling (F.interpolate(mode="area")): output index p of dst averages source [start, end).
VP_HD int64_t win_start(int64_t p, int64_t src, int64_t dst) { return (p * src) / dst; }
VP_HD int64_t win_end(int64_t p, int64_t src, int64_t dst) { return ((p + 1) * src + dst - 1) / dst; }
// Most source pixels of one window (src -> dst), and most windows one source pixel belongs to (= extent(dst, src)).
VP_HD int64_t win_extent(int64_t src, int64_t dst) { return (src + dst - 2) / dst + 1; }
// The windows [cover_lo, cover_hi] (inclusive) of dst whose source range contains source index i (0 <= i < src).
VP_HD int64_t cover_lo(int64_t i, int64_t src, int64_t dst) { return (i * dst) / src; }
VP_HD int64_t cover_hi(int64_t i, int64_t src, int64_t dst) {
  const int64_t hi = ((i + 1) * dst - 1) / src;
  return hi < dst - 1 ? hi : dst - 1;
}

// One sample's DiffAugment parameters (identity values for the ops that are off).
struct Params {
  double b, s, k;
  int64_t ty, tx, y0, y1, x0, x1;
};

VP_HD Params load_params(const double* row) {
  Params p;
  p.b = row[0];
  p.s = row[1];
  p.k = row[2];
  p.ty = static_cast<int64_t>(row[3]);
  p.tx = static_cast<int64_t>(row[4]);
  p.y0 = static_cast<int64_t>(row[5]);
  p.y1 = static_cast<int64_t>(row[6]);
  p.x0 = static_cast<int64_t>(row[7]);
  p.x1 = static_cast<int64_t>(row[8]);
  return p;
}

VP_HD bool in_cutout(const Params& p, int64_t i, int64_t j) { return i >= p.y0 && i < p.y1 && j >= p.x0 && j < p.x1; }

// ---- argument checks shared by the CPU and CUDA entry points ---------------------------------------------------
inline void check_table(const at::Tensor& table, const at::Tensor& like, int64_t flags, const char* fn) {
  FASTGAN_CHECK_DEFINED(table);
  TORCH_CHECK(table.device() == like.device(), fn, ": table must be on ", like.device(), ", got ", table.device());
  TORCH_CHECK(table.scalar_type() == at::kDouble, fn, ": table must be float64, got ", table.scalar_type());
  TORCH_CHECK(table.dim() == 2 && table.size(0) == like.size(0) && table.size(1) == kCols, fn,
              ": table must have shape (N, 9) = (", like.size(0), ", 9), got ", table.sizes());
  TORCH_CHECK(flags >= 0 && flags <= kAllOps, fn, ": flags must be a bit set in [0, 31], got ", flags);
}

inline void check_stats(c10::ArrayRef<double> v, int64_t channels, const char* name, bool nonzero, const char* fn) {
  TORCH_CHECK(static_cast<int64_t>(v.size()) == channels, fn, ": ", name, " has ", v.size(),
              " entries but the images have ", channels, " channels");
  for (const double t : v) {
    TORCH_CHECK(std::isfinite(t), fn, ": ", name, " must be finite, got ", t);
    TORCH_CHECK(!nonzero || t != 0.0, fn, ": ", name, " must be non-zero");
  }
}

inline void check_forward_args(const at::Tensor& x, const at::Tensor& table, int64_t flags, int64_t out_h,
                               int64_t out_w, c10::ArrayRef<double> mean, c10::ArrayRef<double> std,
                               c10::DeviceType dev) {
  const char* fn = "vision_preprocess";
  FASTGAN_CHECK_DEFINED(x);
  FASTGAN_CHECK_DEVICE_TYPE(x, dev);
  TORCH_CHECK(x.dim() == 4, fn, ": x must have shape (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), fn, ": x must be a floating tensor, got ", x.scalar_type());
  TORCH_CHECK(x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1, fn, ": x must have C, H, W >= 1, got ", x.sizes());
  TORCH_CHECK(out_h >= 1 && out_w >= 1, fn, ": the output size must be at least 1x1, got ", out_h, "x", out_w);
  check_table(table, x, flags, fn);
  check_stats(mean, x.size(1), "mean", false, fn);
  check_stats(std, x.size(1), "std", true, fn);
  check_index_range(x, "x");
  TORCH_CHECK(x.size(1) * x.size(2) * x.size(3) < (int64_t(1) << 31) && x.size(1) * out_h * out_w < (int64_t(1) << 31),
              fn, ": one image (", x.size(1), "x", x.size(2), "x", x.size(3), ") or its ", out_h, "x", out_w,
              " output has 2^31 or more elements");
}

inline void check_backward_args(const at::Tensor& grad, const at::Tensor& table, int64_t flags, int64_t height,
                                int64_t width, c10::ArrayRef<double> std, c10::DeviceType dev) {
  const char* fn = "vision_preprocess_backward";
  FASTGAN_CHECK_DEFINED(grad);
  FASTGAN_CHECK_DEVICE_TYPE(grad, dev);
  TORCH_CHECK(grad.dim() == 4, fn, ": grad_out must have shape (N, C, out_h, out_w), got ", grad.sizes());
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), fn, ": grad_out must be a floating tensor, got ",
              grad.scalar_type());
  TORCH_CHECK(grad.size(1) >= 1 && grad.size(2) >= 1 && grad.size(3) >= 1, fn,
              ": grad_out must have C, out_h, out_w >= 1, got ", grad.sizes());
  TORCH_CHECK(height >= 1 && width >= 1, fn, ": the image size must be at least 1x1, got ", height, "x", width);
  check_table(table, grad, flags, fn);
  check_stats(std, grad.size(1), "std", true, fn);
  check_index_range(grad, "grad_out");
  TORCH_CHECK(grad.size(1) * height * width < (int64_t(1) << 31) &&
                  grad.size(1) * grad.size(2) * grad.size(3) < (int64_t(1) << 31),
              fn, ": one image or its gradient has 2^31 or more elements");
}

}  // namespace fastgan::vision

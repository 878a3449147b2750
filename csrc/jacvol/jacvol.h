// Jacobian log-volume ops (MaGNET): the device-independent part shared by the CPU (jacvol.cpp) and CUDA
// (jacvol_cuda.cu) backends. Semantics are defined by the pure-torch references in fastgan/ops/jacvol.py:
//   random_projection_gauss(x, keys, col0)         (B, D) -> (B, R) = x G[:, col0:col0+D]^T
//   random_projection_gauss_t(z, keys, col0, cols) (B, R) -> (B, cols) = z G[:, col0:col0+cols]
//   log_singular_values(jac, top_k)                (B, k, d) -> float64 (B, top_k) descending log sigma
//
// G is the seeded Gaussian matrix behind the orthonormal projection P = L^-1 G. Row r of G is keyed by
// keys[r] = (k0, k1) (uint32 values in int64); columns come in groups of kGroup = 128: the group's pair t
// (0 <= t < 64) is the Box-Muller pair p = 64 g + t of the counter generator of synth.h (draws 2p and 2p + 1),
// and gives column 128 g + t its cosine and column 128 g + 64 + t its sine. A kernel that owns a group computes
// each pair once.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/checks.h"
#include "synth/synth.h"  // mix32 / draw32: the project's 32-bit counter generator

#if defined(__CUDACC__)
#define JACVOL_HD __host__ __device__ __forceinline__
#else
#define JACVOL_HD inline
#endif

namespace fastgan::jacvol {

constexpr int64_t kGroup = 128;
constexpr int64_t kHalf = 64;
constexpr int64_t kMaxCol = (int64_t(1) << 31) - kGroup;  // col0 + cols limit: draw counters stay below 2^32

// The Gaussian pair p of the row keyed (k0, k1): g_cos = r cos t, g_sin = r sin t (float32).
JACVOL_HD void gauss_pair(uint32_t k0, uint32_t k1, uint32_t p, float& g_cos, float& g_sin) {
  const uint32_t h1 = fastgan::synth::draw32(k0, k1, 2u * p);
  const uint32_t h2 = fastgan::synth::draw32(k0, k1, 2u * p + 1u);
  const float u1 = static_cast<float>((h1 >> 8) + 1u) * 0x1p-24f;
  const float u2 = static_cast<float>(h2 >> 8) * 0x1p-24f;
  const float r = sqrtf(-2.0f * logf(u1));
  const float t = u2 * 6.2831855f;  // float32(2 pi)
#if defined(__CUDA_ARCH__)
  float s, c;
  sincosf(t, &s, &c);
  g_cos = r * c;
  g_sin = r * s;
#else
  g_cos = r * std::cos(t);
  g_sin = r * std::sin(t);
#endif
}

// ---- argument checks (both backends) -------------------------------------------------------------------------
inline void check_keys(const at::Tensor& keys, const at::Tensor& like, c10::DeviceType dev) {
  FASTGAN_CHECK_DEFINED(keys);
  FASTGAN_CHECK_DIM(keys, 2);
  TORCH_CHECK(keys.size(1) == 2, "keys must have shape (R, 2), got ", keys.sizes());
  TORCH_CHECK(keys.scalar_type() == at::kLong, "keys must be int64, got ", keys.scalar_type());
  FASTGAN_CHECK_DEVICE_TYPE(keys, dev);
  FASTGAN_CHECK_SAME_DEVICE(keys, like);
}

inline void check_gauss_args(const at::Tensor& x, const at::Tensor& keys, int64_t col0, c10::DeviceType dev) {
  FASTGAN_CHECK_DEFINED(x);
  FASTGAN_CHECK_DIM(x, 2);
  FASTGAN_CHECK_FLOATING(x);
  FASTGAN_CHECK_DEVICE_TYPE(x, dev);
  check_keys(keys, x, dev);
  TORCH_CHECK(col0 >= 0 && col0 <= kMaxCol && x.size(1) <= kMaxCol - col0, "col0 + D must lie in [0, ", kMaxCol,
              "], got col0=", col0, ", D=", x.size(1));
  fastgan::check_index_range(x, "x");
}

inline void check_gauss_t_args(const at::Tensor& z, const at::Tensor& keys, int64_t col0, int64_t cols,
                               c10::DeviceType dev) {
  FASTGAN_CHECK_DEFINED(z);
  FASTGAN_CHECK_DIM(z, 2);
  TORCH_CHECK(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble, "z must be float32 or float64, got ",
              z.scalar_type());
  FASTGAN_CHECK_DEVICE_TYPE(z, dev);
  check_keys(keys, z, dev);
  TORCH_CHECK(z.size(1) == keys.size(0), "z has ", z.size(1), " columns but keys has ", keys.size(0), " rows");
  TORCH_CHECK(cols >= 0 && col0 >= 0 && col0 <= kMaxCol && cols <= kMaxCol - col0,
              "col0 + cols must lie in [0, ", kMaxCol, "], got col0=", col0, ", cols=", cols);
  TORCH_CHECK(z.size(0) < (int64_t(1) << 62) / std::max<int64_t>(cols, 1), "the output (", z.size(0), ", ", cols,
              ") is too large to index");
}

inline void check_logsv_args(const at::Tensor& jac, int64_t top_k, c10::DeviceType dev) {
  FASTGAN_CHECK_DEFINED(jac);
  FASTGAN_CHECK_DIM(jac, 3);
  const auto st = jac.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "jac must be float32, float64, float16 or bfloat16, got ", st);
  FASTGAN_CHECK_DEVICE_TYPE(jac, dev);
  TORCH_CHECK(jac.size(0) > 0 && jac.size(1) > 0 && jac.size(2) > 0, "jac is empty: shape ", jac.sizes());
  const int64_t m = std::min(jac.size(1), jac.size(2));
  TORCH_CHECK(top_k >= 1 && top_k <= m, "top_k must lie in [1, min(k, d)] = [1, ", m, "], got ", top_k);
  fastgan::check_index_range(jac, "jac");
}

// Gram geometry of jac (B, k, d): m = min(k, d) Gram rows, n summed entries; element (a, l) of matrix b lies at
// b * sb + a * sa + l * sl (J J^T when k <= d, else J^T J).
struct GramGeom {
  int64_t m, n, sb, sa, sl;
};

inline GramGeom gram_geom(const at::Tensor& jac) {
  const int64_t k = jac.size(1), d = jac.size(2);
  if (k <= d) return {k, d, jac.stride(0), jac.stride(1), jac.stride(2)};
  return {d, k, jac.stride(0), jac.stride(2), jac.stride(1)};
}

// 1/2 log(lambda), -inf for lambda <= 0 (an exactly singular direction or a negative rounding).
JACVOL_HD double half_log(double lam) { return lam > 0.0 ? 0.5 * log(lam) : -INFINITY; }

}  // namespace fastgan::jacvol

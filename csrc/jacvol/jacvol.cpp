// CPU backend of the jacvol family (MaGNET projection passes and batched log singular values): OpenMP kernels
// (at::parallel_for) around the shared per-entry generator of jacvol.h, and the CPU kernel registrations.
//
//   random_projection_gauss    D is cut into at most kMaxSlices slices of whole column groups (a split fixed by
//                              D, not by the thread count); each slice regenerates its groups of G (R x 128) and
//                              accumulates x G^T into its own partial, and the partials are added in slice order:
//                              the result does not depend on the number of threads.
//   random_projection_gauss_t  one column group per work item: regenerate G (R x 128), write z G for the group.
//   log_singular_values        float64 Gram rows in parallel (J J^T or J^T J), then LAPACK's batched eigvalsh.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linalg_eigvalsh.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/registry.h"
#include "jacvol/jacvol.h"

namespace fastgan::jacvol {
namespace {

constexpr int64_t kMaxSlices = 64;

// Rows [0, rows) of G for column group g, row-major (rows x kGroup), converted to acc_t.
template <typename acc_t>
void group_block(const int64_t* keys, int64_t rows, int64_t g, acc_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint32_t k0 = static_cast<uint32_t>(keys[2 * r]), k1 = static_cast<uint32_t>(keys[2 * r + 1]);
    acc_t* row = out + r * kGroup;
    for (int64_t t = 0; t < kHalf; ++t) {
      float c, s;
      gauss_pair(k0, k1, static_cast<uint32_t>(g * kHalf + t), c, s);
      row[t] = static_cast<acc_t>(c);
      row[kHalf + t] = static_cast<acc_t>(s);
    }
  }
}

// The local column range [lo, hi) of group g's 128 columns that lies inside [0, cols) (local = global - col0).
inline void group_range(int64_t g, int64_t col0, int64_t cols, int64_t& base, int64_t& lo, int64_t& hi) {
  base = g * kGroup - col0;
  lo = std::max<int64_t>(0, -base);
  hi = std::min<int64_t>(kGroup, cols - base);
}

template <typename scalar_t, typename acc_t>
void gauss_fwd_kernel(const at::Tensor& x, const int64_t* keys, int64_t rows, int64_t col0, acc_t* out) {
  const int64_t nb = x.size(0), d = x.size(1), sxb = x.stride(0), sxd = x.stride(1);
  const scalar_t* px = x.const_data_ptr<scalar_t>();
  const int64_t g_first = col0 / kGroup;
  const int64_t g_total = (col0 + d + kGroup - 1) / kGroup - g_first;
  int64_t slices = std::min(kMaxSlices, g_total);
  const int64_t per = (g_total + slices - 1) / slices;
  slices = (g_total + per - 1) / per;
  const int64_t size = nb * rows;
  std::vector<acc_t> part(static_cast<size_t>(slices * size), acc_t(0));
  at::parallel_for(0, slices, 1, [&](int64_t s0, int64_t s1) {
    std::vector<acc_t> gb(static_cast<size_t>(rows * kGroup));
    std::vector<acc_t> xb(static_cast<size_t>(nb * kGroup));
    for (int64_t s = s0; s < s1; ++s) {
      acc_t* acc = part.data() + s * size;
      const int64_t gi1 = std::min(g_total, (s + 1) * per);
      for (int64_t gi = s * per; gi < gi1; ++gi) {
        const int64_t g = g_first + gi;
        int64_t base, lo, hi;
        group_range(g, col0, d, base, lo, hi);
        group_block(keys, rows, g, gb.data());
        for (int64_t b = 0; b < nb; ++b) {
          acc_t* xr = xb.data() + b * kGroup;
          for (int64_t t = 0; t < kGroup; ++t)
            xr[t] = (t >= lo && t < hi) ? static_cast<acc_t>(px[b * sxb + (base + t) * sxd]) : acc_t(0);
        }
        for (int64_t b = 0; b < nb; ++b) {
          const acc_t* xr = xb.data() + b * kGroup;
          for (int64_t r = 0; r < rows; ++r) {
            const acc_t* gr = gb.data() + r * kGroup;
            acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int64_t t = 0; t < kGroup; ++t) sum += xr[t] * gr[t];
            acc[b * rows + r] += sum;
          }
        }
      }
    }
  });
  for (int64_t i = 0; i < size; ++i) {
    acc_t v = 0;
    for (int64_t s = 0; s < slices; ++s) v += part[s * size + i];
    out[i] = v;
  }
}

template <typename acc_t>
void gauss_t_kernel(const acc_t* z, int64_t nb, const int64_t* keys, int64_t rows, int64_t col0, int64_t cols,
                    acc_t* out) {
  const int64_t g_first = col0 / kGroup;
  const int64_t g_total = (col0 + cols + kGroup - 1) / kGroup - g_first;
  at::parallel_for(0, g_total, 1, [&](int64_t gi0, int64_t gi1) {
    std::vector<acc_t> gb(static_cast<size_t>(rows * kGroup));
    acc_t ob[kGroup];
    for (int64_t gi = gi0; gi < gi1; ++gi) {
      const int64_t g = g_first + gi;
      int64_t base, lo, hi;
      group_range(g, col0, cols, base, lo, hi);
      group_block(keys, rows, g, gb.data());
      for (int64_t b = 0; b < nb; ++b) {
        std::fill(ob, ob + kGroup, acc_t(0));
        for (int64_t r = 0; r < rows; ++r) {
          const acc_t zr = z[b * rows + r];
          const acc_t* gr = gb.data() + r * kGroup;
#pragma omp simd
          for (int64_t t = 0; t < kGroup; ++t) ob[t] += zr * gr[t];
        }
        acc_t* orow = out + b * cols + base;
        for (int64_t t = lo; t < hi; ++t) orow[t] = ob[t];
      }
    }
  });
}

// Float64 Gram of every matrix: (nb, m, m), upper triangle only (the caller mirrors it).
template <typename scalar_t>
void gram_kernel(const scalar_t* pj, const GramGeom& geo, int64_t nb, double* pg) {
  const int64_t m = geo.m, n = geo.n;
  // Convert to float64 rows (a, :) once (strided reads), then one upper-triangle Gram row per work item.
  std::vector<double> buf(static_cast<size_t>(nb * m * n));
  at::parallel_for(0, nb * m, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / m, a = i % m;
      const scalar_t* src = pj + b * geo.sb + a * geo.sa;
      double* dst = buf.data() + i * n;
      for (int64_t l = 0; l < n; ++l) dst[l] = static_cast<double>(src[l * geo.sl]);
    }
  });
  at::parallel_for(0, nb * m, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / m, a = i % m;
      const double* ra = buf.data() + i * n;
      double* grow = pg + i * m;
      for (int64_t c = a; c < m; ++c) {
        const double* rc = buf.data() + (b * m + c) * n;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t l = 0; l < n; ++l) s += ra[l] * rc[l];
        grow[c] = s;
      }
    }
  });
}

at::Tensor gauss_cpu(const at::Tensor& x, const at::Tensor& keys_in, int64_t col0) {
  check_gauss_args(x, keys_in, col0, c10::DeviceType::CPU);
  const at::Tensor keys = keys_in.contiguous();
  const int64_t nb = x.size(0), d = x.size(1), rows = keys.size(0);
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor out = at::zeros({nb, rows}, x.options().dtype(acc_type));
  if (nb == 0 || rows == 0 || d == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "random_projection_gauss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    gauss_fwd_kernel<scalar_t, acc_t>(x, keys.const_data_ptr<int64_t>(), rows, col0, out.mutable_data_ptr<acc_t>());
  });
  return out;
}

at::Tensor gauss_t_cpu(const at::Tensor& z_in, const at::Tensor& keys_in, int64_t col0, int64_t cols) {
  check_gauss_t_args(z_in, keys_in, col0, cols, c10::DeviceType::CPU);
  const at::Tensor z = z_in.contiguous();
  const at::Tensor keys = keys_in.contiguous();
  const int64_t nb = z.size(0), rows = z.size(1);
  at::Tensor out = at::zeros({nb, cols}, z.options());
  if (nb == 0 || cols == 0 || rows == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "random_projection_gauss_t_cpu", [&] {
    gauss_t_kernel<scalar_t>(z.const_data_ptr<scalar_t>(), nb, keys.const_data_ptr<int64_t>(), rows, col0, cols,
                             out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor log_singular_values_cpu(const at::Tensor& jac, int64_t top_k) {
  check_logsv_args(jac, top_k, c10::DeviceType::CPU);
  const GramGeom geo = gram_geom(jac);
  const int64_t nb = jac.size(0), m = geo.m, n = geo.n;
  at::Tensor gram = at::empty({nb, m, m}, jac.options().dtype(at::kDouble));
  double* pg = gram.mutable_data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, jac.scalar_type(), "jacvol_gram_cpu",
                                  [&] { gram_kernel<scalar_t>(jac.const_data_ptr<scalar_t>(), geo, nb, pg); });
  for (int64_t b = 0; b < nb; ++b)  // mirror the upper triangle
    for (int64_t a = 0; a < m; ++a)
      for (int64_t c = a + 1; c < m; ++c) pg[(b * m + c) * m + a] = pg[(b * m + a) * m + c];
  const at::Tensor lam = at::linalg_eigvalsh(gram).contiguous();  // ascending
  at::Tensor out = at::empty({nb, top_k}, jac.options().dtype(at::kDouble));
  const double* pl = lam.const_data_ptr<double>();
  double* po = out.mutable_data_ptr<double>();
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t i = 0; i < top_k; ++i) po[b * top_k + i] = half_log(pl[b * m + (m - 1 - i)]);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("random_projection_gauss", &gauss_cpu);
  m.impl("random_projection_gauss_t", &gauss_t_cpu);
  m.impl("log_singular_values", &log_singular_values_cpu);
}

FASTGAN_REGISTER_FAMILY("jacvol", "cpu");

}  // namespace fastgan::jacvol

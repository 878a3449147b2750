// CUDA backend of the jacvol family (MaGNET projection passes and batched log singular values), mirroring
// jacvol.cpp around the shared per-entry generator of jacvol.h, and the CUDA kernel registrations.
//
// Conventions (as the other families): every kernel runs on the current PyTorch stream under the caller's device
// guard, indexes memory with 64-bit integers, never launches on empty work, and is deterministic (fixed reduction
// orders, no atomics).
//
//   random_projection_gauss    one block per (32 rows of G, 16 batch rows, D split). Per 128-column group the
//                              block regenerates its 32 x 128 tile of G into shared memory (each Box-Muller pair
//                              once: cosine to column t, sine to column 64 + t), stages the 16 x 128 tile of x, and
//                              every thread accumulates two outputs. Splits of D write partials that one sum adds
//                              in a fixed order; their number only grows the grid so that small batches fill the GPU.
//   random_projection_gauss_t  one block per (128-column group, 32 batch rows): it regenerates G 32 rows at a time
//                              and every thread accumulates 16 outputs of one column; each output is written once.
//   log_singular_values        one block per matrix for Gram sizes m = min(k, d) <= 128 (and when the device has
//                              the shared memory): the float64 Gram accumulates in shared memory from 16-column
//                              tiles of J (any strides, any float dtype), then a parallel cyclic Jacobi eigensolver
//                              (round-robin ordering: m/2 disjoint rotations per step, applied to columns then rows)
//                              runs until a sweep rotates nothing; the diagonal is ranked in the block. Larger
//                              Grams (or devices without the shared memory) use a float64 matmul Gram and torch's
//                              eigvalsh (cuSOLVER): the same semantics, another route.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linalg_eigvalsh.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "common/registry.h"
#include "jacvol/jacvol.h"

namespace fastgan::jacvol {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kFwdR = 32, kFwdB = 16;  // forward tile: rows of G x batch rows (2 outputs per thread)
constexpr int kTR = 32, kTB = 32;      // transpose tile: rows of G per step x batch rows (16 outputs per thread)
constexpr int kGenPerThread = kFwdR * static_cast<int>(kHalf) / kThreads;  // Box-Muller pairs per thread per tile
constexpr int kMaxJacobi = 128;        // largest Gram handled by the Jacobi kernel
constexpr int kGramTile = 16;          // summed entries of J staged per Gram step
constexpr int kMaxSweeps = 40;
constexpr double kEps = 2.220446049250313e-16;
static_assert(kTR == kFwdR, "both passes generate 32-row tiles of G");

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- random_projection_gauss: x G^T ----------------------------------------------------------------------------
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    gauss_fwd_kernel(const scalar_t* __restrict__ x, int64_t sxb, int64_t sxd, const int64_t* __restrict__ keys,
                     acc_t* __restrict__ part, int64_t nb, int64_t rows, int64_t d, int64_t col0, int64_t g_first,
                     int64_t g_total, int64_t per) {
  __shared__ float gs[kFwdR][kGroup + 1];  // padded: the 32 lanes of a warp read 32 rows of one column
  __shared__ acc_t xs[kFwdB][kGroup];
  const int tid = threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kFwdR;
  const int64_t b0 = static_cast<int64_t>(blockIdx.y) * kFwdB;
  const int64_t split = blockIdx.z;
  const int lr = tid % kFwdR, lb = tid / kFwdR;  // outputs (lb, lr) and (lb + 8, lr)
  // the rows this thread generates: pair index tid + q * kThreads -> row (tid / 64) + 4 q, pair t = tid % 64
  const int gen_t = tid % static_cast<int>(kHalf);
  uint32_t k0[kGenPerThread], k1[kGenPerThread];
#pragma unroll
  for (int q = 0; q < kGenPerThread; ++q) {
    const int64_t r = r0 + tid / kHalf + q * (kThreads / kHalf);
    k0[q] = r < rows ? static_cast<uint32_t>(keys[2 * r]) : 0u;
    k1[q] = r < rows ? static_cast<uint32_t>(keys[2 * r + 1]) : 0u;
  }
  acc_t acc0 = 0, acc1 = 0;
  const int64_t gi0 = split * per, gi1 = min(g_total, gi0 + per);
  for (int64_t gi = gi0; gi < gi1; ++gi) {
    const int64_t g = g_first + gi;
    const int64_t base = g * kGroup - col0;
#pragma unroll
    for (int q = 0; q < kGenPerThread; ++q) {
      float c, s;
      gauss_pair(k0[q], k1[q], static_cast<uint32_t>(g * kHalf + gen_t), c, s);
      const int rr = tid / kHalf + q * (kThreads / kHalf);
      gs[rr][gen_t] = c;
      gs[rr][kHalf + gen_t] = s;
    }
#pragma unroll
    for (int q = 0; q < kFwdB * kGroup / kThreads; ++q) {
      const int idx = tid + q * kThreads;
      const int bb = idx / kGroup, t = idx % kGroup;
      const int64_t b = b0 + bb, c = base + t;
      xs[bb][t] = (b < nb && c >= 0 && c < d) ? static_cast<acc_t>(x[b * sxb + c * sxd]) : acc_t(0);
    }
    __syncthreads();
#pragma unroll 8
    for (int t = 0; t < kGroup; ++t) {
      const acc_t gv = static_cast<acc_t>(gs[lr][t]);
      acc0 += xs[lb][t] * gv;
      acc1 += xs[lb + kWarps][t] * gv;
    }
    __syncthreads();
  }
  const int64_t r = r0 + lr;
  if (r < rows) {
    const int64_t b = b0 + lb;
    if (b < nb) part[(split * nb + b) * rows + r] = acc0;
    if (b + kWarps < nb) part[(split * nb + b + kWarps) * rows + r] = acc1;
  }
}

// ---- random_projection_gauss_t: z G ------------------------------------------------------------------------------
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    gauss_t_kernel(const acc_t* __restrict__ z, const int64_t* __restrict__ keys, acc_t* __restrict__ out,
                   int64_t nb, int64_t rows, int64_t cols, int64_t col0, int64_t g_first) {
  constexpr int kOut = kTB * kGroup / kThreads;  // 16 outputs per thread
  constexpr int kLanesB = kThreads / kGroup;     // 2 batch lanes
  __shared__ float gs[kTR][kGroup];
  __shared__ acc_t zs[kTB][kTR + 1];
  const int tid = threadIdx.x;
  const int64_t g = g_first + blockIdx.x;
  const int64_t b0 = static_cast<int64_t>(blockIdx.y) * kTB;
  const int c = tid % kGroup, lb = tid / kGroup;  // column c, batches lb + kLanesB j
  const int gen_t = tid % static_cast<int>(kHalf);
  acc_t acc[kOut];
#pragma unroll
  for (int j = 0; j < kOut; ++j) acc[j] = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += kTR) {
#pragma unroll
    for (int q = 0; q < kGenPerThread; ++q) {
      const int rr = tid / kHalf + q * (kThreads / kHalf);
      const int64_t r = r0 + rr;
      float gc = 0.f, gsn = 0.f;
      if (r < rows)
        gauss_pair(static_cast<uint32_t>(keys[2 * r]), static_cast<uint32_t>(keys[2 * r + 1]),
                   static_cast<uint32_t>(g * kHalf + gen_t), gc, gsn);
      gs[rr][gen_t] = gc;
      gs[rr][kHalf + gen_t] = gsn;
    }
#pragma unroll
    for (int q = 0; q < kTB * kTR / kThreads; ++q) {
      const int idx = tid + q * kThreads;
      const int bb = idx / kTR, rr = idx % kTR;
      const int64_t b = b0 + bb, r = r0 + rr;
      zs[bb][rr] = (b < nb && r < rows) ? z[b * rows + r] : acc_t(0);
    }
    __syncthreads();
#pragma unroll 4
    for (int rr = 0; rr < kTR; ++rr) {
      const acc_t gv = static_cast<acc_t>(gs[rr][c]);
#pragma unroll
      for (int j = 0; j < kOut; ++j) acc[j] += zs[lb + kLanesB * j][rr] * gv;
    }
    __syncthreads();
  }
  const int64_t col = g * kGroup + c - col0;
  if (col < 0 || col >= cols) return;
#pragma unroll
  for (int j = 0; j < kOut; ++j) {
    const int64_t b = b0 + lb + kLanesB * j;
    if (b < nb) out[b * cols + col] = acc[j];
  }
}

// ---- log_singular_values -----------------------------------------------------------------------------------------
__device__ double block_sum(double v, double* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // red may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  double s = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) s += red[w];
  return s;
}

size_t jacobi_smem_bytes(int64_t m) {
  const int64_t lda = m + 1;
  return static_cast<size_t>(m * lda + m * (kGramTile + 1) + 2 * (kMaxJacobi / 2 + 1) + kWarps) * sizeof(double) +
         static_cast<size_t>(2 * (kMaxJacobi / 2 + 1) + 1) * sizeof(int);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    logsv_jacobi_kernel(const scalar_t* __restrict__ jac, GramGeom geo, int64_t top_k, double* __restrict__ out) {
  extern __shared__ double smem[];
  const int m = static_cast<int>(geo.m);
  const int lda = m + 1;
  double* A = smem;                                  // m x lda
  double* T = A + m * lda;                           // m x (kGramTile + 1)
  double* rot = T + m * (kGramTile + 1);             // (c, s) per pair
  double* red = rot + 2 * (kMaxJacobi / 2 + 1);      // kWarps
  int* pairs = reinterpret_cast<int*>(red + kWarps);  // (p, q) per pair
  int* rotated = pairs + 2 * (kMaxJacobi / 2 + 1);
  const int tid = threadIdx.x;
  const scalar_t* base = jac + static_cast<int64_t>(blockIdx.x) * geo.sb;

  // 1. float64 Gram, upper triangle, accumulated over tiles of kGramTile summed entries
  for (int i = tid; i < m * lda; i += kThreads) A[i] = 0.0;
  for (int64_t l0 = 0; l0 < geo.n; l0 += kGramTile) {
    __syncthreads();
    for (int i = tid; i < m * kGramTile; i += kThreads) {
      const int a = i / kGramTile, u = i % kGramTile;
      const int64_t l = l0 + u;
      T[a * (kGramTile + 1) + u] =
          l < geo.n ? static_cast<double>(static_cast<at::opmath_type<scalar_t>>(base[a * geo.sa + l * geo.sl])) : 0.0;
    }
    __syncthreads();
    for (int i = tid; i < m * m; i += kThreads) {
      const int a = i / m, c = i % m;
      if (c < a) continue;
      double s = 0;
#pragma unroll
      for (int u = 0; u < kGramTile; ++u) s += T[a * (kGramTile + 1) + u] * T[c * (kGramTile + 1) + u];
      A[a * lda + c] += s;
    }
  }
  __syncthreads();
  for (int i = tid; i < m * m; i += kThreads) {
    const int a = i / m, c = i % m;
    if (c < a) A[a * lda + c] = A[c * lda + a];
  }
  __syncthreads();
  double tr = 0;
  for (int i = tid; i < m; i += kThreads) tr += A[i * lda + i];
  tr = fabs(block_sum(tr, red));

  // 2. cyclic Jacobi, round-robin pairs; a rotation is skipped when |a_pq| is negligible next to
  //    sqrt(|a_pp a_qq|) or to the trace (the Gram's own rounding level); stop after a sweep without rotations.
  const int np = (m % 2 == 0) ? m : m + 1;
  const int half = np / 2;
  for (int sweep = 0; sweep < kMaxSweeps && np > 1; ++sweep) {
    if (tid == 0) *rotated = 0;
    __syncthreads();
    for (int round = 0; round < np - 1; ++round) {
      if (tid < half) {
        const int a = (round + tid) % (np - 1);
        const int bq = tid == 0 ? np - 1 : (np - 1 - tid + round) % (np - 1);
        const int p = min(a, bq), q = max(a, bq);
        double c = 1.0, s = 0.0;
        if (q < m) {
          const double app = A[p * lda + p], aqq = A[q * lda + q], apq = A[p * lda + q];
          if (fabs(apq) > kEps * sqrt(fabs(app * aqq)) && fabs(apq) > kEps * tr) {
            const double tau = (aqq - app) / (2.0 * apq);
            const double t = (tau >= 0 ? 1.0 : -1.0) / (fabs(tau) + hypot(1.0, tau));
            c = 1.0 / sqrt(1.0 + t * t);
            s = t * c;
            *rotated = 1;
          }
        }
        pairs[2 * tid] = p;
        pairs[2 * tid + 1] = (q < m && s != 0.0) ? q : -1;  // -1: nothing to apply
        rot[2 * tid] = c;
        rot[2 * tid + 1] = s;
      }
      __syncthreads();
      for (int i = tid; i < half * m; i += kThreads) {  // A <- A J (columns p, q)
        const int k = i / m, r = i % m;
        const int q = pairs[2 * k + 1];
        if (q < 0) continue;
        const int p = pairs[2 * k];
        const double c = rot[2 * k], s = rot[2 * k + 1];
        const double arp = A[r * lda + p], arq = A[r * lda + q];
        A[r * lda + p] = c * arp - s * arq;
        A[r * lda + q] = s * arp + c * arq;
      }
      __syncthreads();
      for (int i = tid; i < half * m; i += kThreads) {  // A <- J^T A (rows p, q)
        const int k = i / m, r = i % m;
        const int q = pairs[2 * k + 1];
        if (q < 0) continue;
        const int p = pairs[2 * k];
        const double c = rot[2 * k], s = rot[2 * k + 1];
        const double apr = A[p * lda + r], aqr = A[q * lda + r];
        A[p * lda + r] = c * apr - s * aqr;
        A[q * lda + r] = s * apr + c * aqr;
      }
      __syncthreads();
    }
    if (*rotated == 0) break;
    __syncthreads();  // everyone has read the flag before thread 0 resets it
  }

  // 3. rank the diagonal (descending; ties by index) and write the top_k half logs
  for (int i = tid; i < m; i += kThreads) {
    const double li = A[i * lda + i];
    int rank = 0;
    for (int j = 0; j < m; ++j) {
      const double lj = A[j * lda + j];
      rank += (lj > li) || (lj == li && j < i);
    }
    if (rank < top_k) out[static_cast<int64_t>(blockIdx.x) * top_k + rank] = half_log(li);
  }
}

// Fallback finish: lam (nb, m) ascending -> out (nb, top_k) descending half logs.
__global__ void __launch_bounds__(kThreads)
    half_log_desc_kernel(const double* __restrict__ lam, int64_t nb, int64_t m, int64_t top_k,
                         double* __restrict__ out) {
  const int64_t total = nb * top_k;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t b = i / top_k, j = i % top_k;
    out[i] = half_log(lam[b * m + (m - 1 - j)]);
  }
}

// ---- entry points ---------------------------------------------------------------------------------------------
at::Tensor gauss_cuda(const at::Tensor& x, const at::Tensor& keys_in, int64_t col0) {
  check_gauss_args(x, keys_in, col0, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor keys = keys_in.contiguous();
  const int64_t nb = x.size(0), d = x.size(1), rows = keys.size(0);
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  if (nb == 0 || rows == 0 || d == 0) return at::zeros({nb, rows}, x.options().dtype(acc_type));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t g_first = col0 / kGroup;
  const int64_t g_total = (col0 + d + kGroup - 1) / kGroup - g_first;
  const int64_t tiles_r = ceil_div(rows, kFwdR), tiles_b = ceil_div(nb, kFwdB);
  TORCH_CHECK(tiles_r < 65536 && tiles_b < 65536, "random_projection_gauss: too many rows (", rows,
              ") or batch rows (", nb, ") for one launch");
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, x.device().index()));
  // enough D splits for about 4 blocks per SM; every split keeps at least 8 groups of work
  int64_t splits = std::max<int64_t>(1, std::min<int64_t>(ceil_div(g_total, 8), ceil_div(4 * sms, tiles_r * tiles_b)));
  splits = std::min<int64_t>(splits, 65535);
  const int64_t per = ceil_div(g_total, splits);
  splits = ceil_div(g_total, per);
  at::Tensor part = at::empty({splits, nb, rows}, x.options().dtype(acc_type));
  const dim3 grid(static_cast<unsigned>(tiles_r), static_cast<unsigned>(tiles_b), static_cast<unsigned>(splits));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "random_projection_gauss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    gauss_fwd_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), x.stride(0), x.stride(1), keys.const_data_ptr<int64_t>(),
        part.mutable_data_ptr<acc_t>(), nb, rows, d, col0, g_first, g_total, per);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return splits == 1 ? part.select(0, 0) : at::sum(part, {0});
}

at::Tensor gauss_t_cuda(const at::Tensor& z_in, const at::Tensor& keys_in, int64_t col0, int64_t cols) {
  check_gauss_t_args(z_in, keys_in, col0, cols, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(z_in.device());
  const at::Tensor z = z_in.contiguous();
  const at::Tensor keys = keys_in.contiguous();
  const int64_t nb = z.size(0), rows = z.size(1);
  if (nb == 0 || cols == 0 || rows == 0) return at::zeros({nb, cols}, z.options());
  at::Tensor out = at::empty({nb, cols}, z.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t g_first = col0 / kGroup;
  const int64_t g_total = (col0 + cols + kGroup - 1) / kGroup - g_first;
  const int64_t tiles_b = ceil_div(nb, kTB);
  TORCH_CHECK(tiles_b < 65536, "random_projection_gauss_t: too many batch rows (", nb, ") for one launch");
  const dim3 grid(static_cast<unsigned>(g_total), static_cast<unsigned>(tiles_b));
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "random_projection_gauss_t_cuda", [&] {
    gauss_t_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(z.const_data_ptr<scalar_t>(),
                                                           keys.const_data_ptr<int64_t>(),
                                                           out.mutable_data_ptr<scalar_t>(), nb, rows, cols, col0,
                                                           g_first);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor log_singular_values_cuda(const at::Tensor& jac, int64_t top_k) {
  check_logsv_args(jac, top_k, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(jac.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const GramGeom geo = gram_geom(jac);
  const int64_t nb = jac.size(0);
  at::Tensor out = at::empty({nb, top_k}, jac.options().dtype(at::kDouble));
  TORCH_CHECK(nb < (int64_t(1) << 31), "log_singular_values: batch of ", nb, " matrices is too large for one launch");
  int optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, jac.device().index()));
  const size_t smem = jacobi_smem_bytes(geo.m);
  if (geo.m <= kMaxJacobi && smem <= static_cast<size_t>(optin)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, jac.scalar_type(), "log_singular_values_cuda", [&] {
      C10_CUDA_CHECK(cudaFuncSetAttribute(logsv_jacobi_kernel<scalar_t>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      logsv_jacobi_kernel<scalar_t><<<static_cast<unsigned>(nb), kThreads, smem, stream>>>(
          jac.const_data_ptr<scalar_t>(), geo, top_k, out.mutable_data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return out;
  }
  // Fallback for Grams larger than kMaxJacobi: float64 matmul Gram and cuSOLVER eigvalsh.
  const at::Tensor j64 = jac.to(at::kDouble);
  const at::Tensor gram = jac.size(1) <= jac.size(2) ? at::matmul(j64, j64.transpose(1, 2))
                                                     : at::matmul(j64.transpose(1, 2), j64);
  const at::Tensor lam = at::linalg_eigvalsh(gram).contiguous();
  const int64_t total = nb * top_k;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(total, kThreads), 65536));
  half_log_desc_kernel<<<blocks, kThreads, 0, stream>>>(lam.const_data_ptr<double>(), nb, geo.m, top_k,
                                                        out.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("random_projection_gauss", &gauss_cuda);
  m.impl("random_projection_gauss_t", &gauss_t_cuda);
  m.impl("log_singular_values", &log_singular_values_cuda);
}

FASTGAN_REGISTER_FAMILY("jacvol", "cuda");

}  // namespace fastgan::jacvol

// CUDA backend of the knn family: k-NN radii and the real x fake manifold reductions behind precision / recall /
// density / coverage, computed over distance tiles without an N x N matrix (semantics: fastgan/ops/knn.py).
//
// Both kernels share one tiled distance routine: a block of 256 threads (16 x 16) owns a 64-row tile and sweeps the
// columns in 64-wide tiles. Each slice of 16 features of both tiles goes through shared memory; every thread
// accumulates a 4 x 4 micro-tile of dot products (rows ty + 16 i, columns tx + 16 j, float32 FMA) and turns it into
// squared distances |a|^2 + |b|^2 - 2 a.b, clamped at 0, with the squared norms computed in float64 on the host side
// and rounded to float32 -- the same arithmetic as the Triton kernels (kernels/knn.py).
//
//   knn_radii           the distance tile goes to shared memory; four threads per row scan 16 columns each and keep
//                       a sorted list of the k + 1 smallest squared distances in registers (a branch-free insertion
//                       pass, compile-time list capacity 8/16/32/64). At the end the four lists of a row (adjacent
//                       lanes) are merged with warp shuffles and lane 0 writes sqrt of the (k+1)-th smallest.
//   knn_manifold_stats  per thread and row: the count of fakes inside the real ball, "inside some fake ball" and the
//                       nearest fake, reduced over the 16 lanes that share the row with half-warp shuffles; per fake
//                       column "inside some real ball" is OR-ed in shared memory and then into global memory with one
//                       atomicOr per column and tile (an OR is order-independent, so results are deterministic).
//
// Every kernel runs on the current PyTorch stream under a device guard and indexes memory with 64-bit offsets.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <tuple>

#include "common/checks.h"
#include "common/registry.h"

namespace fastgan::knn {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16;  // row tile, column tile, feature slice
constexpr int kThreads = 256;                // 16 x 16
constexpr int kMaxK1 = 64;                   // largest k + 1 the register lists hold

struct TileSmem {
  float a[kBK][kBM + 4];
  float b[kBK][kBN + 4];
};

// Squared distances of rows row0 + ty + 16 i of A to rows col0 + tx + 16 j of B (clamped at 0); out-of-range
// entries hold +inf.
__device__ __forceinline__ void distance_tile(const float* __restrict__ A, const float* __restrict__ B,
                                              const float* __restrict__ sqa, const float* __restrict__ sqb,
                                              int64_t na, int64_t nb, int64_t dim, int64_t row0, int64_t col0,
                                              TileSmem& sm, float (&d2)[4][4]) {
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  for (int64_t k0 = 0; k0 < dim; k0 += kBK) {
#pragma unroll
    for (int e = tid; e < kBM * kBK; e += kThreads) {
      const int r = e / kBK, kk = e % kBK;
      const int64_t gr = row0 + r, gk = k0 + kk;
      sm.a[kk][r] = (gr < na && gk < dim) ? __ldg(A + gr * dim + gk) : 0.f;
    }
#pragma unroll
    for (int e = tid; e < kBN * kBK; e += kThreads) {
      const int c = e / kBK, kk = e % kBK;
      const int64_t gc = col0 + c, gk = k0 + kk;
      sm.b[kk][c] = (gc < nb && gk < dim) ? __ldg(B + gc * dim + gk) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = sm.a[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = sm.b[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
  constexpr float inf = std::numeric_limits<float>::infinity();
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t gr = row0 + ty + 16 * i;
    const float sr = gr < na ? sqa[gr] : 0.f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t gc = col0 + tx + 16 * j;
      d2[i][j] = (gr < na && gc < nb) ? fmaxf(sr + sqb[gc] - 2.f * acc[i][j], 0.f) : inf;
    }
  }
}

// best[k1 - 1] without a dynamic register index (which would put the list in local memory)
template <int K>
__device__ __forceinline__ float last_of(const float (&best)[K], int k1) {
  float v = best[0];
#pragma unroll
  for (int i = 1; i < K; ++i)
    if (i == k1 - 1) v = best[i];
  return v;
}

// Insert v into the ascending list best[0..k1) (capacity K), dropping the largest entry.
template <int K>
__device__ __forceinline__ void insert_sorted(float (&best)[K], int k1, float v) {
  if (!(v < last_of<K>(best, k1))) return;
#pragma unroll
  for (int i = 0; i < K; ++i) {
    if (i < k1) {
      const float lo = fminf(best[i], v);
      v = fmaxf(best[i], v);
      best[i] = lo;
    }
  }
}

template <int K>
__global__ void __launch_bounds__(kThreads)
    knn_radii_kernel(const float* __restrict__ x, const float* __restrict__ sq, double* __restrict__ out, int64_t n,
                     int64_t dim, int k1) {
  __shared__ TileSmem sm;
  __shared__ float tile[kBM][kBN + 1];
  constexpr float inf = std::numeric_limits<float>::infinity();
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int row = tid / 4, part = tid % 4;  // scan role: four lanes per row
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBM;
  float best[K];
#pragma unroll
  for (int i = 0; i < K; ++i) best[i] = inf;

  for (int64_t col0 = 0; col0 < n; col0 += kBN) {
    float d2[4][4];
    distance_tile(x, x, sq, sq, n, n, dim, row0, col0, sm, d2);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) tile[ty + 16 * i][tx + 16 * j] = d2[i][j];
    __syncthreads();
#pragma unroll 4
    for (int c = part; c < kBN; c += 4) insert_sorted<K>(best, k1, tile[row][c]);
    __syncthreads();
  }
  // merge the four lists of a row: lanes 4r .. 4r+3 of one warp
#pragma unroll
  for (int offset = 1; offset < 4; offset <<= 1) {
    float other[K];
#pragma unroll
    for (int i = 0; i < K; ++i) other[i] = __shfl_xor_sync(0xffffffffu, best[i], offset);
#pragma unroll
    for (int i = 0; i < K; ++i)
      if (i < k1) insert_sorted<K>(best, k1, other[i]);
  }
  const int64_t g = row0 + row;
  if (part == 0 && g < n) {
    out[g] = static_cast<double>(sqrtf(last_of<K>(best, k1)));
  }
}

template <bool kInclusive>
__device__ __forceinline__ bool within(float d2, float r2) {
  return kInclusive ? d2 <= r2 : d2 < r2;
}

template <bool kInclusive>
__global__ void __launch_bounds__(kThreads)
    manifold_kernel(const float* __restrict__ real, const float* __restrict__ fake, const float* __restrict__ sqr,
                    const float* __restrict__ sqf, const float* __restrict__ rr2, const float* __restrict__ fr2,
                    int32_t* __restrict__ fake_in, int32_t* __restrict__ real_in, int32_t* __restrict__ covered,
                    int32_t* __restrict__ count, int64_t nr, int64_t nf, int64_t dim) {
  __shared__ TileSmem sm;
  __shared__ int colflag[kBN];
  constexpr float inf = std::numeric_limits<float>::infinity();
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBM;
  float r2[4];
  int cnt[4], inside[4];
  float nearest[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t gr = row0 + ty + 16 * i;
    r2[i] = gr < nr ? rr2[gr] : -inf;
    cnt[i] = 0;
    inside[i] = 0;
    nearest[i] = inf;
  }
  if (tid < kBN) colflag[tid] = 0;
  __syncthreads();

  for (int64_t col0 = 0; col0 < nf; col0 += kBN) {
    float d2[4][4];
    distance_tile(real, fake, sqr, sqf, nr, nf, dim, row0, col0, sm, d2);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t gc = col0 + tx + 16 * j;
      const bool col_ok = gc < nf;
      const float f2 = col_ok ? fr2[gc] : -inf;
      int any_row = 0;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const bool ok = col_ok && (row0 + ty + 16 * i < nr);
        const bool in_real_ball = ok && within<kInclusive>(d2[i][j], r2[i]);
        cnt[i] += in_real_ball ? 1 : 0;
        any_row |= in_real_ball ? 1 : 0;
        inside[i] |= (ok && within<kInclusive>(d2[i][j], f2)) ? 1 : 0;
        if (ok) nearest[i] = fminf(nearest[i], d2[i][j]);
      }
      if (any_row) atomicOr(&colflag[tx + 16 * j], 1);
    }
    __syncthreads();
    if (tid < kBN) {
      const int64_t gc = col0 + tid;
      if (colflag[tid] && gc < nf) atomicOr(fake_in + gc, 1);
      colflag[tid] = 0;
    }
    __syncthreads();
  }
  // reduce over the 16 lanes (tx) that share rows ty + 16 i: half-warp shuffles
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int offset = 8; offset > 0; offset >>= 1) {
      cnt[i] += __shfl_xor_sync(0xffffffffu, cnt[i], offset);
      inside[i] |= __shfl_xor_sync(0xffffffffu, inside[i], offset);
      nearest[i] = fminf(nearest[i], __shfl_xor_sync(0xffffffffu, nearest[i], offset));
    }
    const int64_t gr = row0 + ty + 16 * i;
    if (tx == 0 && gr < nr) {
      count[gr] = cnt[i];
      real_in[gr] = inside[i];
      covered[gr] = within<kInclusive>(nearest[i], r2[i]) ? 1 : 0;
    }
  }
}

void check_features(const at::Tensor& t, const char* name) {
  FASTGAN_CHECK_DEFINED(t);
  FASTGAN_CHECK_DEVICE_TYPE(t, c10::DeviceType::CUDA);
  TORCH_CHECK(t.dim() == 2, name, " must be (N, D) features, got shape ", t.sizes());
  FASTGAN_CHECK_FLOATING(t);
  TORCH_CHECK(t.size(0) > 0 && t.size(1) > 0, name, " is empty: shape ", t.sizes());
  check_index_range(t, name);
}

// float32 contiguous copy and its float64-accumulated squared row norms rounded to float32
std::tuple<at::Tensor, at::Tensor> prepare(const at::Tensor& t) {
  at::Tensor f = t.to(at::kFloat).contiguous();
  at::Tensor sq = t.to(at::kDouble).square().sum(1).to(at::kFloat).contiguous();
  return {f, sq};
}

int grid_rows(int64_t n) {
  const int64_t b = (n + kBM - 1) / kBM;
  TORCH_CHECK(b <= std::numeric_limits<int32_t>::max(), "too many rows for one launch: ", n);
  return static_cast<int>(b);
}

at::Tensor knn_radii_cuda(const at::Tensor& x_in, int64_t k) {
  check_features(x_in, "x");
  TORCH_CHECK(k >= 1, "k must be >= 1, got ", k);
  TORCH_CHECK(k + 1 <= kMaxK1, "the cuda knn_radii kernel supports k <= ", kMaxK1 - 1, ", got k = ", k,
              "; use impl='triton' or impl='ref'");
  const int64_t n = x_in.size(0), dim = x_in.size(1);
  TORCH_CHECK(n >= k + 1, "knn_radii needs at least k + 1 = ", k + 1, " samples, got ", n);
  const c10::cuda::CUDAGuard guard(x_in.device());
  auto [x, sq] = prepare(x_in);
  at::Tensor out = at::empty({n}, x_in.options().dtype(at::kDouble));
  const int k1 = static_cast<int>(k + 1);
  const dim3 grid(grid_rows(n)), block(kThreads);
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (k1 <= 8) {
    knn_radii_kernel<8><<<grid, block, 0, stream>>>(x.data_ptr<float>(), sq.data_ptr<float>(),
                                                    out.data_ptr<double>(), n, dim, k1);
  } else if (k1 <= 16) {
    knn_radii_kernel<16><<<grid, block, 0, stream>>>(x.data_ptr<float>(), sq.data_ptr<float>(),
                                                     out.data_ptr<double>(), n, dim, k1);
  } else if (k1 <= 32) {
    knn_radii_kernel<32><<<grid, block, 0, stream>>>(x.data_ptr<float>(), sq.data_ptr<float>(),
                                                     out.data_ptr<double>(), n, dim, k1);
  } else {
    knn_radii_kernel<64><<<grid, block, 0, stream>>>(x.data_ptr<float>(), sq.data_ptr<float>(),
                                                     out.data_ptr<double>(), n, dim, k1);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> manifold_stats_cuda(const at::Tensor& real_in,
                                                                                const at::Tensor& fake_in_t,
                                                                                const at::Tensor& real_radii,
                                                                                const at::Tensor& fake_radii,
                                                                                bool inclusive) {
  check_features(real_in, "real");
  check_features(fake_in_t, "fake");
  FASTGAN_CHECK_SAME_DEVICE(real_in, fake_in_t);
  FASTGAN_CHECK_SAME_DEVICE(real_in, real_radii);
  FASTGAN_CHECK_SAME_DEVICE(real_in, fake_radii);
  TORCH_CHECK(real_in.size(1) == fake_in_t.size(1), "real and fake features differ in width: ", real_in.size(1),
              " vs ", fake_in_t.size(1));
  const int64_t nr = real_in.size(0), nf = fake_in_t.size(0), dim = real_in.size(1);
  TORCH_CHECK(real_radii.dim() == 1 && real_radii.size(0) == nr, "real_radii must be (", nr, ",), got ",
              real_radii.sizes());
  TORCH_CHECK(fake_radii.dim() == 1 && fake_radii.size(0) == nf, "fake_radii must be (", nf, ",), got ",
              fake_radii.sizes());
  const c10::cuda::CUDAGuard guard(real_in.device());
  auto [r, sqr] = prepare(real_in);
  auto [f, sqf] = prepare(fake_in_t);
  at::Tensor rr2 = real_radii.to(at::kDouble).square().to(at::kFloat).contiguous();
  at::Tensor fr2 = fake_radii.to(at::kDouble).square().to(at::kFloat).contiguous();
  auto iopts = real_in.options().dtype(at::kInt);
  at::Tensor fake_flag = at::zeros({nf}, iopts);
  at::Tensor real_flag = at::empty({nr}, iopts);
  at::Tensor covered = at::empty({nr}, iopts);
  at::Tensor count = at::empty({nr}, iopts);
  const dim3 grid(grid_rows(nr)), block(kThreads);
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto launch = [&](auto kernel) {
    kernel<<<grid, block, 0, stream>>>(r.data_ptr<float>(), f.data_ptr<float>(), sqr.data_ptr<float>(),
                                       sqf.data_ptr<float>(), rr2.data_ptr<float>(), fr2.data_ptr<float>(),
                                       fake_flag.data_ptr<int32_t>(), real_flag.data_ptr<int32_t>(),
                                       covered.data_ptr<int32_t>(), count.data_ptr<int32_t>(), nr, nf, dim);
  };
  if (inclusive) {
    launch(manifold_kernel<true>);
  } else {
    launch(manifold_kernel<false>);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor total = count.sum(at::kLong).to(at::kDouble);
  return {fake_flag.to(at::kBool), real_flag.to(at::kBool), total, covered.to(at::kBool)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("knn_radii", &knn_radii_cuda);
  m.impl("knn_manifold_stats", &manifold_stats_cuda);
}

FASTGAN_REGISTER_FAMILY("knn", "cuda");

}  // namespace fastgan::knn

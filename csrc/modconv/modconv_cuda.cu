// CUDA backend of the modulated-conv / AdaFM-conv family: the `Backend` primitives of modconv.h as CUDA kernels
// (mirroring CpuBackend in modconv.cpp one for one) around one shared-weight cuDNN convolution, and the CUDA
// kernel registrations.
//
// Conventions: every kernel runs on the current PyTorch stream under the caller's device guard, indexes with
// 64-bit integers (or 32-bit only where the whole index range is known to fit), uses grid-stride loops with a
// capped grid (gridDim.x <= kMaxBlocks, so no 32-bit grid overflow), never launches on empty work, accumulates
// in at::opmath_type (float for half/bf16/float, double for double) and reduces deterministically (fixed
// thread-to-element mapping and a fixed shuffle/shared-memory tree; no atomics).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>

#include "common/registry.h"
#include "modconv/modconv.h"

namespace fastgan::modconv {
namespace {

constexpr int kThreads = 256;            // every kernel: 256 threads (a multiple of 32: full-warp shuffles)
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 65536;    // grid-stride loops cover any remainder
constexpr int kVecBytes = 16;            // 128-bit loads / stores on the vectorised paths

// Blocks for `items` work items at `per_block` items per block: at least 1, at most kMaxBlocks.
int grid_for(int64_t items, int64_t per_block) {
  const int64_t b = (items + per_block - 1) / per_block;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(b, 1), kMaxBlocks));
}

bool aligned_to(const void* p, int64_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; }

// ---- device helpers ---------------------------------------------------------------------------------
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
// The CPU's std::max(m, v) == (m < v ? v : m): a NaN never becomes the maximum. Partial maxima are never NaN,
// so combining them in any order gives the CPU's result.
struct MaxOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a < b ? b : a; }
};

// Result in lane 0 (all 32 lanes must call it).
template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
  return v;
}

// Result in thread 0; every thread of the block must call it; blockDim.x a multiple of 32 and <= 1024.
// `smem` holds >= 32 elements; it may be reused as soon as this returns.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T identity, T* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_reduce(v, op);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  T r = identity;
  if (warp == 0) r = warp_reduce(lane < nwarps ? smem[lane] : identity, op);
  __syncthreads();
  return r;
}

template <typename T>
__device__ __forceinline__ T dev_sqrt(T v) {
  if constexpr (std::is_same_v<T, double>) {
    return ::sqrt(v);
  } else {
    return ::sqrtf(v);
  }
}

// Smallest power of two >= m (1 for m == 0 or non-finite m): the CPU's pow2_ceil.
template <typename T>
__device__ __forceinline__ T pow2_ceil_dev(T m) {
  if (!(m > T(0)) || !(static_cast<double>(m) <= DBL_MAX)) return T(1);  // also catches +inf (and NaN)
  int e = 0;
  if constexpr (std::is_same_v<T, double>) {
    const double f = ::frexp(m, &e);  // m = f * 2^e, f in [0.5, 1)
    return ::ldexp(1.0, f == 0.5 ? e - 1 : e);
  } else {
    const float f = ::frexpf(m, &e);
    return ::ldexpf(1.0f, f == 0.5f ? e - 1 : e);
  }
}

// ---- prep kernels -----------------------------------------------------------------------------------
// One block per sample b (grid-stride over samples): sigma[b] = pow2_ceil(max_i |s[b,i]|), pre[b,i] = s[b,i] / sigma[b],
// and, when not demodulating (coef != nullptr), coef[b,o] = sigma[b].
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    prep_sigma_kernel(const scalar_t* __restrict__ s, acc_t* __restrict__ sigma, acc_t* __restrict__ pre,
                      acc_t* __restrict__ coef, int64_t n, int64_t cin, int64_t cout) {
  __shared__ acc_t red[32];
  __shared__ acc_t sig_sh;
  for (int64_t b = blockIdx.x; b < n; b += gridDim.x) {  // uniform across the block
    const scalar_t* sb = s + b * cin;
    acc_t m = 0;
    for (int64_t i = threadIdx.x; i < cin; i += blockDim.x) {
      const acc_t v = static_cast<acc_t>(sb[i]);
      const acc_t a = v < acc_t(0) ? -v : v;
      m = m < a ? a : m;
    }
    m = block_reduce(m, MaxOp{}, acc_t(0), red);
    if (threadIdx.x == 0) {
      sig_sh = pow2_ceil_dev(m);
      sigma[b] = sig_sh;
    }
    __syncthreads();
    const acc_t sg = sig_sh;
    for (int64_t i = threadIdx.x; i < cin; i += blockDim.x) pre[b * cin + i] = static_cast<acc_t>(sb[i]) / sg;
    if (coef != nullptr)
      for (int64_t o = threadIdx.x; o < cout; o += blockDim.x) coef[b * cout + o] = sg;
    __syncthreads();  // everyone has read sig_sh before the next sample overwrites it
  }
}

// q[k] = sum_taps w[k, :]^2 for k = o * cin + i; one thread per (o, i).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    prep_q_kernel(const scalar_t* __restrict__ w, acc_t* __restrict__ q, int64_t rows, int64_t taps) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < rows; k += stride) {
    const scalar_t* wk = w + k * taps;
    acc_t acc = 0;
    for (int64_t t = 0; t < taps; ++t) {
      const acc_t v = static_cast<acc_t>(wk[t]);
      acc += v * v;
    }
    q[k] = acc;
  }
}

// One warp per (b, o): d[b,o] = 1 / sqrt(sum_i s[b,i]^2 q[o,i] + eps), coef[b,o] = sigma[b] * d[b,o].
// Lanes stride over i, so the reads of s[b, :] and q[o, :] are coalesced.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    prep_d_kernel(const scalar_t* __restrict__ s, const acc_t* __restrict__ q, const acc_t* __restrict__ sigma,
                  acc_t* __restrict__ d, acc_t* __restrict__ coef, int64_t n, int64_t cin, int64_t cout, acc_t eps) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = n * cout;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); k < rows; k += stride) {
    // k is uniform across the warp, so the shuffles below see all 32 lanes.
    const int64_t b = k / cout, o = k - b * cout;
    const scalar_t* sb = s + b * cin;
    const acc_t* qo = q + o * cin;
    acc_t acc = 0;
    for (int64_t i = lane; i < cin; i += 32) {
      const acc_t si = static_cast<acc_t>(sb[i]);
      acc += si * si * qo[i];
    }
    acc = warp_reduce(acc, SumOp{});
    if (lane == 0) {
      const acc_t dk = acc_t(1) / dev_sqrt(acc + eps);
      d[k] = dk;
      coef[k] = sigma[b] * dk;
    }
  }
}

// ---- modulate: out[r, :] = x[r, :] * scale[r] for rows r = n * C + c of length hw --------------------
// VEC elements per thread and step (VEC > 1 only when hw % VEC == 0 and both pointers are 16-byte aligned, so a
// pack never straddles two rows). index_t is uint32_t when numel < 2^31 (cheap division), else int64_t.
template <typename scalar_t, int VEC, typename index_t>
__global__ void __launch_bounds__(kThreads)
    modulate_kernel(const scalar_t* __restrict__ x, const at::opmath_type<scalar_t>* __restrict__ scale,
                    scalar_t* __restrict__ out, index_t nvec, index_t hw) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VEC>;
  const P* __restrict__ xp = reinterpret_cast<const P*>(x);
  P* __restrict__ op = reinterpret_cast<P*>(out);
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t v = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < nvec; v += stride) {
    const acc_t f = scale[(v * VEC) / hw];
    P p = xp[v];
#pragma unroll
    for (int j = 0; j < VEC; ++j) p.v[j] = static_cast<scalar_t>(static_cast<acc_t>(p.v[j]) * f);
    op[v] = p;
  }
}

// ---- channel_dot: out[r] = sum_t a[r, t] * b[r, t] over rows of length hw ------------------------------
// TPR threads per row: 32 (a warp per row, kWarps rows per block) for short rows, kThreads (a block per row) for
// long ones. The loop over row groups is uniform across the block, so the shuffles and barriers are safe.
template <typename scalar_t, int VEC, int TPR>
__global__ void __launch_bounds__(kThreads)
    channel_dot_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                       at::opmath_type<scalar_t>* __restrict__ out, int64_t rows, int64_t hw) {
  static_assert(TPR == 32 || TPR == kThreads, "a warp or a block per row");
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VEC>;
  constexpr int kRowsPerBlock = kThreads / TPR;
  __shared__ acc_t red[32];
  const int t = threadIdx.x % TPR;
  const int64_t nv = hw / VEC;  // exact: VEC > 1 only when VEC divides hw
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock; base < rows;
       base += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t row = base + threadIdx.x / TPR;
    acc_t acc = 0;
    if (row < rows) {
      const P* __restrict__ pa = reinterpret_cast<const P*>(a + row * hw);
      const P* __restrict__ pb = reinterpret_cast<const P*>(b + row * hw);
      for (int64_t v = t; v < nv; v += TPR) {
        const P x = pa[v], y = pb[v];
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc += static_cast<acc_t>(x.v[j]) * static_cast<acc_t>(y.v[j]);
      }
    }
    if constexpr (TPR == 32) {
      acc = warp_reduce(acc, SumOp{});
      if (t == 0 && row < rows) out[row] = acc;
    } else {
      acc = block_reduce(acc, SumOp{}, acc_t(0), red);
      if (threadIdx.x == 0) out[row] = acc;  // row == base < rows here
    }
  }
}

// ---- AdaFM -----------------------------------------------------------------------------------------
// W'[e] = gamma[k] * W[e] + beta[k] with k = e / taps; flat over the weight, one element per thread and step.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    adafm_weight_kernel(const scalar_t* __restrict__ w, const scalar_t* __restrict__ gamma,
                        const scalar_t* __restrict__ beta, scalar_t* __restrict__ out, index_t numel, index_t taps) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < numel; e += stride) {
    const index_t k = e / taps;
    out[e] = static_cast<scalar_t>(static_cast<acc_t>(gamma[k]) * static_cast<acc_t>(w[e]) +
                                   static_cast<acc_t>(beta[k]));
  }
}

// One thread per (o, i): gw = dW' * gamma, gg = sum_taps dW' * W, gb = sum_taps dW' (null outputs are skipped).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    adafm_reduce_kernel(const scalar_t* __restrict__ dwp, const scalar_t* __restrict__ w,
                        const scalar_t* __restrict__ gamma, scalar_t* __restrict__ gw, scalar_t* __restrict__ gg,
                        scalar_t* __restrict__ gb, int64_t rows, int64_t taps) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < rows; k += stride) {
    const acc_t g = static_cast<acc_t>(gamma[k]);
    acc_t sg = 0, sb = 0;
    for (int64_t t = 0; t < taps; ++t) {
      const int64_t e = k * taps + t;
      const acc_t dv = static_cast<acc_t>(dwp[e]);
      sg += dv * static_cast<acc_t>(w[e]);
      sb += dv;
      if (gw != nullptr) gw[e] = static_cast<scalar_t>(dv * g);
    }
    if (gg != nullptr) gg[k] = static_cast<scalar_t>(sg);
    if (gb != nullptr) gb[k] = static_cast<scalar_t>(sb);
  }
}

// ---- host-side launchers ------------------------------------------------------------------------------
template <typename scalar_t, int VEC>
void launch_modulate(const scalar_t* x, const at::opmath_type<scalar_t>* scale, scalar_t* out, int64_t numel,
                     int64_t hw, cudaStream_t stream) {
  const int64_t nvec = numel / VEC;
  const int grid = grid_for(nvec, kThreads);
  if (numel <= std::numeric_limits<int32_t>::max()) {
    modulate_kernel<scalar_t, VEC, uint32_t><<<grid, kThreads, 0, stream>>>(
        x, scale, out, static_cast<uint32_t>(nvec), static_cast<uint32_t>(hw));
  } else {
    modulate_kernel<scalar_t, VEC, int64_t><<<grid, kThreads, 0, stream>>>(x, scale, out, nvec, hw);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int VEC>
void launch_channel_dot(const scalar_t* a, const scalar_t* b, at::opmath_type<scalar_t>* out, int64_t rows,
                        int64_t hw, cudaStream_t stream) {
  if (hw / VEC >= 4 * kThreads) {  // long rows: a block per row
    channel_dot_kernel<scalar_t, VEC, kThreads><<<grid_for(rows, 1), kThreads, 0, stream>>>(a, b, out, rows, hw);
  } else {  // short rows: a warp per row
    channel_dot_kernel<scalar_t, VEC, 32><<<grid_for(rows, kWarps), kThreads, 0, stream>>>(a, b, out, rows, hw);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

struct CudaBackend {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CUDA;
  struct Guard {
    explicit Guard(c10::Device device) : guard(device) {}
    c10::cuda::CUDAGuard guard;
  };

  static Prep prep(const at::Tensor& weight, const at::Tensor& styles, bool demodulate, double eps) {
    const int64_t n = styles.size(0), cin = styles.size(1), cout = weight.size(0);
    const int64_t taps = weight.size(2) * weight.size(3);
    TORCH_INTERNAL_ASSERT(weight.is_contiguous() && styles.is_contiguous());
    Prep p = Prep::allocate(weight, styles, demodulate);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, styles.scalar_type(), "modconv_prep_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* s = styles.const_data_ptr<scalar_t>();
      const scalar_t* w = weight.const_data_ptr<scalar_t>();
      acc_t* sigma = p.sigma.mutable_data_ptr<acc_t>();
      acc_t* pre = p.pre.mutable_data_ptr<acc_t>();
      acc_t* coef = p.coef.mutable_data_ptr<acc_t>();
      if (n > 0) {
        prep_sigma_kernel<scalar_t, acc_t><<<grid_for(n, 1), kThreads, 0, stream>>>(
            s, sigma, pre, demodulate ? nullptr : coef, n, cin, cout);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (!demodulate) return;
      acc_t* q = p.q.mutable_data_ptr<acc_t>();
      acc_t* d = p.d.mutable_data_ptr<acc_t>();
      if (cout * cin > 0) {
        prep_q_kernel<scalar_t, acc_t><<<grid_for(cout * cin, kThreads), kThreads, 0, stream>>>(w, q, cout * cin,
                                                                                                  taps);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (n * cout > 0) {
        prep_d_kernel<scalar_t, acc_t><<<grid_for(n * cout, kWarps), kThreads, 0, stream>>>(
            s, q, sigma, d, coef, n, cin, cout, static_cast<acc_t>(eps));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
    return p;
  }

  // out[n, c, :, :] = x[n, c, :, :] * scale[n, c]; x NCHW (made contiguous), scale (N, C) in the op-math dtype.
  static at::Tensor modulate(const at::Tensor& x_in, const at::Tensor& scale) {
    const at::Tensor x = x_in.contiguous();
    TORCH_INTERNAL_ASSERT(x.dim() == 4 && scale.is_contiguous() && scale.scalar_type() == acc_dtype(x.scalar_type()) &&
                          scale.numel() == x.size(0) * x.size(1));
    at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
    const int64_t numel = x.numel(), hw = x.size(2) * x.size(3);
    if (numel == 0) return out;
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "modconv_modulate_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      constexpr int kVec = kVecBytes / static_cast<int>(sizeof(scalar_t));
      const scalar_t* src = x.const_data_ptr<scalar_t>();
      const acc_t* sc = scale.const_data_ptr<acc_t>();
      scalar_t* dst = out.mutable_data_ptr<scalar_t>();
      if (hw % kVec == 0 && aligned_to(src, kVecBytes) && aligned_to(dst, kVecBytes)) {
        launch_modulate<scalar_t, kVec>(src, sc, dst, numel, hw, stream);
      } else {
        launch_modulate<scalar_t, 1>(src, sc, dst, numel, hw, stream);
      }
    });
    return out;
  }

  // (N, C) op-math sum over H, W of a * b; a and b NCHW of one shape (made contiguous).
  static at::Tensor channel_dot(const at::Tensor& a_in, const at::Tensor& b_in) {
    TORCH_INTERNAL_ASSERT(a_in.dim() == 4 && a_in.sizes() == b_in.sizes() &&
                          a_in.scalar_type() == b_in.scalar_type());
    const at::Tensor a = a_in.contiguous(), b = b_in.contiguous();
    const int64_t n = a.size(0), c = a.size(1), hw = a.size(2) * a.size(3);
    at::Tensor out = at::empty({n, c}, a.options().dtype(acc_dtype(a.scalar_type())));
    const int64_t rows = n * c;
    if (rows == 0) return out;
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "modconv_channel_dot_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      constexpr int kVec = kVecBytes / static_cast<int>(sizeof(scalar_t));
      const scalar_t* pa = a.const_data_ptr<scalar_t>();
      const scalar_t* pb = b.const_data_ptr<scalar_t>();
      acc_t* po = out.mutable_data_ptr<acc_t>();
      if (hw % kVec == 0 && aligned_to(pa, kVecBytes) && aligned_to(pb, kVecBytes)) {
        launch_channel_dot<scalar_t, kVec>(pa, pb, po, rows, hw, stream);
      } else {
        launch_channel_dot<scalar_t, 1>(pa, pb, po, rows, hw, stream);
      }
    });
    return out;
  }

  // W'[o, i, :, :] = gamma[o, i] * W[o, i, :, :] + beta[o, i]
  static at::Tensor adafm_weight(const at::Tensor& w, const at::Tensor& gamma, const at::Tensor& beta) {
    TORCH_INTERNAL_ASSERT(w.is_contiguous() && gamma.is_contiguous() && beta.is_contiguous());
    at::Tensor out = at::empty_like(w, at::MemoryFormat::Contiguous);
    const int64_t numel = w.numel(), taps = w.size(2) * w.size(3);
    if (numel == 0) return out;
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "adafm_weight_cuda", [&] {
      const scalar_t* pw = w.const_data_ptr<scalar_t>();
      const scalar_t* pg = gamma.const_data_ptr<scalar_t>();
      const scalar_t* pb = beta.const_data_ptr<scalar_t>();
      scalar_t* po = out.mutable_data_ptr<scalar_t>();
      const int grid = grid_for(numel, kThreads);
      if (numel <= std::numeric_limits<int32_t>::max()) {
        adafm_weight_kernel<scalar_t, uint32_t><<<grid, kThreads, 0, stream>>>(
            pw, pg, pb, po, static_cast<uint32_t>(numel), static_cast<uint32_t>(taps));
      } else {
        adafm_weight_kernel<scalar_t, int64_t><<<grid, kThreads, 0, stream>>>(pw, pg, pb, po, numel, taps);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return out;
  }

  // From dW': grad_weight = dW' * gamma, grad_gamma = sum_taps dW' * W, grad_beta = sum_taps dW'.
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> adafm_reduce(const at::Tensor& gwp_in, const at::Tensor& w,
                                                                     const at::Tensor& gamma, bool need_w,
                                                                     bool need_g, bool need_b) {
    const at::Tensor gwp = gwp_in.contiguous();
    TORCH_INTERNAL_ASSERT(w.is_contiguous() && gamma.is_contiguous() && gwp.sizes() == w.sizes() &&
                          gwp.scalar_type() == w.scalar_type());
    const int64_t oi = w.size(0) * w.size(1), taps = w.size(2) * w.size(3);
    at::Tensor gw = need_w ? at::empty_like(w, at::MemoryFormat::Contiguous) : empty_grad(w);
    at::Tensor gg = need_g ? at::empty_like(gamma, at::MemoryFormat::Contiguous) : empty_grad(w);
    at::Tensor gb = need_b ? at::empty_like(gamma, at::MemoryFormat::Contiguous) : empty_grad(w);
    if (oi == 0 || !(need_w || need_g || need_b)) return {gw, gg, gb};
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "adafm_reduce_cuda", [&] {
      const scalar_t* pd = gwp.const_data_ptr<scalar_t>();
      const scalar_t* pw = w.const_data_ptr<scalar_t>();
      const scalar_t* pg = gamma.const_data_ptr<scalar_t>();
      scalar_t* ow = need_w ? gw.mutable_data_ptr<scalar_t>() : nullptr;
      scalar_t* og = need_g ? gg.mutable_data_ptr<scalar_t>() : nullptr;
      scalar_t* ob = need_b ? gb.mutable_data_ptr<scalar_t>() : nullptr;
      adafm_reduce_kernel<scalar_t><<<grid_for(oi, kThreads), kThreads, 0, stream>>>(pd, pw, pg, ow, og, ob, oi,
                                                                                    taps);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {gw, gg, gb};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) { register_backend<CudaBackend>(m); }

FASTGAN_REGISTER_FAMILY("modconv", "cuda");

}  // namespace fastgan::modconv

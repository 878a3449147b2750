// CUDA backend of the fused vision-backbone preprocessing, and the CUDA kernel registrations. The scheme is the
// Triton kernels' (kernels/vision_preprocess.py): no native-resolution intermediate.
//   forward   mean_partial_kernel (contrast only): per (image, chunk of pixels) a float64 block sum of y2
//             (brightness + saturation), finished per image by finish_mean_kernel (partials added in order);
//             forward_kernel: one thread per output element walks its pooling window, maps each window pixel back
//             through cutout and translation, loads the C channels of the source pixel (saturation mean), applies the
//             colour ops and accumulates x * 0.5 + 0.5; then averages and normalises.
//   backward  grad_partial_kernel (contrast only): per (image, chunk) float64 block sums of the gradient g3 at the
//             translation output; backward_kernel: one thread per native pixel gathers, per channel, the output cells
//             whose windows hold the translated source pixel (weight 1 / window size, times 0.5 / std_c), then applies
//             the contrast and saturation adjoints.
// Conventions (as the other families): current PyTorch stream under a device guard, 64-bit element indices,
// grid-stride loops with a capped grid, accumulation in at::opmath_type, deterministic reductions (fixed mapping,
// shuffle + shared-memory tree, partials added in order; no atomics).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/registry.h"
#include "vision_preprocess/vision_preprocess.h"

namespace fastgan::vision {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;
constexpr int64_t kChunk = int64_t(1) << 14;  // native pixels per partial sum

int grid_for(int64_t items) {
  const int64_t b = (items + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min(b, kMaxBlocks)));
}

// Sum of v over the block (kThreads threads); the result is valid in thread 0.
__device__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? warp_sums[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

struct Geometry {
  int64_t c, h, w, oh, ow;
};

// y2 (brightness, then saturation) of channel c at native offset off of one image.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t colour(const scalar_t* xn, int64_t hw, int64_t off, int64_t channels, int64_t c,
                                        acc_t b, acc_t s, bool bright, bool sat) {
  acc_t tot = 0, vc = 0;
  for (int64_t cc = 0; cc < channels; ++cc) {
    acc_t v = static_cast<acc_t>(xn[cc * hw + off]);
    if (bright) v = v + b;
    tot += v;
    if (cc == c) vc = v;
  }
  if (sat) {
    const acc_t m = tot / static_cast<acc_t>(channels);
    vc = (vc - m) * s + m;
  }
  return vc;
}

template <typename scalar_t, typename acc_t>
__global__ void mean_partial_kernel(const scalar_t* __restrict__ x, const double* __restrict__ tab,
                                    double* __restrict__ part, Geometry g, int64_t splits, int64_t flags) {
  const int64_t n = blockIdx.x / splits, sp = blockIdx.x % splits;
  const int64_t hw = g.h * g.w;
  const Params prm = load_params(tab + n * kCols);
  const bool bright = flags & kBrightness, sat = flags & kSaturation;
  const acc_t b = static_cast<acc_t>(prm.b), s = static_cast<acc_t>(prm.s);
  const scalar_t* xn = x + n * g.c * hw;
  const int64_t lo = sp * kChunk, hi = lo + kChunk < hw ? lo + kChunk : hw;
  double acc = 0;
  for (int64_t t = lo + threadIdx.x; t < hi; t += blockDim.x) {
    acc_t tot = 0;
    for (int64_t cc = 0; cc < g.c; ++cc) {
      acc_t v = static_cast<acc_t>(xn[cc * hw + t]);
      if (bright) v = v + b;
      tot += v;
    }
    if (sat) {
      const acc_t m = tot / static_cast<acc_t>(g.c);
      acc_t t2 = 0;
      for (int64_t cc = 0; cc < g.c; ++cc) {
        acc_t v = static_cast<acc_t>(xn[cc * hw + t]);
        if (bright) v = v + b;
        t2 += (v - m) * s + m;
      }
      tot = t2;
    }
    acc += static_cast<double>(tot);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) part[n * splits + sp] = acc;
}

// out[n] = sum of part[n, :] (in order) * scale.
__global__ void finish_sum_kernel(const double* __restrict__ part, double* __restrict__ out, int64_t n_items,
                                  int64_t splits, double scale) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_items; n += int64_t(gridDim.x) * blockDim.x) {
    double acc = 0;
    for (int64_t sp = 0; sp < splits; ++sp) acc += part[n * splits + sp];
    out[n] = acc * scale;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const double* __restrict__ tab,
                               const double* __restrict__ cmean, const double* __restrict__ stats,
                               scalar_t* __restrict__ out, Geometry g, int64_t total, int64_t flags) {
  const int64_t hw = g.h * g.w;
  const bool bright = flags & kBrightness, sat = flags & kSaturation, con = flags & kContrast;
  const bool trans = flags & kTranslation, cut = flags & kCutout;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = idx % g.ow;
    int64_t t = idx / g.ow;
    const int64_t p = t % g.oh;
    t /= g.oh;
    const int64_t c = t % g.c, n = t / g.c;
    const Params prm = load_params(tab + n * kCols);
    const acc_t b = static_cast<acc_t>(prm.b), s = static_cast<acc_t>(prm.s), k = static_cast<acc_t>(prm.k);
    const acc_t m = con ? static_cast<acc_t>(cmean[n]) : acc_t(0);
    const int64_t ty = trans ? prm.ty : 0, tx = trans ? prm.tx : 0;
    const scalar_t* xn = x + n * g.c * hw;
    const int64_t i0 = win_start(p, g.h, g.oh), i1 = win_end(p, g.h, g.oh);
    const int64_t j0 = win_start(q, g.w, g.ow), j1 = win_end(q, g.w, g.ow);
    acc_t acc = 0;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t si = i + ty;
      const bool row_ok = si >= 0 && si < g.h;
      const bool row_cut = cut && i >= prm.y0 && i < prm.y1;
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t sj = j + tx;
        acc_t y = 0;
        if (row_ok && sj >= 0 && sj < g.w && !(row_cut && j >= prm.x0 && j < prm.x1)) {
          y = colour<scalar_t, acc_t>(xn, hw, si * g.w + sj, g.c, c, b, s, bright, sat);
          if (con) y = (y - m) * k + m;
        }
        acc += y * acc_t(0.5) + acc_t(0.5);
      }
    }
    const acc_t cnt = static_cast<acc_t>((i1 - i0) * (j1 - j0));
    const acc_t mc = static_cast<acc_t>(stats[c]), sc = static_cast<acc_t>(stats[g.c + c]);
    out[idx] = static_cast<scalar_t>((acc / cnt - mc) / sc);
  }
}

// Gradient at the translation output for native pixel (a, bb) of channel plane gc (the output gradient of (n, c)).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t grad3(const scalar_t* gc, acc_t sc, int64_t a, int64_t bb, const Geometry& g,
                                       const Params& prm, bool trans, bool cut) {
  const int64_t i = trans ? a - prm.ty : a, j = trans ? bb - prm.tx : bb;
  if (i < 0 || i >= g.h || j < 0 || j >= g.w || (cut && in_cutout(prm, i, j))) return acc_t(0);
  const int64_t p0 = cover_lo(i, g.h, g.oh), p1 = cover_hi(i, g.h, g.oh);
  const int64_t q0 = cover_lo(j, g.w, g.ow), q1 = cover_hi(j, g.w, g.ow);
  acc_t acc = 0;
  for (int64_t p = p0; p <= p1; ++p) {
    const int64_t hc = win_end(p, g.h, g.oh) - win_start(p, g.h, g.oh);
    for (int64_t q = q0; q <= q1; ++q) {
      const int64_t wc = win_end(q, g.w, g.ow) - win_start(q, g.w, g.ow);
      acc += static_cast<acc_t>(gc[p * g.ow + q]) / sc / static_cast<acc_t>(hc * wc);
    }
  }
  return acc * acc_t(0.5);
}

template <typename scalar_t, typename acc_t>
__global__ void grad_partial_kernel(const scalar_t* __restrict__ grad, const double* __restrict__ tab,
                                    const double* __restrict__ stds, double* __restrict__ part, Geometry g,
                                    int64_t splits, int64_t flags) {
  const int64_t n = blockIdx.x / splits, sp = blockIdx.x % splits;
  const int64_t hw = g.h * g.w, ohw = g.oh * g.ow;
  const Params prm = load_params(tab + n * kCols);
  const bool trans = flags & kTranslation, cut = flags & kCutout;
  const int64_t lo = sp * kChunk, hi = lo + kChunk < hw ? lo + kChunk : hw;
  double acc = 0;
  for (int64_t t = lo + threadIdx.x; t < hi; t += blockDim.x) {
    const int64_t a = t / g.w, bb = t % g.w;
    acc_t tot = 0;
    for (int64_t cc = 0; cc < g.c; ++cc)
      tot += grad3<scalar_t, acc_t>(grad + (n * g.c + cc) * ohw, static_cast<acc_t>(stds[cc]), a, bb, g, prm, trans,
                                    cut);
    acc += static_cast<double>(tot);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) part[n * splits + sp] = acc;
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad, const double* __restrict__ tab,
                                const double* __restrict__ stds, const double* __restrict__ gmean,
                                scalar_t* __restrict__ gx, Geometry g, int64_t total, int64_t flags) {
  const int64_t hw = g.h * g.w, ohw = g.oh * g.ow;
  const bool sat = flags & kSaturation, con = flags & kContrast;
  const bool trans = flags & kTranslation, cut = flags & kCutout;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = idx / hw, t = idx % hw, a = t / g.w, bb = t % g.w;
    const Params prm = load_params(tab + n * kCols);
    const acc_t s = static_cast<acc_t>(prm.s), k = static_cast<acc_t>(prm.k);
    const acc_t gm = con ? static_cast<acc_t>(gmean[n]) : acc_t(0);
    acc_t tot = 0;
    if (sat) {
      for (int64_t cc = 0; cc < g.c; ++cc) {
        acc_t v = grad3<scalar_t, acc_t>(grad + (n * g.c + cc) * ohw, static_cast<acc_t>(stds[cc]), a, bb, g, prm,
                                         trans, cut);
        if (con) v = v * k + (acc_t(1) - k) * gm;
        tot += v;
      }
    }
    const acc_t mean_c = tot / static_cast<acc_t>(g.c);
    for (int64_t cc = 0; cc < g.c; ++cc) {
      acc_t v = grad3<scalar_t, acc_t>(grad + (n * g.c + cc) * ohw, static_cast<acc_t>(stds[cc]), a, bb, g, prm,
                                       trans, cut);
      if (con) v = v * k + (acc_t(1) - k) * gm;
      if (sat) v = v * s + (acc_t(1) - s) * mean_c;
      gx[(n * g.c + cc) * hw + t] = static_cast<scalar_t>(v);
    }
  }
}

// Per-channel constants on the device: [mean..., std...] (or [std...]), float64.
at::Tensor device_stats(const std::vector<double>& v, const at::Tensor& like) {
  at::Tensor host = at::empty({static_cast<int64_t>(v.size())}, like.options().dtype(at::kDouble).device(at::kCPU));
  std::copy(v.begin(), v.end(), host.mutable_data_ptr<double>());
  return host.to(like.device());
}

at::Tensor vision_preprocess_cuda(const at::Tensor& x_in, const at::Tensor& table_in, int64_t flags, int64_t out_h,
                                  int64_t out_w, c10::ArrayRef<double> mean, c10::ArrayRef<double> std) {
  check_forward_args(x_in, table_in, flags, out_h, out_w, mean, std, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor table = table_in.contiguous();
  const Geometry g{x.size(1), x.size(2), x.size(3), out_h, out_w};
  const int64_t n = x.size(0);
  at::Tensor out = at::empty({n, g.c, out_h, out_w}, x.options());
  if (out.numel() == 0) return out;
  std::vector<double> st(mean.begin(), mean.end());
  st.insert(st.end(), std.begin(), std.end());
  const at::Tensor stats = device_stats(st, x);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t hw = g.h * g.w, splits = (hw + kChunk - 1) / kChunk;
  at::Tensor part, cmean;
  if (flags & kContrast) {
    part = at::empty({n, splits}, x.options().dtype(at::kDouble));
    cmean = at::empty({n}, x.options().dtype(at::kDouble));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "vision_preprocess_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const double* pt = table.const_data_ptr<double>();
    const double* pm = nullptr;
    if (flags & kContrast) {
      mean_partial_kernel<scalar_t, acc_t><<<static_cast<unsigned>(n * splits), kThreads, 0, stream>>>(
          px, pt, part.mutable_data_ptr<double>(), g, splits, flags);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      finish_sum_kernel<<<grid_for(n), kThreads, 0, stream>>>(part.const_data_ptr<double>(),
                                                              cmean.mutable_data_ptr<double>(), n, splits,
                                                              1.0 / static_cast<double>(g.c * hw));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      pm = cmean.const_data_ptr<double>();
    }
    const int64_t total = out.numel();
    forward_kernel<scalar_t, acc_t><<<grid_for(total), kThreads, 0, stream>>>(
        px, pt, pm, stats.const_data_ptr<double>(), out.mutable_data_ptr<scalar_t>(), g, total, flags);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor vision_preprocess_backward_cuda(const at::Tensor& grad_in, const at::Tensor& table_in, int64_t flags,
                                           int64_t height, int64_t width, c10::ArrayRef<double> std) {
  check_backward_args(grad_in, table_in, flags, height, width, std, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor table = table_in.contiguous();
  const Geometry g{grad.size(1), height, width, grad.size(2), grad.size(3)};
  const int64_t n = grad.size(0);
  at::Tensor gx = at::empty({n, g.c, height, width}, grad.options());
  if (gx.numel() == 0) return gx;
  const at::Tensor stds = device_stats(std::vector<double>(std.begin(), std.end()), grad);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t hw = g.h * g.w, splits = (hw + kChunk - 1) / kChunk;
  at::Tensor part, gmean;
  if (flags & kContrast) {
    part = at::empty({n, splits}, grad.options().dtype(at::kDouble));
    gmean = at::empty({n}, grad.options().dtype(at::kDouble));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "vision_preprocess_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    const double* pt = table.const_data_ptr<double>();
    const double* pm = nullptr;
    if (flags & kContrast) {
      grad_partial_kernel<scalar_t, acc_t><<<static_cast<unsigned>(n * splits), kThreads, 0, stream>>>(
          pg, pt, stds.const_data_ptr<double>(), part.mutable_data_ptr<double>(), g, splits, flags);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      finish_sum_kernel<<<grid_for(n), kThreads, 0, stream>>>(part.const_data_ptr<double>(),
                                                              gmean.mutable_data_ptr<double>(), n, splits,
                                                              1.0 / static_cast<double>(g.c * hw));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      pm = gmean.const_data_ptr<double>();
    }
    const int64_t total = n * hw;
    backward_kernel<scalar_t, acc_t><<<grid_for(total), kThreads, 0, stream>>>(
        pg, pt, stds.const_data_ptr<double>(), pm, gx.mutable_data_ptr<scalar_t>(), g, total, flags);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("vision_preprocess", &vision_preprocess_cuda);
  m.impl("vision_preprocess_backward", &vision_preprocess_backward_cuda);
}

FASTGAN_REGISTER_FAMILY("vision", "cuda");

}  // namespace fastgan::vision

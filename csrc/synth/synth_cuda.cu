// CUDA backend of the synth family (spectral field, min-max quantisation, shape rasterisation), mirroring
// synth.cpp one for one around the shared per-element functions of synth.h, and the CUDA kernel registrations.
//
// Conventions (as modconv_cuda.cu): every kernel runs on the current PyTorch stream under the caller's device
// guard, indexes with 64-bit integers (or 32-bit only where the whole index range is known to fit), uses
// grid-stride loops with a capped grid, never launches on empty work, and is deterministic (fixed reduction trees,
// no atomics).
//
//   synth_spectral_field   one thread per half-spectrum bin, float2 (re, im) stores in bin order (coalesced).
//   synth_minmax_quantize  two kernels over (image, part) work items: per-part min / max partials, then each block
//                          of the quantise pass re-reduces its image's few partials before quantising its part.
//   rasterize_shapes       a tiny kernel prepares every shape row once (ShapeRec: kind, colours, float64 geometry,
//                          conservative pixel box); the raster kernel runs one block per (image, 32x8 pixel tile),
//                          takes the image's shapes in chunks of 256 from the last, culls them against the tile by
//                          their box, compacts the survivors (last first) into shared memory, and every pixel walks
//                          that list until all of its channels are painted; the block leaves as soon as every pixel
//                          of the tile is done.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/registry.h"
#include "synth/synth.h"

namespace fastgan::synth {
namespace {

constexpr int kThreads = 256;  // every kernel: 256 threads (a multiple of 32: full-warp shuffles and ballots)
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 65536;          // grid-stride kernels
constexpr int64_t kMaxTileBlocks = 1 << 24;    // raster kernel (one tile per block up to this many tiles)
constexpr int kTileW = 32, kTileH = kThreads / kTileW;  // raster tile: one warp per tile row
constexpr int kVec = 4;                        // quantise: float4 loads, uchar4 stores

int grid_for(int64_t items, int64_t per_block, int64_t cap = kMaxBlocks) {
  const int64_t b = (items + per_block - 1) / per_block;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(b, 1), cap));
}

bool aligned_to(const void* p, int64_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; }

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// ---- synth_spectral_field ------------------------------------------------------------------------------------
// Bin idx = ((img * C + c) * size + i) * wh + j, in output order. index_t is uint32_t when there are fewer than
// 2^32 bins (cheap division), else int64_t.
template <typename index_t>
__global__ void __launch_bounds__(kThreads)
    spectral_field_kernel(const int64_t* __restrict__ keys, const float* __restrict__ exps, float2* __restrict__ out,
                          index_t total, index_t size, index_t wh, index_t channels, float inv) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t idx = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const index_t j = idx % wh, row = idx / wh;
    const index_t i = row % size, ic = row / size;  // ic = img * channels + c
    const index_t img = ic / channels, c = ic % channels;
    const uint32_t k0 = static_cast<uint32_t>(__ldg(keys + 2 * img));
    const uint32_t k1 = static_cast<uint32_t>(__ldg(keys + 2 * img + 1));
    const float a = __ldg(exps + 2 * ic), b = __ldg(exps + 2 * ic + 1);
    float re, im;
    spectral_bin(k0, k1, static_cast<int64_t>(c), static_cast<int64_t>(i), static_cast<int64_t>(j),
                 static_cast<int64_t>(size), static_cast<int64_t>(wh), re, im);
    const float fi = spectral_freq(static_cast<int64_t>(i), static_cast<int64_t>(size), inv);
    const float fj = spectral_freq(static_cast<int64_t>(j), static_cast<int64_t>(size), inv);
    const float w = __fdiv_rn(1.0f, __fadd_rn(spectral_term(fi, a), spectral_term(fj, b)));
    out[idx] = make_float2(__fmul_rn(re, w), __fmul_rn(im, w));
  }
}

at::Tensor spectral_field_cuda(const at::Tensor& keys_in, const at::Tensor& exps_in, int64_t size) {
  check_field_args(keys_in, exps_in, size, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(exps_in.device());
  const at::Tensor keys = keys_in.contiguous(), exps = exps_in.contiguous();
  const int64_t n = exps.size(0), channels = exps.size(1), wh = size / 2 + 1;
  at::Tensor out = at::empty({n, channels, size, wh, 2}, exps.options());
  const int64_t total = n * channels * size * wh;
  if (total == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const float inv = 5.0f / static_cast<float>(size);
  const int64_t* pk = keys.const_data_ptr<int64_t>();
  const float* pe = exps.const_data_ptr<float>();
  float2* po = reinterpret_cast<float2*>(out.mutable_data_ptr<float>());  // fresh allocation: 8-byte aligned
  const int grid = grid_for(total, kThreads);
  if (total <= static_cast<int64_t>(std::numeric_limits<uint32_t>::max()) - int64_t(kThreads) * kMaxBlocks) {
    spectral_field_kernel<uint32_t><<<grid, kThreads, 0, stream>>>(
        pk, pe, po, static_cast<uint32_t>(total), static_cast<uint32_t>(size), static_cast<uint32_t>(wh),
        static_cast<uint32_t>(channels), inv);
  } else {
    spectral_field_kernel<int64_t><<<grid, kThreads, 0, stream>>>(pk, pe, po, total, size, wh, channels, inv);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// ---- synth_minmax_quantize -----------------------------------------------------------------------------------
// Both kernels see an image as len_v packs of V floats, split into `parts` runs of chunk_v packs; work item
// t = b * parts + p. V = kVec only when the image length is a multiple of kVec and x is 16-byte aligned.

// NaN-propagating (min, max) of the block, in every thread. `smin` / `smax` hold >= kWarps floats.
__device__ __forceinline__ void block_minmax(float& mn, float& mx, float* smin, float* smax) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    mn = nan_min(mn, __shfl_xor_sync(0xffffffffu, mn, off));
    mx = nan_max(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    smin[warp] = mn;
    smax[warp] = mx;
  }
  __syncthreads();
  mn = smin[0];
  mx = smax[0];
#pragma unroll
  for (int k = 1; k < kWarps; ++k) {
    mn = nan_min(mn, smin[k]);
    mx = nan_max(mx, smax[k]);
  }
  __syncthreads();  // smin / smax may be reused as soon as this returns
}

template <int V>
__global__ void __launch_bounds__(kThreads)
    minmax_partial_kernel(const float* __restrict__ x, float2* __restrict__ part, int64_t items, int64_t parts,
                          int64_t len_v, int64_t chunk_v) {
  __shared__ float smin[kWarps], smax[kWarps];
  using P = Pack<float, V>;
  for (int64_t t = blockIdx.x; t < items; t += gridDim.x) {  // uniform across the block
    const int64_t b = t / parts, p = t - b * parts;
    const P* __restrict__ v = reinterpret_cast<const P*>(x) + b * len_v;
    const int64_t e1 = (p + 1) * chunk_v < len_v ? (p + 1) * chunk_v : len_v;
    float mn = INFINITY, mx = -INFINITY;
    for (int64_t e = p * chunk_v + threadIdx.x; e < e1; e += blockDim.x) {
      const P pk = v[e];
#pragma unroll
      for (int q = 0; q < V; ++q) {
        mn = nan_min(mn, pk.v[q]);
        mx = nan_max(mx, pk.v[q]);
      }
    }
    block_minmax(mn, mx, smin, smax);
    if (threadIdx.x == 0) part[t] = make_float2(mn, mx);
  }
}

template <int V>
__global__ void __launch_bounds__(kThreads)
    quantize_kernel(const float* __restrict__ x, const float2* __restrict__ part, uint8_t* __restrict__ out,
                    int64_t items, int64_t parts, int64_t len_v, int64_t chunk_v) {
  __shared__ float smin[kWarps], smax[kWarps];
  using P = Pack<float, V>;
  using Q = Pack<uint8_t, V>;
  for (int64_t t = blockIdx.x; t < items; t += gridDim.x) {
    const int64_t b = t / parts, p = t - b * parts;
    // Second stage of the reduction: this image's `parts` partials (a few dozen at most).
    float mn = INFINITY, mx = -INFINITY;
    for (int64_t k = threadIdx.x; k < parts; k += blockDim.x) {
      const float2 pm = part[b * parts + k];
      mn = nan_min(mn, pm.x);
      mx = nan_max(mx, pm.y);
    }
    block_minmax(mn, mx, smin, smax);
    const float rng = __fsub_rn(mx, mn);
    const P* __restrict__ v = reinterpret_cast<const P*>(x) + b * len_v;
    Q* __restrict__ o = reinterpret_cast<Q*>(out) + b * len_v;
    const int64_t e1 = (p + 1) * chunk_v < len_v ? (p + 1) * chunk_v : len_v;
    for (int64_t e = p * chunk_v + threadIdx.x; e < e1; e += blockDim.x) {
      const P pk = v[e];
      Q q;
#pragma unroll
      for (int k = 0; k < V; ++k) q.v[k] = quantize_one(pk.v[k], mn, rng);
      o[e] = q;
    }
  }
}

template <int V>
void launch_minmax_quantize(const float* x, uint8_t* out, float2* part, int64_t n, int64_t len_v, int64_t chunk_v,
                            int64_t parts, cudaStream_t stream) {
  const int64_t items = n * parts;
  minmax_partial_kernel<V><<<grid_for(items, 1), kThreads, 0, stream>>>(x, part, items, parts, len_v, chunk_v);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  quantize_kernel<V><<<grid_for(items, 1), kThreads, 0, stream>>>(x, part, out, items, parts, len_v, chunk_v);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor minmax_quantize_cuda(const at::Tensor& x_in) {
  check_quantize_args(x_in, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kByte));
  if (x.numel() == 0) return out;
  const int64_t n = x.size(0), len = x.numel() / n;
  const float* px = x.const_data_ptr<float>();
  uint8_t* po = out.mutable_data_ptr<uint8_t>();
  const bool vec = len % kVec == 0 && aligned_to(px, 16) && aligned_to(po, kVec);
  const int64_t v = vec ? kVec : 1;
  const int64_t len_v = len / v;
  // About 8 packs per thread per part, at most 1024 parts per image (the quantise pass re-reads them all).
  int64_t parts = std::min<int64_t>(1024, std::max<int64_t>(1, len_v / (int64_t(kThreads) * 8)));
  const int64_t chunk_v = (len_v + parts - 1) / parts;
  parts = (len_v + chunk_v - 1) / chunk_v;  // no empty parts
  at::Tensor partials = at::empty({n, parts, 2}, x.options());
  float2* pp = reinterpret_cast<float2*>(partials.mutable_data_ptr<float>());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (vec) {
    launch_minmax_quantize<kVec>(px, po, pp, n, len_v, chunk_v, parts, stream);
  } else {
    launch_minmax_quantize<1>(px, po, pp, n, len_v, chunk_v, parts, stream);
  }
  return out;
}

// ---- rasterize_shapes ----------------------------------------------------------------------------------------
__global__ void __launch_bounds__(kThreads)
    prepare_shapes_kernel(const float* __restrict__ shapes, ShapeRec* __restrict__ recs, int64_t count, int channels,
                          bool uint8_canvas, bool has_texture, int64_t h, int64_t w) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < count; k += stride)
    recs[k] = prepare_shape(shapes + k * kShapeRow, channels, uint8_canvas, has_texture, h, w);
}

// Canvas and texture are read through their strides (any layout); out is NCHW-contiguous.
struct Strides4 {
  int64_t s0, s1, s2, s3;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    raster_kernel(const scalar_t* __restrict__ canvas, Strides4 cst, const scalar_t* __restrict__ texture,
                  Strides4 tst, const ShapeRec* __restrict__ recs, scalar_t* __restrict__ out, int64_t num_tiles,
                  int64_t tiles_per_image, int tiles_x, int64_t num_shapes, int nc, int h, int w) {
  __shared__ ShapeRec list[kThreads];  // the current chunk's surviving shapes, last (topmost) first
  __shared__ int warp_count[kWarps];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const uint32_t all = (1u << nc) - 1u;
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {  // uniform across the block
    const int64_t b = tile / tiles_per_image;
    const int64_t tt = tile - b * tiles_per_image;
    const int tx0 = static_cast<int>(tt % tiles_x) * kTileW, ty0 = static_cast<int>(tt / tiles_x) * kTileH;
    const int tx1 = min(tx0 + kTileW, w) - 1, ty1 = min(ty0 + kTileH, h) - 1;  // inclusive, inside the canvas
    const int j = tx0 + (tid % kTileW), i = ty0 + tid / kTileW;
    const bool in_img = i < h && j < w;
    const double x = static_cast<double>(j), y = static_cast<double>(i);
    uint32_t open = in_img ? all : 0u;  // channels not painted yet
    scalar_t val[3] = {scalar_t(0), scalar_t(0), scalar_t(0)};
    const ShapeRec* __restrict__ rb = recs + b * num_shapes;

    for (int64_t end = num_shapes; end > 0; end -= kThreads) {
      // 1. cull: thread t looks at shape end - 1 - t (descending), by its pixel box against the tile.
      const int64_t s = end - 1 - tid;
      bool keep = false;
      if (s >= 0) {
        const int4 box = __ldg(reinterpret_cast<const int4*>(rb + s) + 4);  // (x0, x1, y0, y1) at byte 64
        keep = box.x <= tx1 && box.y >= tx0 && box.z <= ty1 && box.w >= ty0;
      }
      // 2. compact the survivors in order (ballot + per-warp counts), copying each record into shared memory.
      const uint32_t ballot = __ballot_sync(0xffffffffu, keep);
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int offset = 0, count = 0;
#pragma unroll
      for (int k = 0; k < kWarps; ++k) {
        const int c = warp_count[k];
        offset += k < warp ? c : 0;
        count += c;
      }
      if (keep) {
        const int4* src = reinterpret_cast<const int4*>(rb + s);
        int4* dst = reinterpret_cast<int4*>(&list[offset + __popc(ballot & ((1u << lane) - 1u))]);
#pragma unroll
        for (int q = 0; q < static_cast<int>(sizeof(ShapeRec) / sizeof(int4)); ++q) dst[q] = __ldg(src + q);
      }
      __syncthreads();
      // 3. every pixel walks the list until all of its channels are painted. All lanes of a warp read the same
      //    record (a shared-memory broadcast) and usually take the same kind branch.
      for (int k = 0; k < count && open != 0u; ++k) {
        const ShapeRec& sr = list[k];
        if (j < sr.x0 || j > sr.x1 || i < sr.y0 || i > sr.y1) continue;
        const int32_t info = sr.info;
        if (!shape_covers(sr, rec_kind(info), x, y)) continue;
        if (!rec_textured(info)) {
#pragma unroll
          for (int ch = 0; ch < 3; ++ch)
            if (open & (1u << ch)) val[ch] = static_cast<scalar_t>(sr.col[ch]);
          open = 0u;
        } else {
          const uint32_t paint = open & rec_mask(info);
#pragma unroll
          for (int ch = 0; ch < 3; ++ch)
            if (paint & (1u << ch))
              val[ch] = texture[b * tst.s0 + ch * tst.s1 + static_cast<int64_t>(i) * tst.s2 +
                                static_cast<int64_t>(j) * tst.s3];
          open &= ~paint;
        }
      }
      // 4. leave once every pixel of the tile is done (this barrier also frees list / warp_count for reuse).
      if (__syncthreads_count(open != 0u) == 0) break;
    }

    if (in_img) {
#pragma unroll
      for (int ch = 0; ch < 3; ++ch) {  // constant trip count: val[] stays in registers
        if (ch >= nc) break;
        const scalar_t v = (open & (1u << ch)) ? canvas[b * cst.s0 + ch * cst.s1 + static_cast<int64_t>(i) * cst.s2 +
                                                        static_cast<int64_t>(j) * cst.s3]
                                               : val[ch];
        out[((b * nc + ch) * h + i) * static_cast<int64_t>(w) + j] = v;
      }
    }
  }
}

at::Tensor rasterize_shapes_cuda(const at::Tensor& canvas, const at::Tensor& shapes_in,
                                 const c10::optional<at::Tensor>& texture_opt) {
  check_raster_args(canvas, shapes_in, texture_opt, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(canvas.device());
  const at::Tensor shapes = shapes_in.contiguous();
  const at::Tensor texture = (texture_opt.has_value() && texture_opt->defined()) ? *texture_opt : at::Tensor();
  const int64_t nb = canvas.size(0), nc = canvas.size(1), h = canvas.size(2), w = canvas.size(3);
  const int64_t num_shapes = shapes.size(1);
  at::Tensor out = at::empty({nb, nc, h, w}, canvas.options());
  if (out.numel() == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool is_u8 = canvas.scalar_type() == at::kByte;
  // Prepared shapes: (B * S) ShapeRec in a byte tensor (the caching allocator's blocks are 256-byte aligned).
  const int64_t count = nb * num_shapes;
  at::Tensor rec_buf = at::empty({std::max<int64_t>(count, 1) * static_cast<int64_t>(sizeof(ShapeRec))},
                                 canvas.options().dtype(at::kByte));
  ShapeRec* recs = reinterpret_cast<ShapeRec*>(rec_buf.mutable_data_ptr<uint8_t>());
  TORCH_INTERNAL_ASSERT(aligned_to(recs, alignof(ShapeRec)));
  if (count > 0) {
    prepare_shapes_kernel<<<grid_for(count, kThreads), kThreads, 0, stream>>>(
        shapes.const_data_ptr<float>(), recs, count, static_cast<int>(nc), is_u8, texture.defined(), h, w);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const int tiles_x = static_cast<int>((w + kTileW - 1) / kTileW);
  const int64_t tiles_per_image = tiles_x * ((h + kTileH - 1) / kTileH);
  const int64_t num_tiles = nb * tiles_per_image;
  const int grid = grid_for(num_tiles, 1, kMaxTileBlocks);
  const Strides4 cst{canvas.stride(0), canvas.stride(1), canvas.stride(2), canvas.stride(3)};
  const Strides4 tst = texture.defined()
                           ? Strides4{texture.stride(0), texture.stride(1), texture.stride(2), texture.stride(3)}
                           : Strides4{0, 0, 0, 0};
  if (is_u8) {
    raster_kernel<uint8_t><<<grid, kThreads, 0, stream>>>(
        canvas.const_data_ptr<uint8_t>(), cst, texture.defined() ? texture.const_data_ptr<uint8_t>() : nullptr, tst,
        recs, out.mutable_data_ptr<uint8_t>(), num_tiles, tiles_per_image, tiles_x, num_shapes,
        static_cast<int>(nc), static_cast<int>(h), static_cast<int>(w));
  } else {
    raster_kernel<float><<<grid, kThreads, 0, stream>>>(
        canvas.const_data_ptr<float>(), cst, texture.defined() ? texture.const_data_ptr<float>() : nullptr, tst,
        recs, out.mutable_data_ptr<float>(), num_tiles, tiles_per_image, tiles_x, num_shapes, static_cast<int>(nc),
        static_cast<int>(h), static_cast<int>(w));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("synth_spectral_field", &spectral_field_cuda);
  m.impl("synth_minmax_quantize", &minmax_quantize_cuda);
  m.impl("rasterize_shapes", &rasterize_shapes_cuda);
}

FASTGAN_REGISTER_FAMILY("synth", "cuda");

}  // namespace fastgan::synth

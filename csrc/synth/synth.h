// Primitives-PS synthesis ops: the device-independent part shared by the CPU (synth.cpp) and CUDA (synth_cuda.cu)
// backends. Semantics are defined by the pure-torch references in fastgan/ops/synth.py:
//   synth_spectral_field(keys, exponents, size)  weighted half spectrum drawn straight from counters
//   synth_minmax_quantize(x)                      per-image joint min-max to [0, 255], truncated to uint8
//   rasterize_shapes(canvas, shapes, texture)     opaque painter's-algorithm rasterisation of a shape table
//
// Everything that must give identical numbers on both backends lives here as SYNTH_HD (host + device) inline
// functions: the counter-based RNG, the per-shape preparation (kind validation, colours, precomputed geometry and
// a conservative pixel bounding box) and the per-pixel inside tests. The inside tests are float64 with exactly the
// reference's operation order; on the device every product / sum goes through the _rn intrinsics so that nvcc
// cannot contract them into FMAs (the host build passes -ffp-contract=off for the same reason).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <cstdint>

#include "common/checks.h"

#if defined(__CUDACC__)
#define SYNTH_HD __host__ __device__ __forceinline__
#else
#define SYNTH_HD inline
#endif

namespace fastgan::synth {

// ---- counter-based random numbers (all uint32, wrapping) -----------------------------------------------------
SYNTH_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

SYNTH_HD uint32_t draw32(uint32_t k0, uint32_t k1, uint32_t j) { return mix32(mix32(j ^ k0) + k1); }

// ---- spectral field: one bin -----------------------------------------------------------------------------------
// Spectrum frequency |fftfreq(S, d=0.2)|_k in float32 with the DC entry replaced by 0.1 f_1 (inv = 5 / S).
SYNTH_HD float spectral_freq(int64_t k, int64_t size, float inv) {
  if (k == 0) return 0.1f * inv;
  const int64_t kk = k < size - k ? k : size - k;
  return static_cast<float>(kk) * inv;
}

// The unweighted Gaussian value (re, im) of bin (c, i, j) of the half spectrum (width wh = size / 2 + 1).
// Hermitian columns (j == 0, and j == size / 2 for even sizes) draw rows below the middle from their mirror row
// and conjugate them; their self-conjugate bins are (sqrt(2) re, 0).
SYNTH_HD void spectral_bin(uint32_t k0, uint32_t k1, int64_t c, int64_t i, int64_t j, int64_t size, int64_t wh,
                           float& re, float& im) {
  const bool even = (size % 2) == 0;
  const bool herm_col = j == 0 || (even && j == size / 2);
  const int64_t mi = (size - i) % size;
  const bool mirror = i > mi;
  const int64_t src_i = (herm_col && mirror) ? mi : i;
  const uint32_t m = static_cast<uint32_t>((c * size + src_i) * wh + j);  // < 2^31 (checked at the entry)
  const uint32_t h1 = draw32(k0, k1, 2u * m);
  const uint32_t h2 = draw32(k0, k1, 2u * m + 1u);
  const float u1 = static_cast<float>((h1 >> 8) + 1u) * 0x1p-24f;
  const float u2 = static_cast<float>(h2 >> 8) * 0x1p-24f;
#if defined(__CUDA_ARCH__)
  const float r = sqrtf(__fmul_rn(-2.0f, logf(u1)));
  const float theta = __fmul_rn(u2, 6.2831855f);  // float32(2 pi); _rn: not fused into cosf's range reduction
#else
  const float r = sqrtf(-2.0f * logf(u1));
  const float theta = u2 * 6.2831855f;  // float32(2 pi)
#endif
  re = r * cosf(theta);
  im = r * sinf(theta);
  if (herm_col && (i == 0 || (even && i == size / 2))) {
    re = re * 1.4142135f;  // float32(sqrt 2)
    im = 0.0f;
  } else if (herm_col && mirror) {
    im = -im;
  }
}

// One term of the weight's denominator: f^e + eps (float32, as the reference).
SYNTH_HD float spectral_term(float f, float e) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(powf(f, e), 1e-6f);
#else
  return powf(f, e) + 1e-6f;
#endif
}

// ---- min-max quantisation: one element ---------------------------------------------------------------------------
// floor((v - mn) / rng * 255) clamped to [0, 255]; 0 for a constant image (rng <= 0) and for NaN.
SYNTH_HD uint8_t quantize_one(float v, float mn, float rng) {
  if (!(rng > 0.0f)) return 0;
#if defined(__CUDA_ARCH__)
  const float q = floorf(__fmul_rn(__fdiv_rn(__fsub_rn(v, mn), rng), 255.0f));
#else
  const float q = floorf(((v - mn) / rng) * 255.0f);
#endif
  if (!(q > 0.0f)) return 0;  // also NaN
  if (q >= 255.0f) return 255;
  return static_cast<uint8_t>(q);
}

// NaN-propagating min / max (like torch.amin / amax): once NaN, always NaN.
SYNTH_HD float nan_min(float a, float b) { return (a < b || a != a) ? a : b; }
SYNTH_HD float nan_max(float a, float b) { return (a > b || a != a) ? a : b; }

// ---- rasterisation ---------------------------------------------------------------------------------------------
constexpr int kShapeRow = 10;
constexpr int kKindNone = 0, kKindLine = 1, kKindCircle = 2, kKindEllipse = 3, kKindRect = 4;
constexpr int kTextured = 8;

// Exactly rounded float64 arithmetic that the compiler may not fuse (see the file comment).
SYNTH_HD double dmul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
SYNTH_HD double dadd(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
SYNTH_HD double dsub(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

// One prepared shape (96 bytes, 16-byte aligned so the CUDA kernel can move it as six int4).
//   g:      geometry in float64, per kind (everything that does not depend on the pixel, computed with the
//           reference's operations so the per-pixel tests give the reference's bits):
//             line    {p0, p1, p2, p3, dx, dy, ll = dx dx + dy dy, h2 = (p4 / 2)^2}
//             circle  {p0, p1, p2 p2}
//             ellipse {p0, p1, cos th, sin th, p2, p3, (p2 p3)^2}
//             rect    {min(p0, p2), max(p0, p2), min(p1, p3), max(p1, p3)} (NaN-propagating)
//   x0..y1: conservative inclusive pixel range (clipped to the canvas) outside which the shape covers nothing;
//           empty (x0 > x1) for shapes that paint nothing at all.
//   col:    solid colour in canvas units (uint8 canvas: clamped to [0, 255] and truncated).
//   info:   kind (bits 0..2, 1..4) | textured (bit 3) | channels it paints (bits 4..6).
struct alignas(16) ShapeRec {
  double g[8];
  int32_t x0, x1, y0, y1;
  float col[3];
  int32_t info;
};
static_assert(sizeof(ShapeRec) == 96, "ShapeRec must stay 96 bytes (six 16-byte words)");

SYNTH_HD int rec_kind(int32_t info) { return info & 7; }
SYNTH_HD bool rec_textured(int32_t info) { return (info & 8) != 0; }
SYNTH_HD uint32_t rec_mask(int32_t info) { return (static_cast<uint32_t>(info) >> 4) & 7u; }

SYNTH_HD bool finite_d(double v) { return v == v && v - v == 0.0; }

// Integer positions in [lo, hi] within [0, n - 1] as an inclusive range [a, b] (a > b when empty); bounds that are
// not finite leave that side unclipped (conservative).
SYNTH_HD void pixel_range(double lo, double hi, int64_t n, int32_t& a, int32_t& b) {
  const double top = static_cast<double>(n - 1);
  const double fa = (lo > 0.0) ? ceil(lo) : 0.0;     // NaN / -inf -> 0
  const double fb = (hi < top) ? floor(hi) : top;    // NaN / +inf -> n - 1
  if (fa > top || fb < 0.0 || fa > fb) {
    a = 0;
    b = -1;
  } else {
    a = static_cast<int32_t>(fa);
    b = static_cast<int32_t>(fb);
  }
}

// Prepare row `row` (10 floats) for a canvas with `channels` channels of size h x w.
SYNTH_HD ShapeRec prepare_shape(const float* row, int channels, bool uint8_canvas, bool has_texture, int64_t h,
                                int64_t w) {
  ShapeRec r;
  for (int k = 0; k < 8; ++k) r.g[k] = 0.0;
  for (int ch = 0; ch < 3; ++ch) {
    float v = row[1 + ch];
    if (uint8_canvas) {  // torch: .clamp(0, 255).to(uint8) (NaN -> 0 here; a cast of NaN is undefined)
      if (!(v >= 0.0f)) v = 0.0f;
      if (v > 255.0f) v = 255.0f;
      v = truncf(v);
    }
    r.col[ch] = v;
  }
  // Kind: integer-valued and in {1..4} (solid) or {9..12} (textured); anything else paints nothing.
  const float kf = row[0];
  int kind = kKindNone;
  bool textured = false;
  if (kf == floorf(kf)) {
    if (kf >= 1.0f && kf <= 4.0f) {
      kind = static_cast<int>(kf);
    } else if (kf >= 9.0f && kf <= 12.0f) {
      kind = static_cast<int>(kf) - kTextured;
      textured = true;
    }
  }
  uint32_t mask = (1u << channels) - 1u;
  if (textured) {
    mask = 0;
    for (int ch = 0; ch < channels; ++ch)
      if (row[1 + ch] != 0.0f) mask |= 1u << ch;  // the raw colour is the per-channel flag (NaN != 0 paints)
    if (!has_texture) mask = 0;                   // textured rows without a texture paint nothing
  }
  if (mask == 0) kind = kKindNone;

  const double p0 = row[4], p1 = row[5], p2 = row[6], p3 = row[7], p4 = row[8];
  double xlo = 0, xhi = 0, ylo = 0, yhi = 0;  // bounding box of the covered points (before the margin)
  bool exact_box = false;                     // rect: the box is the shape, no rounding margin needed
  bool unbounded = false;                     // no finite box known: never cull
  switch (kind) {
    case kKindLine: {
      const double dx = dsub(p2, p0), dy = dsub(p3, p1);
      const double hp = dmul(p4, 0.5);
      r.g[0] = p0, r.g[1] = p1, r.g[2] = p2, r.g[3] = p3, r.g[4] = dx, r.g[5] = dy;
      r.g[6] = dadd(dmul(dx, dx), dmul(dy, dy));
      r.g[7] = dmul(hp, hp);
      const double half = fabs(p4) * 0.5;
      xlo = (p0 < p2 ? p0 : p2) - half, xhi = (p0 < p2 ? p2 : p0) + half;
      ylo = (p1 < p3 ? p1 : p3) - half, yhi = (p1 < p3 ? p3 : p1) + half;
      unbounded = !(finite_d(p0) && finite_d(p1) && finite_d(p2) && finite_d(p3) && finite_d(p4));
      break;
    }
    case kKindCircle: {
      r.g[0] = p0, r.g[1] = p1, r.g[2] = dmul(p2, p2);
      const double rad = fabs(p2);
      xlo = p0 - rad, xhi = p0 + rad, ylo = p1 - rad, yhi = p1 + rad;
      unbounded = !(finite_d(p0) && finite_d(p1) && finite_d(p2));
      break;
    }
    case kKindEllipse: {
      const double th = dmul(p4, 0.017453292519943295);  // p4 * (pi / 180)
      const double c = cos(th), s = sin(th);
      const double rr = dmul(p2, p3);
      r.g[0] = p0, r.g[1] = p1, r.g[2] = c, r.g[3] = s, r.g[4] = p2, r.g[5] = p3, r.g[6] = dmul(rr, rr);
      // Half extents of the rotated ellipse. An ellipse with a zero radius has no area and paints nothing (the bare
      // test would cover a whole line, or with both radii zero the whole plane: 0 <= 0).
      if (rr == 0.0) kind = kKindNone;
      const double hx = sqrt(p2 * c * (p2 * c) + p3 * s * (p3 * s));
      const double hy = sqrt(p2 * s * (p2 * s) + p3 * c * (p3 * c));
      xlo = p0 - hx, xhi = p0 + hx, ylo = p1 - hy, yhi = p1 + hy;
      unbounded = !(finite_d(p0) && finite_d(p1) && finite_d(p2) && finite_d(p3) && finite_d(p4));
      break;
    }
    case kKindRect: {
      // torch.minimum / maximum propagate NaN, and every comparison with NaN is false: keep that.
      const bool nan_x = p0 != p0 || p2 != p2, nan_y = p1 != p1 || p3 != p3;
      const double nan = p0 + p1 + p2 + p3;  // only used when one of them is NaN
      r.g[0] = nan_x ? nan : (p0 < p2 ? p0 : p2);
      r.g[1] = nan_x ? nan : (p0 < p2 ? p2 : p0);
      r.g[2] = nan_y ? nan : (p1 < p3 ? p1 : p3);
      r.g[3] = nan_y ? nan : (p1 < p3 ? p3 : p1);
      xlo = r.g[0], xhi = r.g[1], ylo = r.g[2], yhi = r.g[3];
      exact_box = true;
      if (nan_x || nan_y) kind = kKindNone;
      break;
    }
    default:
      break;
  }
  if (kind == kKindNone) {
    r.x0 = r.y0 = 0;
    r.x1 = r.y1 = -1;
  } else if (unbounded) {
    r.x0 = r.y0 = 0;
    r.x1 = static_cast<int32_t>(w - 1);
    r.y1 = static_cast<int32_t>(h - 1);
  } else {
    // The float64 inside tests differ from exact arithmetic by a few ulps of the magnitudes involved (coordinates,
    // radii, pixel positions); a margin far above that keeps the box conservative.
    double margin = 0.0;
    if (!exact_box) {
      const double mag = fabs(xlo) + fabs(xhi) + fabs(ylo) + fabs(yhi) + static_cast<double>(w + h);
      margin = 0.5 + 1e-9 * mag;
    }
    pixel_range(xlo - margin, xhi + margin, w, r.x0, r.x1);
    pixel_range(ylo - margin, yhi + margin, h, r.y0, r.y1);
    if (r.x0 > r.x1 || r.y0 > r.y1) {  // entirely off the canvas
      kind = kKindNone;
      r.x0 = r.y0 = 0;
      r.x1 = r.y1 = -1;
    }
  }
  r.info = kind | (textured ? 8 : 0) | static_cast<int32_t>(mask << 4);
  return r;
}

// Does prepared shape `r` (kind = rec_kind(r.info) != 0) cover the pixel centre (x, y)? The reference's `_inside`.
SYNTH_HD bool shape_covers(const ShapeRec& r, int kind, double x, double y) {
  switch (kind) {
    case kKindLine: {
      const double dx = r.g[4], dy = r.g[5], ll = r.g[6], h2 = r.g[7];
      const double wx = dsub(x, r.g[0]), wy = dsub(y, r.g[1]);
      const double dot = dadd(dmul(wx, dx), dmul(wy, dy));
      if (dot <= 0.0) return dadd(dmul(wx, wx), dmul(wy, wy)) <= h2;
      if (dot >= ll) {
        const double ex = dsub(x, r.g[2]), ey = dsub(y, r.g[3]);
        return dadd(dmul(ex, ex), dmul(ey, ey)) <= h2;
      }
      const double cross = dsub(dmul(wx, dy), dmul(wy, dx));
      return dmul(cross, cross) <= dmul(h2, ll);
    }
    case kKindCircle: {
      const double cx = dsub(x, r.g[0]), cy = dsub(y, r.g[1]);
      return dadd(dmul(cx, cx), dmul(cy, cy)) <= r.g[2];
    }
    case kKindEllipse: {
      const double cx = dsub(x, r.g[0]), cy = dsub(y, r.g[1]);
      const double c = r.g[2], s = r.g[3];
      const double u = dadd(dmul(cx, c), dmul(cy, s));
      const double v = dsub(dmul(cy, c), dmul(cx, s));
      const double ur = dmul(u, r.g[5]), vr = dmul(v, r.g[4]);
      return dadd(dmul(ur, ur), dmul(vr, vr)) <= r.g[6];  // g[6] > 0: zero radii were dropped in prepare
    }
    case kKindRect:
      return x >= r.g[0] && x <= r.g[1] && y >= r.g[2] && y <= r.g[3];
    default:
      return false;
  }
}

// ---- argument checks shared by the CPU and CUDA entry points ---------------------------------------------------
inline void check_field_args(const at::Tensor& keys, const at::Tensor& exponents, int64_t size,
                             c10::DeviceType dev) {
  FASTGAN_CHECK_DEFINED(keys);
  FASTGAN_CHECK_DEFINED(exponents);
  FASTGAN_CHECK_DEVICE_TYPE(keys, dev);
  FASTGAN_CHECK_DEVICE_TYPE(exponents, dev);
  FASTGAN_CHECK_SAME_DEVICE(keys, exponents);
  TORCH_CHECK(keys.scalar_type() == at::kLong, "synth_spectral_field: keys must be int64, got ", keys.scalar_type());
  TORCH_CHECK(exponents.scalar_type() == at::kFloat, "synth_spectral_field: exponents must be float32, got ",
              exponents.scalar_type());
  TORCH_CHECK(exponents.dim() == 3 && exponents.size(2) == 2,
              "synth_spectral_field: exponents must have shape (n, C, 2), got ", exponents.sizes());
  TORCH_CHECK(keys.dim() == 2 && keys.size(1) == 2 && keys.size(0) == exponents.size(0),
              "synth_spectral_field: keys must have shape (n, 2) = (", exponents.size(0), ", 2), got ", keys.sizes());
  TORCH_CHECK(size >= 2, "synth_spectral_field: size must be at least 2, got ", size);
  // Every draw counter 2m + 1 of an image must fit in uint32: 2 C size (size / 2 + 1) <= 2^32.
  const int64_t wh = size / 2 + 1;
  const int64_t channels = exponents.size(1);
  TORCH_CHECK(size <= 65536 && channels <= (int64_t(1) << 32) / (2 * size * wh),
              "synth_spectral_field: size ", size, " with ", channels,
              " channels exceeds the 2^32 random draws per image");
}

inline void check_quantize_args(const at::Tensor& x, c10::DeviceType dev) {
  FASTGAN_CHECK_DEFINED(x);
  FASTGAN_CHECK_DEVICE_TYPE(x, dev);
  TORCH_CHECK(x.scalar_type() == at::kFloat, "synth_minmax_quantize: x must be float32, got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 1, "synth_minmax_quantize: x must have a leading image dimension, got a 0-dim tensor");
  check_index_range(x, "x");
}

inline void check_raster_args(const at::Tensor& canvas, const at::Tensor& shapes,
                              const c10::optional<at::Tensor>& texture, c10::DeviceType dev) {
  FASTGAN_CHECK_DEFINED(canvas);
  FASTGAN_CHECK_DEFINED(shapes);
  FASTGAN_CHECK_DEVICE_TYPE(canvas, dev);
  FASTGAN_CHECK_DEVICE_TYPE(shapes, dev);
  FASTGAN_CHECK_SAME_DEVICE(canvas, shapes);
  TORCH_CHECK(canvas.scalar_type() == at::kByte || canvas.scalar_type() == at::kFloat,
              "rasterize_shapes: canvas must be uint8 or float32, got ", canvas.scalar_type());
  TORCH_CHECK(canvas.dim() == 4, "rasterize_shapes: canvas must have shape (B, C, H, W), got ", canvas.sizes());
  TORCH_CHECK(canvas.size(1) >= 1 && canvas.size(1) <= 3,
              "rasterize_shapes: canvas must have 1 to 3 channels (colours come from c0..c2), got ", canvas.size(1));
  // Pixel coordinates and tile corners are 32-bit in the kernels (with room for one tile past the edge).
  TORCH_CHECK(canvas.size(2) <= (int64_t(1) << 31) - 64 && canvas.size(3) <= (int64_t(1) << 31) - 64,
              "rasterize_shapes: canvas height and width must be below 2^31 - 64, got ", canvas.sizes());
  TORCH_CHECK(shapes.scalar_type() == at::kFloat, "rasterize_shapes: shapes must be float32, got ",
              shapes.scalar_type());
  TORCH_CHECK(shapes.dim() == 3 && shapes.size(0) == canvas.size(0) && shapes.size(2) == kShapeRow,
              "rasterize_shapes: shapes must have shape (B, S, 10) = (", canvas.size(0), ", S, 10), got ",
              shapes.sizes());
  check_index_range(canvas, "canvas");
  check_index_range(shapes, "shapes");
  if (texture.has_value() && texture->defined()) {
    const at::Tensor& t = *texture;
    FASTGAN_CHECK_DEVICE_TYPE(t, dev);
    TORCH_CHECK(t.device() == canvas.device(), "rasterize_shapes: texture and canvas must be on the same device, got ",
                t.device(), " and ", canvas.device());
    TORCH_CHECK(t.sizes() == canvas.sizes() && t.scalar_type() == canvas.scalar_type(),
                "rasterize_shapes: texture must match the canvas (", canvas.sizes(), ", ", canvas.scalar_type(),
                "), got ", t.sizes(), ", ", t.scalar_type());
  }
}

}  // namespace fastgan::synth

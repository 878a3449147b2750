// CPU backend of the synth family (spectral field, min-max quantisation, shape rasterisation): OpenMP kernels
// (at::parallel_for) around the shared per-element functions of synth.h, and the CPU kernel registrations.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/registry.h"
#include "synth/synth.h"

namespace fastgan::synth {
namespace {

// ---- synth_spectral_field ------------------------------------------------------------------------------------
#if defined(__SSE2__)
// Four-lane versions of the draw and of the Box-Muller transform for the interior spectrum columns. The scalar libm
// calls (log, sin, cos) cost most of the field's time; these are the classic single-precision minimax polynomials
// (a few ulp on the arguments Box-Muller feeds them: u in [2^-24, 1], theta in [0, 2 pi)), well inside the field's
// tolerance against the reference (which itself uses torch's vectorised log / sin / cos).
inline __m128i mullo32(__m128i a, __m128i b) {  // SSE2 has no 32-bit low multiply: two 32x32->64 products
  const __m128i even = _mm_mul_epu32(a, b);
  const __m128i odd = _mm_mul_epu32(_mm_srli_epi64(a, 32), _mm_srli_epi64(b, 32));
  return _mm_unpacklo_epi32(_mm_shuffle_epi32(even, _MM_SHUFFLE(0, 0, 2, 0)),
                            _mm_shuffle_epi32(odd, _MM_SHUFFLE(0, 0, 2, 0)));
}

inline __m128i mix32x4(__m128i x) {  // mix32 of synth.h, lane-wise
  x = _mm_xor_si128(x, _mm_srli_epi32(x, 16));
  x = mullo32(x, _mm_set1_epi32(0x7feb352d));
  x = _mm_xor_si128(x, _mm_srli_epi32(x, 15));
  x = mullo32(x, _mm_set1_epi32(static_cast<int32_t>(0x846ca68bu)));
  return _mm_xor_si128(x, _mm_srli_epi32(x, 16));
}

inline __m128i draw32x4(__m128i k0, __m128i k1, __m128i j) {
  return mix32x4(_mm_add_epi32(mix32x4(_mm_xor_si128(j, k0)), k1));
}

// Natural log for normal positive floats: u = 2^e m with m in [sqrt(1/2), sqrt(2)), log(u) = e log 2 + log(m).
inline __m128 log4(__m128 u) {
  const __m128i bits = _mm_castps_si128(u);
  __m128i e = _mm_sub_epi32(_mm_srli_epi32(bits, 23), _mm_set1_epi32(126));
  __m128 x = _mm_castsi128_ps(_mm_or_si128(_mm_and_si128(bits, _mm_set1_epi32(0x007fffff)),
                                           _mm_set1_epi32(0x3f000000)));  // mantissa in [0.5, 1)
  const __m128 small = _mm_cmplt_ps(x, _mm_set1_ps(0.707106781186547524f));
  e = _mm_add_epi32(e, _mm_castps_si128(small));  // the mask is -1 where small
  const __m128 one = _mm_set1_ps(1.0f);
  x = _mm_add_ps(_mm_sub_ps(x, one), _mm_and_ps(small, x));  // 2m - 1 or m - 1, exact
  const __m128 z = _mm_mul_ps(x, x);
  __m128 y = _mm_set1_ps(7.0376836292e-2f);
  for (const float cf : {-1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f, 1.4249322787e-1f,
                         -1.6668057665e-1f, 2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f})
    y = _mm_add_ps(_mm_mul_ps(y, x), _mm_set1_ps(cf));
  y = _mm_mul_ps(_mm_mul_ps(y, x), z);
  const __m128 fe = _mm_cvtepi32_ps(e);
  y = _mm_add_ps(y, _mm_mul_ps(fe, _mm_set1_ps(-2.12194440e-4f)));  // log 2 = 0.693359375 - 2.12194440e-4
  y = _mm_sub_ps(y, _mm_mul_ps(_mm_set1_ps(0.5f), z));
  return _mm_add_ps(_mm_add_ps(x, y), _mm_mul_ps(fe, _mm_set1_ps(0.693359375f)));
}

// sin and cos of t in [0, 2 pi]: t = q pi/2 + x with |x| <= pi/4 (three-part Cody-Waite reduction), then the
// quadrant q picks and signs the two polynomials.
inline void sincos4(__m128 t, __m128& s_out, __m128& c_out) {
  __m128i j = _mm_cvttps_epi32(_mm_mul_ps(t, _mm_set1_ps(1.27323954473516f)));  // floor(t 4 / pi), t >= 0
  j = _mm_and_si128(_mm_add_epi32(j, _mm_set1_epi32(1)), _mm_set1_epi32(~1));      // round up to even
  const __m128 y = _mm_cvtepi32_ps(j);
  __m128 x = _mm_sub_ps(t, _mm_mul_ps(y, _mm_set1_ps(0.78515625f)));
  x = _mm_sub_ps(x, _mm_mul_ps(y, _mm_set1_ps(2.4187564849853515625e-4f)));
  x = _mm_sub_ps(x, _mm_mul_ps(y, _mm_set1_ps(3.77489497744594108e-8f)));
  const __m128 z = _mm_mul_ps(x, x);
  __m128 sp = _mm_add_ps(_mm_mul_ps(_mm_set1_ps(-1.9515295891e-4f), z), _mm_set1_ps(8.3321608736e-3f));
  sp = _mm_add_ps(_mm_mul_ps(sp, z), _mm_set1_ps(-1.6666654611e-1f));
  sp = _mm_add_ps(_mm_mul_ps(_mm_mul_ps(sp, z), x), x);
  __m128 cp = _mm_add_ps(_mm_mul_ps(_mm_set1_ps(2.443315711809948e-5f), z), _mm_set1_ps(-1.388731625493765e-3f));
  cp = _mm_add_ps(_mm_mul_ps(cp, z), _mm_set1_ps(4.166664568298827e-2f));
  cp = _mm_add_ps(_mm_sub_ps(_mm_mul_ps(_mm_mul_ps(cp, z), z), _mm_mul_ps(_mm_set1_ps(0.5f), z)),
                  _mm_set1_ps(1.0f));
  const __m128i q = _mm_srli_epi32(j, 1);  // quadrant (mod 4 below)
  const __m128 swap = _mm_castsi128_ps(_mm_cmpeq_epi32(_mm_and_si128(q, _mm_set1_epi32(1)), _mm_set1_epi32(1)));
  const __m128 s = _mm_or_ps(_mm_and_ps(swap, cp), _mm_andnot_ps(swap, sp));
  const __m128 c = _mm_or_ps(_mm_and_ps(swap, sp), _mm_andnot_ps(swap, cp));
  // sin is negated in quadrants 2, 3 (q & 2); cos in quadrants 1, 2 ((q + 1) & 2): move that bit to the sign bit
  const __m128 sflip = _mm_castsi128_ps(_mm_slli_epi32(_mm_and_si128(q, _mm_set1_epi32(2)), 30));
  const __m128 cflip = _mm_castsi128_ps(
      _mm_slli_epi32(_mm_and_si128(_mm_add_epi32(q, _mm_set1_epi32(1)), _mm_set1_epi32(2)), 30));
  s_out = _mm_xor_ps(s, sflip);
  c_out = _mm_xor_ps(c, cflip);
}

// Bins j .. j + 3 of an interior run (m = m0 + lane): the loop body of spectral_field_cpu, four lanes at a time.
inline void gaussian_bins4(uint32_t k0, uint32_t k1, uint32_t m0, float row_term, const float* col, float* o) {
  const __m128i m = _mm_add_epi32(_mm_set1_epi32(static_cast<int32_t>(m0)), _mm_setr_epi32(0, 1, 2, 3));
  const __m128i vk0 = _mm_set1_epi32(static_cast<int32_t>(k0)), vk1 = _mm_set1_epi32(static_cast<int32_t>(k1));
  const __m128i c1 = _mm_slli_epi32(m, 1);
  const __m128i h1 = draw32x4(vk0, vk1, c1), h2 = draw32x4(vk0, vk1, _mm_add_epi32(c1, _mm_set1_epi32(1)));
  const __m128 scale = _mm_set1_ps(0x1p-24f);
  // (h >> 8) + 1 <= 2^24 fits an int32, so the signed conversion is exact
  const __m128 u1 = _mm_mul_ps(_mm_cvtepi32_ps(_mm_add_epi32(_mm_srli_epi32(h1, 8), _mm_set1_epi32(1))), scale);
  const __m128 u2 = _mm_mul_ps(_mm_cvtepi32_ps(_mm_srli_epi32(h2, 8)), scale);
  const __m128 rad = _mm_sqrt_ps(_mm_mul_ps(_mm_set1_ps(-2.0f), log4(u1)));
  __m128 sn, cs;
  sincos4(_mm_mul_ps(u2, _mm_set1_ps(6.2831855f)), sn, cs);
  const __m128 w = _mm_div_ps(_mm_set1_ps(1.0f), _mm_add_ps(_mm_set1_ps(row_term), _mm_loadu_ps(col)));
  const __m128 re = _mm_mul_ps(_mm_mul_ps(rad, cs), w), im = _mm_mul_ps(_mm_mul_ps(rad, sn), w);
  _mm_storeu_ps(o, _mm_unpacklo_ps(re, im));
  _mm_storeu_ps(o + 4, _mm_unpackhi_ps(re, im));
}
#endif

// One task per spectrum row (image, channel, i): the row term f_i^a + eps is computed once per row and the column
// terms f_j^b + eps once per (image, channel) run inside a task; no weight tensor is ever stored.
at::Tensor spectral_field_cpu(const at::Tensor& keys_in, const at::Tensor& exps_in, int64_t size) {
  check_field_args(keys_in, exps_in, size, c10::DeviceType::CPU);
  const at::Tensor keys = keys_in.contiguous(), exps = exps_in.contiguous();
  const int64_t n = exps.size(0), channels = exps.size(1), wh = size / 2 + 1;
  at::Tensor out = at::empty({n, channels, size, wh, 2}, exps.options());
  const int64_t rows = n * channels * size;
  if (rows == 0) return out;
  const int64_t* pk = keys.const_data_ptr<int64_t>();
  const float* pe = exps.const_data_ptr<float>();
  float* po = out.mutable_data_ptr<float>();
  const float inv = 5.0f / static_cast<float>(size);
  at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / wh), [&](int64_t r0, int64_t r1) {
    std::vector<float> col(static_cast<size_t>(wh));
    int64_t cur_ic = -1;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t ic = r / size, i = r % size;  // ic = img * channels + c
      const int64_t img = ic / channels, c = ic % channels;
      const float a = pe[ic * 2], b = pe[ic * 2 + 1];
      if (ic != cur_ic) {
        for (int64_t j = 0; j < wh; ++j) col[j] = spectral_term(spectral_freq(j, size, inv), b);
        cur_ic = ic;
      }
      const uint32_t k0 = static_cast<uint32_t>(pk[img * 2]), k1 = static_cast<uint32_t>(pk[img * 2 + 1]);
      const float row_term = spectral_term(spectral_freq(i, size, inv), a);
      float* o = po + r * wh * 2;
      // Hermitian columns (j = 0 and, for even sizes, the last one) take the general path; the interior columns
      // are plain draws with counter 2 m, 2 m + 1 for m = (c size + i) wh + j: the same numbers spectral_bin gives.
      const int64_t j_end = (size % 2 == 0) ? wh - 1 : wh;
      for (int64_t j : {int64_t{0}, j_end}) {
        if (j >= wh) continue;
        float re, im;
        spectral_bin(k0, k1, c, i, j, size, wh, re, im);
        const float w = 1.0f / (row_term + col[j]);
        o[2 * j] = re * w;
        o[2 * j + 1] = im * w;
      }
      const uint32_t m0 = static_cast<uint32_t>((c * size + i) * wh);
      int64_t j = 1;
#if defined(__SSE2__)
      for (; j + 4 <= j_end; j += 4) gaussian_bins4(k0, k1, m0 + static_cast<uint32_t>(j), row_term, &col[j], o + 2 * j);
#endif
      for (; j < j_end; ++j) {
        const uint32_t m = m0 + static_cast<uint32_t>(j);
        const uint32_t h1 = draw32(k0, k1, 2u * m), h2 = draw32(k0, k1, 2u * m + 1u);
        const float u1 = static_cast<float>((h1 >> 8) + 1u) * 0x1p-24f;
        const float u2 = static_cast<float>(h2 >> 8) * 0x1p-24f;
        const float rad = sqrtf(-2.0f * logf(u1));
        float sn, cs;
        sincosf(u2 * 6.2831855f, &sn, &cs);  // float32(2 pi)
        const float w = 1.0f / (row_term + col[j]);
        o[2 * j] = (rad * cs) * w;
        o[2 * j + 1] = (rad * sn) * w;
      }
    }
  });
  return out;
}

// ---- synth_minmax_quantize -----------------------------------------------------------------------------------
// NaN-propagating min / max of v[0, len) (the fold of nan_min / nan_max). The SSE2 path keeps four-lane
// accumulators (minps / maxps skip a NaN operand) and a separate NaN flag.
void minmax_span(const float* v, int64_t len, float& mn_out, float& mx_out) {
  float mn = std::numeric_limits<float>::infinity(), mx = -mn;
  int64_t e = 0;
  bool any_nan = false;
#if defined(__SSE2__)
  __m128 vmn0 = _mm_set1_ps(mn), vmn1 = vmn0, vmx0 = _mm_set1_ps(mx), vmx1 = vmx0, vnan = _mm_setzero_ps();
  for (; e + 8 <= len; e += 8) {
    const __m128 a = _mm_loadu_ps(v + e), b = _mm_loadu_ps(v + e + 4);
    vmn0 = _mm_min_ps(a, vmn0), vmn1 = _mm_min_ps(b, vmn1);  // min_ps(x, acc) = x < acc ? x : acc
    vmx0 = _mm_max_ps(a, vmx0), vmx1 = _mm_max_ps(b, vmx1);
    vnan = _mm_or_ps(vnan, _mm_or_ps(_mm_cmpunord_ps(a, a), _mm_cmpunord_ps(b, b)));
  }
  alignas(16) float lmn[8], lmx[8];
  _mm_store_ps(lmn, vmn0), _mm_store_ps(lmn + 4, vmn1), _mm_store_ps(lmx, vmx0), _mm_store_ps(lmx + 4, vmx1);
  for (int l = 0; l < 8; ++l) mn = std::min(mn, lmn[l]), mx = std::max(mx, lmx[l]);
  any_nan = _mm_movemask_ps(vnan) != 0;
#endif
  for (; e < len; ++e) mn = nan_min(mn, v[e]), mx = nan_max(mx, v[e]);
  if (any_nan) mn = mx = std::numeric_limits<float>::quiet_NaN();
  mn_out = mn;
  mx_out = mx;
}

// out[e] = quantize_one(x[e], mn, rng) for rng > 0. Branch-free: clamping to [0, 255] first (NaN -> 0) and then
// truncating equals floor-then-clamp, so the SSE2 path gives the same bytes.
void quantize_span(const float* x, int64_t len, float mn, float rng, uint8_t* out) {
  int64_t e = 0;
#if defined(__SSE2__)
  const __m128 vmn = _mm_set1_ps(mn), vrng = _mm_set1_ps(rng), v255 = _mm_set1_ps(255.0f), zero = _mm_setzero_ps();
  auto q4 = [&](const float* p) {
    const __m128 q = _mm_mul_ps(_mm_div_ps(_mm_sub_ps(_mm_loadu_ps(p), vmn), vrng), v255);
    return _mm_cvttps_epi32(_mm_min_ps(_mm_max_ps(q, zero), v255));  // max_ps(NaN, 0) = 0
  };
  for (; e + 16 <= len; e += 16) {
    const __m128i lo = _mm_packs_epi32(q4(x + e), q4(x + e + 4)), hi = _mm_packs_epi32(q4(x + e + 8), q4(x + e + 12));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + e), _mm_packus_epi16(lo, hi));
  }
#endif
  for (; e < len; ++e) out[e] = quantize_one(x[e], mn, rng);
}

// Two parallel passes over fixed chunks of each image (so a single large image still uses every thread):
// partial min / max per chunk, a serial combine per image (min / max are order-independent), then quantisation.
at::Tensor minmax_quantize_cpu(const at::Tensor& x_in) {
  check_quantize_args(x_in, c10::DeviceType::CPU);
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kByte));
  const int64_t n = x.size(0);
  if (x.numel() == 0) return out;
  const int64_t len = x.numel() / n;
  constexpr int64_t kChunk = 16384;
  const int64_t parts = (len + kChunk - 1) / kChunk;
  const float* px = x.const_data_ptr<float>();
  uint8_t* po = out.mutable_data_ptr<uint8_t>();
  std::vector<float> pmin(static_cast<size_t>(n * parts)), pmax(static_cast<size_t>(n * parts));
  at::parallel_for(0, n * parts, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / parts, p = t % parts;
      const float* v = px + b * len;
      const int64_t e0 = p * kChunk, e1 = std::min(len, e0 + kChunk);
      minmax_span(v + e0, e1 - e0, pmin[t], pmax[t]);
    }
  });
  std::vector<float> mins(static_cast<size_t>(n)), rngs(static_cast<size_t>(n));
  for (int64_t b = 0; b < n; ++b) {
    float mn = pmin[b * parts], mx = pmax[b * parts];
    for (int64_t p = 1; p < parts; ++p) {
      mn = nan_min(mn, pmin[b * parts + p]);
      mx = nan_max(mx, pmax[b * parts + p]);
    }
    mins[b] = mn;
    rngs[b] = mx - mn;  // NaN for images holding NaN: quantize_one gives 0 then
  }
  at::parallel_for(0, n * parts, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / parts, p = t % parts;
      const float mn = mins[b], rng = rngs[b];
      const int64_t e0 = b * len + p * kChunk, e1 = b * len + std::min(len, p * kChunk + kChunk);
      if (!(rng > 0.0f)) {  // constant image, or NaN in it: quantize_one gives 0 everywhere
        std::fill(po + e0, po + e1, uint8_t{0});
        continue;
      }
      quantize_span(px + e0, e1 - e0, mn, rng, po + e0);
    }
  });
  return out;
}

// ---- rasterize_shapes ----------------------------------------------------------------------------------------
// Shapes are prepared once (kind, colours, float64 geometry, conservative pixel box). Then one task per canvas row
// (image, i) walks the shapes whose box meets the row from last to first. Every shape is convex, so it covers one
// run of the row; the run is solved from the shape's equation (a conservative superset, widened by a pixel and a
// rounding allowance) and only the pixels of that run whose channels are still open get the exact inside test.
// A pixel closes when all its channels are painted; the row is done when every pixel is closed. The exact test
// decides every pixel, so the result is the reference's whatever the run estimate.

// Inclusive x interval [lo, hi] (pixel-centre units) that contains every pixel the exact test can accept on row
// y of a canvas w pixels wide; false when the row certainly holds none. Non-finite or huge geometry gives
// (-inf, inf): the box decides.
inline bool row_run(const ShapeRec& r, int kind, double y, int64_t w, double& lo, double& hi) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  lo = -kInf, hi = kInf;
  // largest coordinate or length involved (g holds squares in some slots: compare their square roots)
  double mag = std::max({std::fabs(y), static_cast<double>(w), std::fabs(r.g[0]), std::fabs(r.g[1])});
  if (kind == kKindCircle) mag = std::max(mag, std::sqrt(std::fabs(r.g[2])));
  if (kind == kKindEllipse) mag = std::max({mag, std::fabs(r.g[4]), std::fabs(r.g[5])});
  if (kind == kKindLine)
    mag = std::max({mag, std::fabs(r.g[2]), std::fabs(r.g[3]), std::fabs(r.g[4]), std::fabs(r.g[5]),
                    std::sqrt(std::fabs(r.g[7]))});
  if (!(mag < 1e7)) return true;  // also NaN / inf: no estimate, test the whole box
  auto widen = [&](double a, double b) { lo = std::min(lo, a), hi = std::max(hi, b); };
  // disc (x - cx)^2 <= r2 - (y - cy)^2: a rounding allowance tol on the squares, sqrt(tol) + 1 px on x
  auto disc = [&](double cx, double cy, double r2, bool& any) {
    const double dy = y - cy, d2 = r2 - dy * dy, tol = 1e-9 * (std::fabs(r2) + dy * dy + 1.0);
    if (d2 < -tol) return;
    const double half = std::sqrt(std::max(d2, 0.0)) + std::sqrt(tol) + 1.0;
    if (!any) lo = kInf, hi = -kInf, any = true;
    widen(cx - half, cx + half);
  };
  switch (kind) {
    case kKindCircle: {
      bool any = false;
      disc(r.g[0], r.g[1], r.g[2], any);
      return any;
    }
    case kKindEllipse: {
      // (u ry)^2 + (v rx)^2 - (rx ry)^2 = A dx^2 + B dx + C with dx = x - cx, dy = y - cy
      const double c = r.g[2], s = r.g[3], rx2 = r.g[4] * r.g[4], ry2 = r.g[5] * r.g[5], dy = y - r.g[1];
      const double a = ry2 * c * c + rx2 * s * s;
      const double b = 2.0 * dy * c * s * (ry2 - rx2);
      const double cc = dy * dy * (ry2 * s * s + rx2 * c * c) - rx2 * ry2;
      if (!(a > 0.0)) return true;
      const double scale = (dy * dy + 4.0 * mag * mag) * (rx2 + ry2) + rx2 * ry2;
      const double tol = 1e-9 * scale;  // allowance on the quadratic's value
      const double disc2 = b * b - 4.0 * a * cc;
      if (disc2 < 0.0 && -disc2 / (4.0 * a) > tol) return false;  // the minimum is above zero
      const double mid = -b / (2.0 * a);
      const double half = std::sqrt(std::max(disc2, 0.0)) / (2.0 * a) + std::sqrt(tol / a) + 1.0;
      lo = r.g[0] + mid - half, hi = r.g[0] + mid + half;
      return true;
    }
    case kKindLine: {
      // capsule = disc(p0) U disc(p1) U slab {|cross| <= h len, 0 <= dot <= len^2}; convex, so the run is the hull
      const double dx = r.g[4], dy = r.g[5], ll = r.g[6], h2 = r.g[7];
      bool any = false;
      disc(r.g[0], r.g[1], h2, any);
      disc(r.g[2], r.g[3], h2, any);
      if (ll > 0.0) {
        const double len = std::sqrt(ll), wy = y - r.g[1];
        double slo = -kInf, shi = kInf;  // x - p0 range of the slab on this row
        bool empty = false;
        const double big_h = std::sqrt(h2 * ll) + 1e-9 * (mag * len + 1.0);
        // |dx| or |dy| tiny relative to len: that constraint is left out (a superset), avoiding ill-conditioned divisions
        if (std::fabs(dy) > 1e-3 * len) {  // cross = (x - p0) dy - wy dx in [-H, H]
          const double e0 = (wy * dx - big_h) / dy, e1 = (wy * dx + big_h) / dy;
          slo = std::max(slo, std::min(e0, e1)), shi = std::min(shi, std::max(e0, e1));
        } else if (std::fabs(dx) > 1e-3 * len && std::fabs(wy * dx) > big_h + 1e-3 * len * (std::fabs(wy) + 1.0)) {
          empty = true;  // nearly horizontal segment far from this row
        }
        if (std::fabs(dx) > 1e-3 * len) {  // dot = (x - p0) dx + wy dy in [0, ll]
          const double slack = 1e-9 * (mag * len + ll + 1.0);
          const double e0 = (-wy * dy - slack) / dx, e1 = (ll - wy * dy + slack) / dx;
          slo = std::max(slo, std::min(e0, e1)), shi = std::min(shi, std::max(e0, e1));
        }
        if (!empty && slo <= shi) {
          if (!any) lo = kInf, hi = -kInf, any = true;
          widen(r.g[0] + slo - 1.0, r.g[0] + shi + 1.0);
        }
      }
      return any;
    }
    default:  // rectangle: its box is exact
      return true;
  }
}

template <typename scalar_t>
void raster_rows(const at::Tensor& canvas, const at::Tensor& texture, const ShapeRec* recs, int64_t num_shapes,
                 at::Tensor& out) {
  const int64_t nb = canvas.size(0), nc = canvas.size(1), h = canvas.size(2), w = canvas.size(3);
  const scalar_t* pc = canvas.const_data_ptr<scalar_t>();
  const int64_t cs0 = canvas.stride(0), cs1 = canvas.stride(1), cs2 = canvas.stride(2), cs3 = canvas.stride(3);
  const scalar_t* pt = texture.defined() ? texture.const_data_ptr<scalar_t>() : nullptr;
  const int64_t ts0 = pt ? texture.stride(0) : 0, ts1 = pt ? texture.stride(1) : 0;
  const int64_t ts2 = pt ? texture.stride(2) : 0, ts3 = pt ? texture.stride(3) : 0;
  scalar_t* po = out.mutable_data_ptr<scalar_t>();
  const uint8_t all = static_cast<uint8_t>((1u << nc) - 1u);
  at::parallel_for(0, nb * h, std::max<int64_t>(1, 4096 / std::max<int64_t>(w, 1)), [&](int64_t r0, int64_t r1) {
    std::vector<uint8_t> open(static_cast<size_t>(w));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / h, i = r % h;
      const ShapeRec* rb = recs + b * num_shapes;
      scalar_t* orow[3];
      for (int64_t ch = 0; ch < nc; ++ch) {
        orow[ch] = po + ((b * nc + ch) * h + i) * w;
        const scalar_t* crow = pc + b * cs0 + ch * cs1 + i * cs2;
        for (int64_t j = 0; j < w; ++j) orow[ch][j] = crow[j * cs3];  // unpainted pixels keep the canvas
      }
      std::fill(open.begin(), open.end(), all);
      int64_t n_open = w;
      const double y = static_cast<double>(i);
      for (int64_t s = num_shapes - 1; s >= 0 && n_open > 0; --s) {
        const ShapeRec& sr = rb[s];
        if (i < sr.y0 || i > sr.y1) continue;  // also the empty box of rows that paint nothing
        const int kind = rec_kind(sr.info);
        double lo, hi;
        if (!row_run(sr, kind, y, w, lo, hi)) continue;
        int32_t ja, jb;
        pixel_range(lo, hi, w, ja, jb);
        ja = std::max(ja, sr.x0), jb = std::min(jb, sr.x1);
        const bool textured = rec_textured(sr.info);
        const uint8_t mask = static_cast<uint8_t>(rec_mask(sr.info));
        for (int32_t j = ja; j <= jb; ++j) {
          const uint8_t paint = open[j] & mask;
          if (paint == 0 || !shape_covers(sr, kind, static_cast<double>(j), y)) continue;
          for (int64_t ch = 0; ch < nc; ++ch) {
            if (!(paint & (1u << ch))) continue;
            orow[ch][j] = textured ? pt[b * ts0 + ch * ts1 + i * ts2 + j * ts3] : static_cast<scalar_t>(sr.col[ch]);
          }
          open[j] &= static_cast<uint8_t>(~paint);
          n_open -= open[j] == 0;
        }
      }
    }
  });
}

at::Tensor rasterize_shapes_cpu(const at::Tensor& canvas, const at::Tensor& shapes_in,
                                const c10::optional<at::Tensor>& texture_opt) {
  check_raster_args(canvas, shapes_in, texture_opt, c10::DeviceType::CPU);
  const at::Tensor shapes = shapes_in.contiguous();
  const at::Tensor texture = (texture_opt.has_value() && texture_opt->defined()) ? *texture_opt : at::Tensor();
  const int64_t nb = canvas.size(0), nc = canvas.size(1), h = canvas.size(2), w = canvas.size(3);
  const int64_t num_shapes = shapes.size(1);
  // A fresh NCHW-contiguous result; canvas and texture are read through their strides (any layout, no copy).
  at::Tensor out = at::empty({nb, nc, h, w}, canvas.options());
  if (out.numel() == 0) return out;
  const bool is_u8 = canvas.scalar_type() == at::kByte;
  std::vector<ShapeRec> recs(static_cast<size_t>(nb * num_shapes));
  const float* ps = shapes.const_data_ptr<float>();
  at::parallel_for(0, nb * num_shapes, 256, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k)
      recs[k] = prepare_shape(ps + k * kShapeRow, static_cast<int>(nc), is_u8, texture.defined(), h, w);
  });
  if (is_u8) {
    raster_rows<uint8_t>(canvas, texture, recs.data(), num_shapes, out);
  } else {
    raster_rows<float>(canvas, texture, recs.data(), num_shapes, out);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("synth_spectral_field", &spectral_field_cpu);
  m.impl("synth_minmax_quantize", &minmax_quantize_cpu);
  m.impl("rasterize_shapes", &rasterize_shapes_cpu);
}

FASTGAN_REGISTER_FAMILY("synth", "cpu");

}  // namespace fastgan::synth

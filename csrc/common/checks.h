// Argument checks shared by every op entry point (CPU and CUDA).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>

#define FASTGAN_CHECK_DEFINED(t) TORCH_CHECK((t).defined(), #t " must be a defined tensor")
#define FASTGAN_CHECK_DIM(t, n) \
  TORCH_CHECK((t).dim() == (n), #t " must have " #n " dimensions, got shape ", (t).sizes())
#define FASTGAN_CHECK_SAME_DEVICE(a, b)                                                          \
  TORCH_CHECK((a).device() == (b).device(), #a " and " #b " must be on the same device, got ", \
              (a).device(), " and ", (b).device())
#define FASTGAN_CHECK_SAME_DTYPE(a, b)                                                             \
  TORCH_CHECK((a).scalar_type() == (b).scalar_type(), #a " and " #b " must have the same dtype, got ", \
              (a).scalar_type(), " and ", (b).scalar_type())
#define FASTGAN_CHECK_FLOATING(t)                                                               \
  TORCH_CHECK(at::isFloatingType((t).scalar_type()), #t " must be a floating tensor, got dtype ", \
              (t).scalar_type())
#define FASTGAN_CHECK_DEVICE_TYPE(t, dev)                                                         \
  TORCH_CHECK((t).device().type() == (dev), #t " must be on a ", c10::DeviceTypeName(dev), \
              " device, got ", (t).device())

namespace fastgan {

// Kernels index elements with 64-bit integers (or 32-bit only after checking numel); this rejects tensors so
// large that 64-bit offset arithmetic with small multipliers could overflow.
inline void check_index_range(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.numel() < std::numeric_limits<int64_t>::max() / 4, name, " is too large to index (",
              t.numel(), " elements)");
}

}  // namespace fastgan

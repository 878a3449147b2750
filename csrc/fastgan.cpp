// Every fastgan op schema, in one TORCH_LIBRARY block, and the pybind11 module fastgan._C.
// Backend implementations register themselves next to their kernels (TORCH_LIBRARY_IMPL in <family>/<op>.cpp
// for CPU and <family>/<op>_cuda.cu for CUDA). Triton-backed ops are defined from Python (fastgan/ops/), so that they
// exist even when this extension is not built.
#include <torch/extension.h>
#include <torch/library.h>

#ifdef FASTGAN_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include <string>

#include "common/registry.h"

#ifndef FASTGAN_TORCH_VERSION
#define FASTGAN_TORCH_VERSION "unknown"
#endif
#ifndef FASTGAN_CUDA_ARCHS
#define FASTGAN_CUDA_ARCHS ""
#endif

TORCH_LIBRARY(fastgan, m) {
  // ---- modconv family: fused modulated conv and AdaFM conv (fastgan/ops/modconv.py) -------------------------
  m.def(
      "modulated_conv2d(Tensor x, Tensor weight, Tensor styles, bool demodulate, int[2] padding, float eps)"
      " -> Tensor");
  m.def(
      "modulated_conv2d_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor styles, Tensor out,"
      " bool demodulate, int[2] padding, float eps, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "adafm_conv2d(Tensor x, Tensor weight, Tensor gamma, Tensor beta, Tensor? bias, int[2] stride,"
      " int[2] padding) -> Tensor");
  m.def(
      "adafm_conv2d_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor gamma, Tensor beta, int[2] stride,"
      " int[2] padding, bool[5] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");

  // ---- synth family: Primitives-PS spectral noise and shape rasterisation (fastgan/ops/synth.py) ---------------
  m.def("synth_spectral_field(Tensor keys, Tensor exponents, int size) -> Tensor");
  m.def("synth_minmax_quantize(Tensor x) -> Tensor");
  m.def("rasterize_shapes(Tensor canvas, Tensor shapes, Tensor? texture) -> Tensor");

  // ---- jacvol family: MaGNET projection passes and batched log singular values (fastgan/ops/jacvol.py) ---------
  m.def("random_projection_gauss(Tensor x, Tensor keys, int col0) -> Tensor");
  m.def("random_projection_gauss_t(Tensor z, Tensor keys, int col0, int cols) -> Tensor");
  m.def("log_singular_values(Tensor jac, int top_k) -> Tensor");

  // ---- vision family: fused DiffAugment + area resize + normalise of the vision-aided backbones -----------------
  // (fastgan/ops/vision_preprocess.py); table: float64 (N, 9) per-sample parameters, flags: the ops that are on.
  m.def(
      "vision_preprocess(Tensor x, Tensor table, int flags, int out_h, int out_w, float[] mean, float[] std)"
      " -> Tensor");
  m.def(
      "vision_preprocess_backward(Tensor grad_out, Tensor table, int flags, int height, int width, float[] std)"
      " -> Tensor");

  // ---- knn family: k-NN radii and the precision / recall / density / coverage reductions (fastgan/ops/knn.py) ----
  // CUDA only (csrc/knn/knn_cuda.cu); on CPU the float64 reference is the fast and exact route.
  m.def("knn_radii(Tensor x, int k) -> Tensor");
  m.def(
      "knn_manifold_stats(Tensor real, Tensor fake, Tensor real_radii, Tensor fake_radii, bool inclusive)"
      " -> (Tensor, Tensor, Tensor, Tensor)");
}

namespace {

std::string compiler_string() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

pybind11::dict build_info() {
  pybind11::dict info;
  info["compiler"] = compiler_string();
  info["torch"] = FASTGAN_TORCH_VERSION;
#ifdef FASTGAN_WITH_CUDA
  info["cuda"] = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string((CUDART_VERSION % 1000) / 10);
  info["cuda_archs"] = FASTGAN_CUDA_ARCHS;
#else
  info["cuda"] = pybind11::none();
  info["cuda_archs"] = "";
#endif
#ifdef _OPENMP
  info["openmp"] = _OPENMP;
#else
  info["openmp"] = pybind11::none();
#endif
#ifdef NDEBUG
  info["debug"] = false;
#else
  info["debug"] = true;
#endif
  pybind11::dict families;
  for (const auto& [family, backends] : fastgan::built_families()) {
    pybind11::list l;
    for (const auto& b : backends) l.append(b);
    families[family.c_str()] = l;
  }
  info["families"] = families;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastgan compiled kernels: op registrations (torch.ops.fastgan.*) and build information";
  m.def("build_info", &build_info,
        "Compiler, torch and CUDA versions, CUDA archs, and which op families were compiled for which backend.");
}

// Stub for compile-checking .cu files against a CPU-only torch wheel, which lacks this generated header.
// .ci/check_cu.sh puts .ci/cuda_stubs *last* on the include path, so a CUDA torch's real header wins.
#pragma once
#define AT_CUDNN_ENABLED() 0
#define AT_CUSPARSELT_ENABLED() 0
#define AT_HIPSPARSELT_ENABLED() 0
#define AT_ROCM_ENABLED() 0
#define AT_MAGMA_ENABLED() 0
#define NVCC_FLAGS_EXTRA ""

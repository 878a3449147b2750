// Stub for compile-checking .cu files against a CPU-only torch wheel, which lacks this generated header.
// .ci/check_cu.sh puts .ci/cuda_stubs *last* on the include path, so a CUDA torch's real header wins.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS

"""Build script for fastgan's one compiled extension, ``fastgan._C``.

FASTGAN_BUILD_CUDA=auto|1|0 (default auto):
  auto  CUDA kernels are built when torch has CUDA, nvcc exists and a GPU or TORCH_CUDA_ARCH_LIST is visible;
  1     CUDA kernels are required (the build fails loudly otherwise);
  0     CPU-only build.
FASTGAN_DEBUG=1 compiles with -O0 -g.  MAX_JOBS limits ninja's parallel compile jobs.
The Triton kernels in ``kernels/`` are installed as the package ``fastgan.kernels``.
"""
import glob
import os
import sys
import sysconfig

# Set before torch.utils.cpp_extension is imported: an nvcc wrapper on PATH makes torch guess CUDA_HOME=/usr/local.
if not os.environ.get("CUDA_HOME") and os.path.isdir("/usr/local/cuda"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
mode = os.environ.get("FASTGAN_BUILD_CUDA", "auto").strip().lower()
debug = os.environ.get("FASTGAN_DEBUG", "0") == "1"
can_cuda = (
    torch.version.cuda is not None
    and CUDA_HOME is not None
    and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))
)
if mode in ("0", "no", "off", "false"):
    build_cuda = False
elif mode in ("1", "yes", "on", "true"):
    if not can_cuda:
        sys.exit(
            f"fastgan: FASTGAN_BUILD_CUDA=1, but torch {torch.__version__} has cuda={torch.version.cuda} "
            f"and CUDA_HOME={CUDA_HOME} (nvcc must exist at $CUDA_HOME/bin/nvcc)"
        )
    build_cuda = True
elif mode == "auto":
    build_cuda = can_cuda and (torch.cuda.is_available() or bool(os.environ.get("TORCH_CUDA_ARCH_LIST")))
else:
    sys.exit(f"fastgan: FASTGAN_BUILD_CUDA must be auto, 1 or 0, got {mode!r}")
if build_cuda and not torch.cuda.is_available():
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")  # otherwise torch's arch detection raises IndexError

opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
cxx = opt + ["-fopenmp", "-ffp-contract=off"]  # no silent FMA: bit-equal results across impls
sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if build_cuda else ""
macros = [
    ("FASTGAN_TORCH_VERSION", f'"{torch.__version__}"'),
    ("FASTGAN_CUDA_ARCHS", f'"{archs}"'),
]
kw = dict(include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=["-fopenmp"])
if build_cuda:
    sources += sorted(glob.glob("csrc/**/*.cu", recursive=True))
# torch's ninja build names each object after its source path without the extension, so foo.cpp and foo.cu in one
# folder would both become foo.o ("multiple rules generate ... foo.o"). CUDA sources are named <op>_cuda.cu.
_stems = {}
for _s in sources:
    _stems.setdefault(os.path.splitext(_s)[0], []).append(_s)
_clash = [v for v in _stems.values() if len(v) > 1]
if _clash:
    sys.exit(f"fastgan: sources that would compile to the same object file: {_clash}; rename the .cu file to <op>_cuda.cu")
if build_cuda:
    macros.append(("FASTGAN_WITH_CUDA", "1"))
    nvcc = opt[:1] + ["-lineinfo", "--expt-relaxed-constexpr"]
    ext = CUDAExtension(
        "fastgan._C", sources, define_macros=macros,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kw,
    )
else:
    ext = CppExtension("fastgan._C", sources, define_macros=macros, extra_compile_args={"cxx": cxx}, **kw)
print(
    f"fastgan: building {'CPU+CUDA' if build_cuda else 'CPU-only'} extension from {len(sources)} sources"
    + (f" for archs {archs}" if build_cuda else ""),
    file=sys.stderr,
)

setup(
    packages=find_packages(include=["fastgan", "fastgan.*"]) + ["fastgan.kernels"],
    package_dir={"fastgan.kernels": "kernels"},
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)

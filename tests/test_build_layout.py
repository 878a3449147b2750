"""Source-tree rules that the CUDA build depends on but a CPU-only build would never exercise."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_two_sources_compile_to_the_same_object():
    # torch's ninja build names objects after the source path minus its extension: csrc/x/x.cpp and csrc/x/x.cu
    # would both produce csrc/x/x.o and the CUDA build fails with "multiple rules generate".
    sources = sorted(p for ext in ("*.cpp", "*.cu") for p in (ROOT / "csrc").rglob(ext))
    assert sources, "no C++/CUDA sources found under csrc/"
    stems = {}
    for p in sources:
        stems.setdefault(os.path.splitext(p.relative_to(ROOT))[0], []).append(p.name)
    clashes = {k: v for k, v in stems.items() if len(v) > 1}
    assert not clashes, f"sources sharing an object name: {clashes}"


def test_cuda_sources_follow_the_naming_rule():
    for p in (ROOT / "csrc").rglob("*.cu"):
        assert p.stem.endswith("_cuda"), f"{p.relative_to(ROOT)}: CUDA sources are named <op>_cuda.cu"


_PROBE = r"""
import os, sys, tempfile
import setuptools, torch
import torch.utils.cpp_extension as ce
captured = {}
setuptools.setup = lambda **kw: captured.update(kw)
if os.environ["FASTGAN_BUILD_CUDA"] == "1":
    fake = tempfile.mkdtemp()
    os.makedirs(os.path.join(fake, "bin"))
    open(os.path.join(fake, "bin", "nvcc"), "w").close()
    torch.version.cuda = torch.version.cuda or "13.0"
    ce.CUDA_HOME = fake
    os.environ["CUDA_HOME"] = fake
sys.argv = ["setup.py", "build_ext"]
exec(compile(open("setup.py").read(), "setup.py", "exec"), {"__name__": "__main__", "__file__": os.path.abspath("setup.py")})
(ext,) = captured["ext_modules"]
macros = dict(ext.define_macros)
print(type(ext.extra_compile_args).__name__, "FASTGAN_WITH_CUDA" in macros,
      sum(s.endswith(".cu") for s in ext.sources), ext.sources.__len__())
"""


def _probe_setup(mode):
    import subprocess
    import sys

    env = dict(os.environ, FASTGAN_BUILD_CUDA=mode, TORCH_CUDA_ARCH_LIST="9.0")
    r = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    kind, with_cuda, n_cu, n_src = r.stdout.split()[-4:]
    return kind, with_cuda == "True", int(n_cu), int(n_src)


def test_setup_builds_a_cuda_extension_when_cuda_is_requested():
    # A CUDA build must compile the .cu sources with nvcc and define FASTGAN_WITH_CUDA; a CPU-only test machine never
    # runs that branch, so evaluate setup.py with a stand-in nvcc and a captured setup() call.
    kind, with_cuda, n_cu, _ = _probe_setup("1")
    n_cu_tree = len(list((ROOT / "csrc").rglob("*.cu")))
    assert kind == "dict" and with_cuda and n_cu == n_cu_tree > 0, (kind, with_cuda, n_cu, n_cu_tree)


def test_setup_builds_cpu_only_when_cuda_is_off():
    kind, with_cuda, n_cu, n_src = _probe_setup("0")
    assert not with_cuda and n_cu == 0 and n_src > 0

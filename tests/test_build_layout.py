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

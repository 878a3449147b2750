"""Test lanes.

CPU lane (always): references, the C++ kernels, and the Triton kernels under the Triton interpreter
(TRITON_INTERPRET=1 is set here, before any kernel module is imported, when no CUDA device is visible).
GPU lane: tests marked ``gpu`` run only when CUDA is available and are skipped otherwise.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (gpu lane)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_numerics():
    """Fixed seed; TF32 off so fp32 CUDA results are comparable with the float64 references."""
    torch.manual_seed(0)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32

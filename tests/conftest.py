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


@pytest.fixture(autouse=True)
def _thread_count_kept():
    """Fail a test that leaves torch's intra-op thread count changed (after restoring it): a command run in-process
    that sets the count process-wide would slow down, or change the float summation order of, every later test."""
    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)
        pytest.fail(f"the test left torch's intra-op thread count at {after} (it was {before})")


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, the previous count restored afterwards: tiny tensors on a busy 2-core machine
    spend more on OpenMP hand-offs than on work, and commands that set the count process-wide must not leak it into
    later tests. Files whose tests all want it declare ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

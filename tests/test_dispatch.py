"""The op contract of fastgan.ops._dispatch: explicit impls raise with the reason, auto falls back with one
warning and a record, FASTGAN_STRICT_KERNELS turns fallback into an error, FASTGAN_IMPL overrides auto."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

import fastgan
from fastgan import ops
from fastgan.ops import _dispatch


@pytest.fixture
def toy_op(monkeypatch):
    """A registered op whose preferred 'cpp' impl is unavailable, so auto must fall back to 'ref'."""
    _dispatch.register_op("_toy", {"cpu": ("cpp", "ref")})
    _dispatch.register_impl("_toy", "ref", lambda x: x + 1, devices=("cpu",))
    _dispatch.register_impl("_toy", "cpp", lambda x: x + 2, devices=("cpu",), available=lambda d: "not built here")
    _dispatch._reset_for_tests()
    monkeypatch.delenv("FASTGAN_STRICT_KERNELS", raising=False)
    monkeypatch.delenv("FASTGAN_IMPL", raising=False)
    yield "_toy"
    _dispatch._OPS.pop("_toy", None)
    _dispatch._reset_for_tests()


def test_auto_falls_back_once_with_a_warning_and_a_record(toy_op):
    x = torch.zeros(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            name, fn = _dispatch.resolve(toy_op, "auto", x)
            assert name == "ref" and fn(x)[0] == 1
    fallbacks = [w for w in caught if issubclass(w.category, ops.FastganFallbackWarning)]
    assert len(fallbacks) == 1 and "not built here" in str(fallbacks[0].message)
    assert ops.dispatch_report()["_toy@cpu"] == {"chosen": "ref", "skipped": {"cpp": "not built here"}}


def test_strict_mode_turns_fallback_into_an_error(toy_op, monkeypatch):
    monkeypatch.setenv("FASTGAN_STRICT_KERNELS", "1")
    with pytest.raises(RuntimeError, match="FASTGAN_STRICT_KERNELS=1 forbids falling back"):
        _dispatch.resolve(toy_op, "auto", torch.zeros(2))


def test_explicit_impl_that_cannot_run_raises_with_the_reason(toy_op):
    with pytest.raises(RuntimeError, match="impl='cpp' cannot run.*not built here"):
        _dispatch.resolve(toy_op, "cpp", torch.zeros(2))
    with pytest.raises(RuntimeError, match="impl='cuda' cannot run"):
        ops.modulated_conv2d(torch.randn(1, 2, 4, 4), torch.randn(2, 2, 3, 3), torch.randn(1, 2), impl="cuda")
    with pytest.raises(ValueError, match="impl must be one of"):
        ops.modulated_conv2d(torch.randn(1, 2, 4, 4), torch.randn(2, 2, 3, 3), torch.randn(1, 2), impl="fast")


def test_fastgan_impl_environment_overrides_auto(toy_op, monkeypatch):
    monkeypatch.setenv("FASTGAN_IMPL", "ref")
    assert _dispatch.resolve(toy_op, "auto", torch.zeros(2))[0] == "ref"
    monkeypatch.setenv("FASTGAN_IMPL", "cpp")
    with pytest.raises(RuntimeError, match="not built here"):
        _dispatch.resolve(toy_op, "auto", torch.zeros(2))


def test_available_impls_and_unknown_op():
    avail = ops.available_impls("modulated_conv2d", "cpu")
    assert avail[0] == "cpp" and "ref" in avail  # the extension is built in the test environment
    assert ("triton" in avail) == (os.environ.get("TRITON_INTERPRET") == "1")
    assert "cuda" not in avail
    assert ops.available_impls("adafm_conv2d", torch.device("cpu")) == ops.available_impls("adafm_conv2d", "cpu")
    with pytest.raises(ValueError, match="unknown op"):
        ops.available_impls("no_such_op", "cpu")


def test_auto_picks_cpp_on_cpu_without_warning():
    _dispatch._reset_for_tests()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ops.FastganFallbackWarning)
        ops.modulated_conv2d(torch.randn(1, 2, 4, 4), torch.randn(2, 2, 3, 3), torch.randn(1, 2))
    assert ops.dispatch_report()["modulated_conv2d@cpu"]["chosen"] == "cpp"


def test_extension_is_loaded_with_build_info():
    assert fastgan.HAS_EXT, fastgan.EXT_ERROR
    info = fastgan.build_info()
    assert info["loaded"] and "cpu" in info["families"]["modconv"]
    assert info["torch"] == torch.__version__
    assert set(info) >= {"compiler", "torch", "cuda", "cuda_archs", "families"}


def _run(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=300)


def test_import_without_extension_falls_back_to_reference():
    code = (
        "import warnings, torch, fastgan\n"
        "from fastgan import ops\n"
        "assert not fastgan.HAS_EXT and 'FASTGAN_NO_EXT' in fastgan.EXT_ERROR\n"
        "x, w, s = torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3), torch.randn(1, 2)\n"
        "with warnings.catch_warnings(record=True) as c:\n"
        "    warnings.simplefilter('always')\n"
        "    y = ops.modulated_conv2d(x, w, s)\n"
        "assert any('not loaded' in str(m.message) for m in c), [str(m.message) for m in c]\n"
        "assert ops.dispatch_report()['modulated_conv2d@cpu']['chosen'] == 'ref'\n"
        "try:\n"
        "    ops.modulated_conv2d(x, w, s, impl='cpp')\n"
        "except RuntimeError as e:\n"
        "    assert 'not loaded' in str(e)\n"
        "else:\n"
        "    raise SystemExit('explicit cpp did not raise')\n"
        "print('ok')\n"
    )
    r = _run(code, FASTGAN_NO_EXT="1")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    strict = _run("import torch\nfrom fastgan import ops\n"
                  "ops.modulated_conv2d(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3), torch.randn(1, 2))\n",
                  FASTGAN_NO_EXT="1", FASTGAN_STRICT_KERNELS="1")
    assert strict.returncode != 0 and "FASTGAN_STRICT_KERNELS=1" in strict.stderr

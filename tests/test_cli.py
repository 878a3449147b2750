"""`fastgan doctor` and the command entry point."""
from __future__ import annotations

import io
import subprocess
import sys

import torch

from fastgan import cli, doctor
from fastgan.ops import _dispatch


def test_doctor_passes_and_reports_every_op():
    r = subprocess.run([sys.executable, "-m", "fastgan", "doctor"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for needle in ("== versions", "family modconv", "modulated_conv2d: available cpp", "adafm_conv2d",
                   "cpp     parity ok", "all parity checks passed"):
        assert needle in r.stdout, needle


def test_doctor_fails_on_a_parity_mismatch(monkeypatch):
    spec = _dispatch._OPS["modulated_conv2d"].impls["cpp"]
    good = spec.fn
    monkeypatch.setattr(spec, "fn", lambda *a: good(*a) * 1.01)
    out = io.StringIO()
    assert doctor.run(devices=["cpu"], out=out) == 1
    assert "cpp     PARITY FAILED" in out.getvalue()


def test_doctor_reports_a_crashing_impl(monkeypatch):
    def boom(*a):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(_dispatch._OPS["adafm_conv2d"].impls["cpp"], "fn", boom)
    out = io.StringIO()
    assert doctor.run(devices=["cpu"], out=out) == 1
    assert "kernel exploded" in out.getvalue()


def test_cli_version_and_help(capsys):
    assert cli.main(["--version"]) == 0
    assert "fastgan 0.1.0" in capsys.readouterr().out
    assert cli.main([]) == 2
    assert torch.__version__  # the CLI imports nothing heavy before a command runs

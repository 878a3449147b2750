"""`fastgan ref`: dataset statistics written once, reused while the content is the same, recomputed when it changes."""
from __future__ import annotations

import zipfile

import pytest
import torch

from fastgan import cli
from fastgan.metrics import FeatureStats, get_extractor
from fastgan.metrics.reference import compute_reference, content_sha256, iter_images
from fastgan.synth import PrimitivesPS, write_dataset


def _dataset(path, seed, num=20):
    gen = PrimitivesPS(16, num_shapes=5, seed=seed)
    write_dataset(path, gen, num, progress=False, log=lambda s: None)
    return gen


def test_ref_command_writes_reuses_and_recomputes(tmp_path, capsys):
    data, out = tmp_path / "ds.zip", tmp_path / "refs" / "ds.npz"
    gen = _dataset(data, seed=0)
    argv = ["ref", "--data", str(data), "--out", str(out), "--extractor", "pixels", "--extractor-arg", "size=8",
            "--device", "cpu"]
    assert cli.main(argv) == 0
    st = FeatureStats.load(out)
    assert st.n == 20 and st.keep_features  # 20 images <= 2 x 192 dims: features kept
    assert st.metadata["content_sha256"] == content_sha256(data) and st.metadata["extractor"] == "pixels-8"
    assert st.metadata["protocol"] == "clean" and st.metadata["cov_norm"] == "unbiased"
    # the statistics are those of the images PrimitivesPS wrote, through the same extractor
    want = get_extractor("pixels", size=8)(gen.images(0, 20))
    assert torch.allclose(st.features(), want.double(), atol=1e-6)
    mtime = out.stat().st_mtime_ns
    assert cli.main(argv) == 0 and "up to date" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == mtime
    # another protocol or a changed dataset is recomputed
    assert cli.main(argv + ["--protocol", "nvlabs"]) == 0
    assert FeatureStats.load(out).metadata["protocol"] == "nvlabs"
    data.unlink()
    _dataset(data, seed=1)
    assert cli.main(argv + ["--protocol", "nvlabs"]) == 0
    assert FeatureStats.load(out).metadata["content_sha256"] == content_sha256(data) != st.metadata["content_sha256"]


def test_folders_and_batches(tmp_path):
    data = tmp_path / "ds.zip"
    _dataset(data, seed=2, num=7)
    folder = tmp_path / "folder"
    with zipfile.ZipFile(data) as z:
        z.extractall(folder)
    from_zip = torch.cat(list(iter_images(data, batch_size=3)))
    from_folder = torch.cat(list(iter_images(folder, batch_size=4)))
    assert from_zip.shape == (7, 3, 16, 16) and torch.equal(from_zip, from_folder)
    st, computed = compute_reference(folder, tmp_path / "f.npz", extractor="random-conv",
                                     extractor_kwargs={"dim": 16, "input_size": 16}, keep_features=False,
                                     log=lambda s: None)
    assert computed and st.n == 7 and not st.keep_features


def test_bad_input(tmp_path, capsys):
    assert cli.main(["ref", "--data", str(tmp_path / "none.zip"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "fastgan ref: error: dataset" in capsys.readouterr().err
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("dataset.json", "{}")
    assert cli.main(["ref", "--data", str(empty), "--out", str(tmp_path / "x.npz"), "--extractor", "pixels"]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
    assert cli.main(["ref", "--data", str(empty), "--out", str(tmp_path / "x.npz"), "--extractor-arg", "dim"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown protocol"):
        compute_reference(empty, tmp_path / "x.npz", extractor="pixels", protocol="tf9", log=lambda s: None)

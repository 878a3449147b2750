"""fastgan.data: folder/zip conversion (`fastgan data make`), inspection and the training loader (WORKFLOWS (d) 1-7)."""
from __future__ import annotations

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan import cli
from fastgan.data import ImageDataset, inspect_dataset, make_dataset
from fastgan.data.layout import content_sha256, image_name

QUIET = {"progress": False, "log": lambda s: None}


def _save(path, arr_or_img, fmt=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    img.save(path, format=fmt, **kw)
    return path


def _noise(h, w, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, c) if c > 1 else (h, w), dtype=np.uint8)


def _folder(root, sizes, seed=0):
    for k, (w, h) in enumerate(sizes):
        _save(root / f"img{k:02d}.png", _noise(h, w, seed=seed + k))
    return root


def _zip_images(path):
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        imgs = {n: np.asarray(Image.open(io.BytesIO(z.read(n)))) for n in names}
        return imgs, json.loads(z.read("dataset.json"))


def _truncated_png(path):
    buf = io.BytesIO()
    Image.fromarray(_noise(8, 8, seed=9)).save(buf, format="png")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    return path


# ---- sizes and transforms --------------------------------------------------------------------------------------------
def test_mixed_sizes_without_transform_name_the_file_and_its_size(tmp_path):
    src = _folder(tmp_path / "src", [(8, 8), (8, 8), (12, 8)])
    for kw in ({}, {"resolution": 8}):
        with pytest.raises(ValueError, match=r"img02\.png: image is 12x8, not 8x8.*--transform"):
            make_dataset(src, tmp_path / "d.zip", **kw, **QUIET)
    odd = _folder(tmp_path / "odd", [(12, 12)])
    with pytest.raises(ValueError, match=r"img00\.png: image is 12x12, not a square power-of-two.*--transform"):
        make_dataset(odd, tmp_path / "d.zip", **QUIET)
    assert not (tmp_path / "d.zip").exists()


def test_center_crop_pad_and_resize_give_the_exact_shape(tmp_path):
    wide = np.zeros((8, 16, 3), np.uint8)
    wide[:, :8] = (255, 0, 0)
    wide[:, 8:] = (0, 0, 255)
    _save(tmp_path / "src" / "a.png", wide)
    _save(tmp_path / "src" / "b.png", np.full((16, 8, 3), 255, np.uint8))  # tall, white
    s = make_dataset(tmp_path / "src", tmp_path / "crop.zip", resolution=8, transform="center-crop", **QUIET)
    imgs, meta = _zip_images(tmp_path / "crop.zip")
    assert s["num_images"] == 2 and meta["fastgan"]["resolution"] == 8 and meta["labels"] is None
    a = imgs[image_name(0)]
    assert a.shape == (8, 8, 3)
    assert (a[:, :4] == (255, 0, 0)).all() and (a[:, 4:] == (0, 0, 255)).all()  # the centre 8 columns, unscaled
    assert (imgs[image_name(1)] == 255).all()

    make_dataset(tmp_path / "src", tmp_path / "pad.zip", resolution=16, transform="pad", **QUIET)
    imgs, _ = _zip_images(tmp_path / "pad.zip")
    a, b = imgs[image_name(0)], imgs[image_name(1)]
    assert a.shape == b.shape == (16, 16, 3)
    assert (a[:4] == 0).all() and (a[12:] == 0).all() and (a[4:12, :8] == (255, 0, 0)).all()  # black rows above/below
    assert (b[:, :4] == 0).all() and (b[:, 12:] == 0).all() and (b[:, 4:12] == 255).all()  # black columns beside

    make_dataset(tmp_path / "src", tmp_path / "rs.zip", resolution=4, transform="resize", **QUIET)
    assert all(v.shape == (4, 4, 3) for v in _zip_images(tmp_path / "rs.zip")[0].values())

    with pytest.raises(ValueError, match="--transform pad needs --resolution"):
        make_dataset(tmp_path / "src", tmp_path / "x.zip", transform="pad", **QUIET)
    with pytest.raises(ValueError, match="--resolution must be a power of two >= 4"):
        make_dataset(tmp_path / "src", tmp_path / "x.zip", resolution=12, transform="pad", **QUIET)
    with pytest.raises(ValueError, match="--transform must be one of"):
        make_dataset(tmp_path / "src", tmp_path / "x.zip", resolution=8, transform="crop", **QUIET)
    assert not (tmp_path / "x.zip").exists()


# ---- unreadable files ---------------------------------------------------------------------------------------------
def _bad_file(kind, path):
    if kind == "truncated":
        return _truncated_png(path.with_suffix(".png"))
    if kind == "empty":
        p = path.with_suffix(".png")
        p.write_bytes(b"")
        return p
    p = path.with_suffix(".jpg")
    p.write_text("this is not a JPEG\n")
    return p


@pytest.mark.parametrize("kind", ["truncated", "empty", "text"])
def test_unreadable_file_fails_naming_it(tmp_path, kind):
    src = _folder(tmp_path / "src", [(8, 8), (8, 8)])
    bad = _bad_file(kind, src / "zz_bad")
    with pytest.raises(ValueError, match=rf"{bad.name}: .*--on-error skip"):
        make_dataset(src, tmp_path / "d.zip", **QUIET)
    assert sorted(os.listdir(tmp_path)) == ["src"]  # no zip, no temporary, no skipped list


def test_unreadable_files_are_skipped_and_listed(tmp_path):
    src = _folder(tmp_path / "src", [(8, 8), (8, 8)])
    bad = [_bad_file(k, src / f"bad_{k}") for k in ("truncated", "empty", "text")]
    s = make_dataset(src, tmp_path / "d.zip", on_error="skip", **QUIET)
    imgs, meta = _zip_images(tmp_path / "d.zip")
    assert s["num_images"] == 2 and s["skipped"] == 3 and meta["fastgan"]["skipped"] == 3
    assert meta["fastgan"]["source_names"] == ["img00.png", "img01.png"]
    assert np.array_equal(imgs[image_name(1)], np.asarray(Image.open(src / "img01.png")))
    listed = (tmp_path / "d-skipped.txt").read_text().splitlines()
    assert s["skipped_file"] == str(tmp_path / "d-skipped.txt")
    assert [line.split("\t")[0] for line in listed] == sorted(p.name for p in bad)
    ds = ImageDataset(tmp_path / "d.zip")  # the loader only meets good images
    assert len(ds) == 2 and all(ds[i][0].shape == (3, 8, 8) for i in range(2))


# ---- modes ----------------------------------------------------------------------------------------------------------
def _mode_folder(root):
    _save(root / "a_L.png", Image.new("L", (8, 8), 77))
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4] = (200, 100, 50, 255)  # opaque top half
    rgba[4:] = (255, 255, 255, 0)  # transparent bottom half
    _save(root / "b_RGBA.png", Image.fromarray(rgba, "RGBA"))
    _save(root / "c_LA.png", Image.new("LA", (8, 8), (120, 128)))
    _save(root / "d_I16.png", Image.fromarray(np.full((8, 8), 257 * 100, np.uint16)))
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    _save(root / "e_P.png", pal)
    _save(root / "f_CMYK.tif", Image.new("CMYK", (8, 8), (0, 255, 255, 0)))
    return root


def test_modes_are_converted_to_rgb_with_a_summary(tmp_path):
    src = _mode_folder(tmp_path / "src")
    with Image.open(src / "d_I16.png") as im:
        assert im.mode == "I;16"
    s = make_dataset(src, tmp_path / "d.zip", **QUIET)
    assert s["modes"] == {"CMYK": 1, "I;16": 1, "L": 1, "LA": 1, "P": 1, "RGBA": 1}
    assert s["alpha_composited"] == 2 and s["sixteen_bit"] == 1 and s["alpha"] == "composited over black"
    ds = ImageDataset(tmp_path / "d.zip")
    assert ds.image_shape == (3, 8, 8) and ds.channels == 3
    px = [ds[i][0][:, 0, 0].tolist() for i in range(6)]
    assert px[0] == [77, 77, 77]
    assert px[1] == [200, 100, 50] and ds[1][0][:, 7, 0].tolist() == [0, 0, 0]  # transparent -> black
    assert px[2] == [60, 60, 60]  # 120 * 128 / 255 over black
    assert px[3] == [100, 100, 100]  # 16-bit 25700 scaled, not clipped to 255
    assert px[4] == [10, 200, 30]
    assert px[5] == [255, 0, 0]


def test_gray_and_auto_channels(tmp_path):
    src = _mode_folder(tmp_path / "src")
    make_dataset(src, tmp_path / "g.zip", channels="gray", **QUIET)
    ds = ImageDataset(tmp_path / "g.zip")
    assert ds.image_shape == (1, 8, 8)
    assert ds[0][0][0, 0, 0] == 77 and ds[3][0][0, 0, 0] == 100
    assert ds[5][0][0, 0, 0] == round(0.299 * 255)  # red -> luma
    s = make_dataset(src, tmp_path / "a.zip", channels="auto", **QUIET)
    assert s["channels"] == 3  # colour images present
    grays = tmp_path / "grays"
    for name in ("a_L.png", "c_LA.png", "d_I16.png"):
        os.makedirs(grays, exist_ok=True)
        os.link(src / name, grays / name)
    s = make_dataset(grays, tmp_path / "ga.zip", channels="auto", **QUIET)
    assert s["channels"] == 1 and ImageDataset(tmp_path / "ga.zip").channels == 1


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((16, 32, 3), np.uint8)  # 32 wide, 16 high
    img[:8] = (255, 0, 0)  # top red
    img[8:] = (0, 0, 255)  # bottom blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    _save(tmp_path / "src" / "photo.jpg", img, "JPEG", exif=exif.tobytes(), quality=95)
    s = make_dataset(tmp_path / "src", tmp_path / "d.zip", resolution=32, transform="pad", **QUIET)
    out = _zip_images(tmp_path / "d.zip")[0][image_name(0)].astype(int)
    assert s["exif_rotated"] == 1
    # shown upright the photo is 16 wide and 32 high: padding left and right, red (the top) now on the right
    assert out[:, :6].max() < 20 and out[:, 26:].max() < 20
    r, b = out[16, 20], out[16, 11]
    assert r[0] > 200 and r[2] < 60 and b[2] > 200 and b[0] < 60


# ---- labels ---------------------------------------------------------------------------------------------------------
def _labelled(root, labels):
    _folder(root, [(8, 8)] * 3)
    (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    return root


def test_partial_labels_are_an_error_or_dropped_with_a_warning(tmp_path):
    src = _labelled(tmp_path / "src", [["img00.png", 0], ["img02.png", 1]])
    with pytest.raises(ValueError, match=r"1 of 3 images have no label \(e\.g\. 'img01\.png'\).*--labels drop"):
        make_dataset(src, tmp_path / "d.zip", **QUIET)
    assert not (tmp_path / "d.zip").exists()
    lines = []
    s = make_dataset(src, tmp_path / "d.zip", labels="drop", progress=False, log=lines.append)
    assert any(line.startswith("warning: dropping the labels of 2 of 3 images") for line in lines)
    _, meta = _zip_images(tmp_path / "d.zip")
    assert meta["labels"] is None and s["labels"] == "dropped"
    assert ImageDataset(tmp_path / "d.zip").label_dim == 0


def test_full_labels_become_one_hot_in_the_loader(tmp_path):
    src = _labelled(tmp_path / "src", [["img02.png", 1], ["img00.png", 0], ["img01.png", 3]])
    s = make_dataset(src, tmp_path / "d.zip", **QUIET)
    _, meta = _zip_images(tmp_path / "d.zip")
    assert meta["labels"] == [[image_name(0), 0], [image_name(1), 3], [image_name(2), 1]]
    assert s["labels"] == "class" and s["label_dim"] == 4
    ds = ImageDataset(tmp_path / "d.zip")
    assert ds.has_labels and ds.label_dim == 4 and ds.labels.dtype == np.float32
    assert np.array_equal(ds.labels, np.eye(4, dtype=np.float32)[[0, 3, 1]])
    img, label = ds[1]
    assert label.dtype == torch.float32 and label.tolist() == [0, 0, 0, 1]
    assert ImageDataset(tmp_path / "d.zip", use_labels=False).labels.shape == (3, 0)
    vec = _labelled(tmp_path / "vec", [[f"img0{k}.png", [k, 0.5]] for k in range(3)])
    make_dataset(vec, tmp_path / "v.zip", **QUIET)
    assert ImageDataset(tmp_path / "v.zip").labels.tolist() == [[0, 0.5], [1, 0.5], [2, 0.5]]
    info = inspect_dataset(tmp_path / "d.zip")
    assert info["labels"]["class_counts"] == {"0": 1, "1": 1, "3": 1} and info["labels"]["label_dim"] == 4


# ---- destination safety and determinism ----------------------------------------------------------------------------
def test_empty_source_is_an_error_and_nothing_is_written(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    for src in ("empty", "notes"):
        with pytest.raises(ValueError, match="holds no images"):
            make_dataset(tmp_path / src, tmp_path / "d.zip", **QUIET)
    with zipfile.ZipFile(tmp_path / "e.zip", "w") as z:
        z.writestr("dataset.json", "{}")
    with pytest.raises(ValueError, match="holds no images"):
        make_dataset(tmp_path / "e.zip", tmp_path / "d.zip", **QUIET)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_dataset(tmp_path / "missing", tmp_path / "d.zip", **QUIET)
    assert sorted(os.listdir(tmp_path)) == ["e.zip", "empty", "notes"]


def test_existing_dest_refused_overwrite_works_and_a_failure_keeps_it(tmp_path):
    src = _folder(tmp_path / "src", [(8, 8)] * 4)
    dest = tmp_path / "out" / "d.zip"
    dest.parent.mkdir()
    dest.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_dataset(src, dest, **QUIET)
    assert dest.read_bytes() == b"precious"
    make_dataset(src, dest, overwrite=True, **QUIET)
    good = dest.read_bytes()
    assert len(_zip_images(dest)[0]) == 4
    _truncated_png(src / "zz_last.png")  # readable header: found only while writing, after 4 images
    with pytest.raises(ValueError, match=r"zz_last\.png: cannot decode"):
        make_dataset(src, dest, overwrite=True, **QUIET)
    assert dest.read_bytes() == good and os.listdir(dest.parent) == ["d.zip"]


def test_same_inputs_give_identical_bytes(tmp_path):
    src = _mode_folder(tmp_path / "src")
    _save(src / "sub" / "wide.png", _noise(10, 20, seed=3))
    kw = dict(resolution=8, transform="center-crop", **QUIET)
    make_dataset(src, tmp_path / "a.zip", **kw)
    make_dataset(src, tmp_path / "b.zip", workers=1, **kw)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert _zip_images(tmp_path / "a.zip")[1]["fastgan"]["source_names"][-1] == "sub/wide.png"


def test_zip_source_and_max_images(tmp_path):
    with zipfile.ZipFile(tmp_path / "src.zip", "w") as z:
        for k in range(5):
            buf = io.BytesIO()
            Image.fromarray(_noise(16, 16, seed=k)).save(buf, format="png")
            z.writestr(f"photos/p{k}.png", buf.getvalue())
        z.writestr("dataset.json", json.dumps({"labels": [[f"photos/p{k}.png", k % 2] for k in range(5)]}))
    s = make_dataset(tmp_path / "src.zip", tmp_path / "d.zip", max_images=3, resolution=8, transform="resize", **QUIET)
    ds = ImageDataset(tmp_path / "d.zip")
    assert s["num_images"] == 3 and len(ds) == 3 and ds.image_shape == (3, 8, 8)
    assert ds.labels.tolist() == [[1, 0], [0, 1], [1, 0]]
    assert ImageDataset(tmp_path / "src.zip", max_images=2).labels.shape == (2, 2)
    with pytest.raises(ValueError, match="is the --source zip"):
        make_dataset(tmp_path / "src.zip", tmp_path / "src.zip", overwrite=True, **QUIET)


# ---- the loader -----------------------------------------------------------------------------------------------------
def test_loader_refuses_an_unconverted_folder(tmp_path):
    src = _folder(tmp_path / "mixed", [(8, 8), (16, 16)])
    with pytest.raises(ValueError, match=r"img01\.png: 16x16 RGB, while img00\.png is 8x8.*fastgan data make"):
        ImageDataset(src)
    rgba = tmp_path / "rgba"
    _save(rgba / "a.png", Image.new("RGBA", (8, 8)))
    with pytest.raises(ValueError, match=r"a\.png: mode RGBA.*fastgan data make"):
        ImageDataset(rgba)
    _save(tmp_path / "wide" / "a.png", _noise(8, 16))
    with pytest.raises(ValueError, match=r"not square.*fastgan data make"):
        ImageDataset(tmp_path / "wide")
    clean = _folder(tmp_path / "clean", [(8, 8)] * 3)
    ds = ImageDataset(clean)
    assert ds.name == "clean" and len(ds) == 3
    assert torch.equal(ds[2][0], torch.from_numpy(np.array(Image.open(clean / "img02.png"))).permute(2, 0, 1))
    assert ds.content_sha256 == content_sha256(clean)
    with pytest.raises(ValueError, match="holds 8x8 images, not 16x16"):
        ImageDataset(clean, resolution=16)


def test_loader_on_a_zip_pickles_and_runs_in_worker_processes(tmp_path):
    src = _labelled(tmp_path / "src", [["img00.png", 2], ["img01.png", 0], ["img02.png", 1]])
    for k in range(3, 7):
        _save(src / f"img{k:02d}.png", _noise(8, 8, seed=k))
    meta = json.loads((src / "dataset.json").read_text())
    meta["labels"] += [[f"img{k:02d}.png", k % 3] for k in range(3, 7)]
    (src / "dataset.json").write_text(json.dumps(meta))
    make_dataset(src, tmp_path / "d.zip", **QUIET)
    ds = ImageDataset(tmp_path / "d.zip")
    img, label = ds[0]  # opens the zip in this process before the workers fork
    assert img.dtype == torch.uint8 and img.shape == (3, 8, 8) and label.shape == (3,)
    assert torch.equal(img, torch.from_numpy(np.array(Image.open(src / "img00.png"))).permute(2, 0, 1))
    d = ds.describe()
    assert d == {"path": str(tmp_path / "d.zip"), "name": "d", "num_images": 7, "resolution": 8, "channels": 3,
                 "label_dim": 3, "sha256": None}
    assert ds.describe(sha256=True)["sha256"] == content_sha256(tmp_path / "d.zip")

    again = pickle.loads(pickle.dumps(ds))
    assert len(again) == 7 and all(torch.equal(again[i][0], ds[i][0]) for i in range(7))
    assert np.array_equal(again.labels, ds.labels)

    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    imgs, labels = zip(*loader)
    imgs, labels = torch.cat(imgs), torch.cat(labels)
    assert imgs.shape == (7, 3, 8, 8)
    assert torch.equal(imgs, torch.stack([ds[i][0] for i in range(7)]))
    assert labels.argmax(1).tolist() == [2, 0, 1, 0, 1, 2, 0]


def test_loader_checks_each_image_it_reads(tmp_path):
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        for k, size in enumerate((8, 8, 16)):
            buf = io.BytesIO()
            Image.fromarray(_noise(size, size, seed=k)).save(buf, format="png")
            z.writestr(image_name(k), buf.getvalue())
        z.writestr(image_name(3), b"not a png")
    ds = ImageDataset(tmp_path / "d.zip")  # a zip is checked through its first image
    assert len(ds) == 4 and ds[1][0].shape == (3, 8, 8)
    with pytest.raises(ValueError, match=r"00000/img00000002\.png: image is 16x16 RGB, while the dataset is 8x8 RGB"):
        ds[2]
    with pytest.raises(ValueError, match=r"00000/img00000003\.png: not a readable image.*--on-error skip"):
        ds[3]


# ---- inspect and the command --------------------------------------------------------------------------------------
def test_inspect_reports_shapes_modes_and_problems(tmp_path):
    src = _folder(tmp_path / "src", [(8, 8), (8, 8), (16, 8)])
    _save(src / "g.png", Image.new("L", (8, 8)))
    (src / "bad.png").write_bytes(b"")
    info = inspect_dataset(src)
    assert info["num_images"] == 4 and info["num_files"] == 5 and info["kind"] == "folder"
    assert info["shapes"] == [{"shape": [3, 8, 8], "count": 2}, {"shape": [1, 8, 8], "count": 1},
                              {"shape": [3, 8, 16], "count": 1}]
    assert info["modes"] == {"L": 1, "RGB": 3} and info["unreadable"][0][0] == "bad.png"
    assert not info["trainable"] and any("not square" in p for p in info["problems"])
    assert info["sha256"] == content_sha256(src)


def test_cli_make_and_inspect(tmp_path, capsys):
    src = _folder(tmp_path / "src", [(8, 8), (16, 8), (8, 16)])
    dest = tmp_path / "d.zip"
    assert cli.main(["data", "make", "--source", str(src), "--dest", str(dest), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastgan data make: error: ") and "img01.png: image is 16x8" in err
    assert len(err.splitlines()) == 1 and not dest.exists()
    assert cli.main(["data", "make", "--source", str(src), "--dest", str(dest), "--resolution", "7",
                     "--transform", "pad"]) == 2
    assert "--resolution must be a power of two" in capsys.readouterr().err
    assert cli.main(["data", "make", "--source", str(tmp_path / "nope"), "--dest", str(dest)]) == 2
    assert "does not exist" in capsys.readouterr().err

    assert cli.main(["data", "make", "--source", str(src), "--dest", str(dest), "--resolution", "8x8",
                     "--transform", "center-crop", "--channels", "gray"]) == 0
    assert "wrote 3 images (8x8, gray, center-crop)" in capsys.readouterr().out
    assert cli.main(["data", "make", "--source", str(src), "--dest", str(dest), "--resolution", "8",
                     "--transform", "pad", "--quiet"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err

    assert cli.main(["data", "inspect", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "images:   3" in out and "1x8x8 (CxHxW)  3 image(s)" in out and "ready for training" in out
    assert cli.main(["data", "inspect", str(src), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_images"] == 3 and info["trainable"] is False
    assert cli.main(["data", "inspect", str(tmp_path / "nope")]) == 2
    assert "fastgan data inspect: error: dataset" in capsys.readouterr().err

"""fastgan.synth: PrimitivesPS determinism and variants, the parameter sampler, the dataset zip and its command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from fastgan import cli, ops
from fastgan.synth import PrimitivesPS, params as P, write_dataset
from fastgan.synth.dataset import image_name, shard_range

R = 32


def _impls():
    return [i for i in ("ref", "cpp", "triton") if ops.why_unavailable("rasterize_shapes", i, "cpu") is None]


# ---- the parameter sampler ----------------------------------------------------------------------------------
def test_max_size_schedule_matches_numpy_rounding():
    sizes = P.max_sizes(256, 100)
    assert sizes[0] == 53 and sizes[50] == 28 and sizes[99] == 3
    assert sizes == [int(np.round(256 // 5 * (100 - i) / 100 + 2)) for i in range(100)]


@pytest.mark.parametrize("compat", ["fastgan", "official"])
def test_shape_table_ranges(compat):
    r, n = 256, 100
    t = P.shape_table(5, torch.arange(300), r, n, compat)
    assert t.shape == (300, n, 10) and t.dtype == torch.float32
    assert torch.equal(t, torch.round(t))  # integer parameters: exact on every device
    kind = t[..., 0]
    frac = {k: (kind == k).float().mean().item() for k in (1, 2, 3, 4)}
    assert abs(frac[1] - 1 / 7) < 0.01 and all(abs(frac[k] - 2 / 7) < 0.015 for k in (2, 3, 4))
    cap = torch.tensor(P.max_sizes(r, n)).float().view(1, n)
    circ = kind == 2
    assert (t[..., 6][circ] >= 1).all() and (t[..., 6] < cap)[circ].all()
    ell = kind == 3
    assert ((t[..., 8] >= 0) & (t[..., 8] < 180))[ell].all()
    line = kind == 1
    x0, y0, x1, y1 = (t[..., k][line] for k in (4, 5, 6, 7))
    colours = t[..., 1:4]
    if compat == "official":
        assert (x0 <= x1).all() and (y0 <= y1).all()  # the sorted-endpoint quirk
        assert colours.max() <= 254 and max(x0.max(), x1.max()) <= 254
        rect = kind == 4
        assert (t[..., 4][rect] <= (254 - cap.expand_as(kind))[rect]).all()
    else:
        assert (x0 > x1).any() and (y0 > y1).any()  # every orientation
        assert colours.max() == 255 and max(x0.max(), x1.max()) == r - 1
        rect = kind == 4
        assert (t[..., 6][rect] <= r - 1).all() and (t[..., 7][rect] <= r - 1).all()  # rectangles fit


def test_salient_row_official_quirks_and_fastgan_fixes():
    idx = torch.arange(2000)
    off = P.salient_row(1, idx, 256, "official", "texture")[:, 0]
    fg = P.salient_row(1, idx, 256, "fastgan", "texture")[:, 0]
    for row in (off, fg):
        kinds = row[:, 0] - 8
        assert set(kinds.unique().tolist()) == {2.0, 3.0, 4.0}
        circle = kinds == 2
        assert ((row[circle, 6] >= 64) & (row[circle, 6] <= 95)).all()
        assert ((row[circle, 4] >= 103) & (row[circle, 4] <= 152)).all()
    # per-channel mask flags: official (colour > 0) leaves a channel unmasked about 1 in 255 times
    assert (off[:, 1:4] == 0).any() and (fg[:, 1:4] == 1).all()
    # official rectangles ignore the centre: top-left in [32, 127]; fastgan centres them
    orect = off[:, 0] == 12
    assert ((off[orect, 4] >= 32) & (off[orect, 4] <= 127)).all()
    frect = fg[:, 0] == 12
    cx = (fg[frect, 4] + fg[frect, 6]) / 2
    assert ((cx >= 102) & (cx <= 153)).all()
    solid = P.salient_row(1, idx, 256, "fastgan", "solid")[:, 0]
    assert solid[:, 0].max() <= 4 and solid[:, 1:4].max() > 1


def test_flat_colours_grey_in_official():
    off = P.flat_colours(3, torch.arange(50), "official")
    assert (off == off[:, :1]).all()
    fg = P.flat_colours(3, torch.arange(50), "fastgan")
    assert (fg != fg[:, :1]).any()


# ---- PrimitivesPS ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["pinknoise", "primitives", "primitives-s", "primitives-ps"])
def test_variants_shapes_and_determinism(variant):
    g = PrimitivesPS.variant(variant, R, seed=9, impl="ref")
    x = g.images(3, 4)
    assert x.shape == (4, 3, R, R) and x.dtype == torch.uint8
    assert g.variant_name == variant
    # image k depends only on (seed, k): any batch split gives the same images
    parts = torch.cat([g.images(3, 1), g.images(4, 3)])
    assert torch.equal(x, parts)
    assert not torch.equal(x, PrimitivesPS.variant(variant, R, seed=10, impl="ref").images(3, 4))
    b = g.batch(3, 4)
    assert b.dtype == torch.float32 and b.min() >= -1 and b.max() <= 1
    assert torch.equal(((b + 1) * 127.5).round().to(torch.uint8), x)


def test_variant_aliases_and_bad_names():
    assert PrimitivesPS.variant("all", R).variant_name == "primitives-ps"
    assert PrimitivesPS.variant("shapes+saliency", R).variant_name == "primitives-s"
    assert PrimitivesPS.variant("spectrum", R).num_shapes == 0
    with pytest.raises(ValueError, match="unknown variant 'leaves'"):
        PrimitivesPS.variant("leaves", R)


def test_impls_give_bit_identical_images():
    impls = _impls()
    assert "ref" in impls
    ref = PrimitivesPS(R, seed=4, impl="ref")
    want = ref.images(0, 3)
    # shapes are bit-identical; the noise's inverse FFT is torch's for every impl, and the stages that differ
    # (field, quantisation) must agree exactly here after the same irfft2 for uint8 images at this size
    for impl in impls[1:]:
        got = PrimitivesPS(R, seed=4, impl=impl).images(0, 3)
        diff = (got.int() - want.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3, impl
        table = ref.shape_table(0, 3)
        canvas = torch.randint(0, 256, (3, 3, R, R), dtype=torch.uint8)
        tex = torch.randint(0, 256, (3, 3, R, R), dtype=torch.uint8)
        assert torch.equal(ops.rasterize_shapes(canvas, table, texture=tex, impl=impl),
                           ops.rasterize_shapes(canvas, table, texture=tex, impl="ref"))


def test_compat_changes_only_what_it_should():
    a = PrimitivesPS.variant("pinknoise", R, compat="official", seed=2, impl="ref").images(0, 2)
    b = PrimitivesPS.variant("pinknoise", R, compat="fastgan", seed=2, impl="ref").images(0, 2)
    assert torch.equal(a, b)  # the spectrum has no quirks
    a = PrimitivesPS(R, compat="official", seed=2, impl="ref").shape_table(0, 2)
    b = PrimitivesPS(R, compat="fastgan", seed=2, impl="ref").shape_table(0, 2)
    assert not torch.equal(a, b)


def test_iter_batches_ranks_partition_the_stream():
    g = PrimitivesPS.variant("primitives", 16, seed=1, impl="ref")
    single = list(g.iter_batches(4, num_batches=2))
    r0 = list(g.iter_batches(2, rank=0, world_size=2, num_batches=2))
    r1 = list(g.iter_batches(2, rank=1, world_size=2, num_batches=2))
    assert torch.equal(torch.cat([r0[0], r1[0], r0[1], r1[1]]), torch.cat(single))
    cl = next(g.iter_batches(2, channels_last=True, dtype=torch.float16))
    assert cl.dtype == torch.float16 and cl.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="rank"):
        next(g.iter_batches(2, rank=2, world_size=2))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="resolution must be at least 8"):
        PrimitivesPS(4)
    with pytest.raises(ValueError, match="compat"):
        PrimitivesPS(R, compat="paper")
    with pytest.raises(ValueError, match="seed"):
        PrimitivesPS(R, seed=-3)
    with pytest.raises(ValueError, match="count must be at least 1"):
        PrimitivesPS(R).images(0, 0)
    with pytest.raises(ValueError, match="saliency"):
        PrimitivesPS(R, saliency="glow")
    with pytest.raises(RuntimeError, match="impl='cuda'"):
        PrimitivesPS(R, impl="cuda").images(0, 1)


# ---- the dataset zip ---------------------------------------------------------------------------------------------
def _entries(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist() if n != "dataset.json"}, json.loads(zf.read("dataset.json"))


def test_dataset_zip_layout_metadata_and_content(tmp_path):
    g = PrimitivesPS(R, seed=7, impl="ref")
    meta = write_dataset(tmp_path / "d.zip", g, 5, batch_size=2, log=lambda s: None)
    files, stored = _entries(tmp_path / "d.zip")
    assert stored == json.loads(json.dumps(meta))
    assert sorted(files) == [image_name(k) for k in range(5)] == [f"00000/img{k:08d}.png" for k in range(5)]
    fg = stored["fastgan"]
    assert fg["generator"]["seed"] == 7 and fg["generator"]["resolution"] == R and stored["labels"] is None
    assert fg["generator"]["variant"] == "primitives-ps" and fg["index_range"] == [0, 5]
    from PIL import Image
    import io

    img = np.asarray(Image.open(io.BytesIO(files[image_name(3)])))
    assert img.shape == (R, R, 3)
    assert np.array_equal(img, g.images(3, 1)[0].permute(1, 2, 0).numpy())
    rebuilt = PrimitivesPS(**{k: v for k, v in fg["generator"].items()
                              if k in ("resolution", "num_shapes", "saliency", "compat", "seed", "background")})
    assert torch.equal(rebuilt.images(3, 1), g.images(3, 1))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left behind


def test_shards_union_equals_unsharded_and_bytes_are_reproducible(tmp_path):
    g = PrimitivesPS.variant("primitives-ps", 16, seed=3, impl="ref")
    write_dataset(tmp_path / "all.zip", g, 7, batch_size=3, log=lambda s: None)
    write_dataset(tmp_path / "again.zip", g, 7, batch_size=3, log=lambda s: None)
    assert (tmp_path / "all.zip").read_bytes() == (tmp_path / "again.zip").read_bytes()
    full, _ = _entries(tmp_path / "all.zip")
    union = {}
    for i in range(3):
        write_dataset(tmp_path / f"s{i}.zip", g, 7, shards=3, shard=i, batch_size=3, log=lambda s: None)
        part, meta = _entries(tmp_path / f"s{i}.zip")
        assert meta["fastgan"]["index_range"] == list(shard_range(7, 3, i))
        assert not set(part) & set(union)
        union.update(part)
    assert union == full


def test_existing_dest_refused_unless_overwrite(tmp_path):
    g = PrimitivesPS(16, seed=0, impl="ref")
    dest = tmp_path / "d.zip"
    dest.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_dataset(dest, g, 2, log=lambda s: None)
    assert dest.read_bytes() == b"precious"
    write_dataset(dest, g, 2, overwrite=True, log=lambda s: None)
    assert zipfile.is_zipfile(dest)


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    g = PrimitivesPS(16, seed=0, impl="ref")
    calls = {"n": 0}
    real = g.images

    def flaky(start, count):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device lost")
        return real(start, count)

    monkeypatch.setattr(g, "images", flaky)
    with pytest.raises(RuntimeError, match="device lost"):
        write_dataset(tmp_path / "d.zip", g, 6, batch_size=2, log=lambda s: None)
    assert os.listdir(tmp_path) == []


def test_unwritable_dest_is_a_clear_error(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root ignores permission bits: make the access check see a read-only folder
        import fastgan.synth.dataset as D

        real = D.os.access
        monkeypatch.setattr(D.os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    try:
        with pytest.raises(PermissionError, match="cannot write"):
            write_dataset(ro / "d.zip", PrimitivesPS(16, impl="ref"), 2, log=lambda s: None)
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o700)


def test_dest_problems(tmp_path):
    g = PrimitivesPS(16, impl="ref")
    with pytest.raises(ValueError, match=r"\.zip"):
        write_dataset(tmp_path / "d.tar", g, 2)
    with pytest.raises(ValueError, match="would hold no images"):
        write_dataset(tmp_path / "d.zip", g, 2, shards=4, shard=0)
    with pytest.raises(ValueError, match="shard must be in"):
        write_dataset(tmp_path / "d.zip", g, 8, shards=4, shard=4)
    with pytest.raises(ValueError, match="--num must be at least 1"):
        write_dataset(tmp_path / "d.zip", g, 0)
    (tmp_path / "dir.zip").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        write_dataset(tmp_path / "dir.zip", g, 2)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot create the folder"):
        write_dataset(blocker / "sub" / "d.zip", g, 2)
    assert sorted(os.listdir(tmp_path)) == ["dir.zip", "file"]


# ---- the command -----------------------------------------------------------------------------------------------
def test_cli_data_primitives(tmp_path, capsys):
    dest = tmp_path / "ps.zip"
    rc = cli.main(["data", "primitives", "--dest", str(dest), "--num", "3", "--resolution", "16", "--seed", "5",
                   "--variant", "primitives-s", "--compat", "official", "--device", "cpu", "--impl", "ref"])
    assert rc == 0 and "wrote 3 images" in capsys.readouterr().out
    files, meta = _entries(dest)
    assert len(files) == 3 and meta["fastgan"]["generator"]["compat"] == "official"
    assert meta["fastgan"]["generator"]["variant"] == "primitives-s"
    # bad input: exit 2, one line naming the problem, nothing written
    for argv, needle in [(["--num", "0"], "--num must be at least 1"), (["--resolution", "4"], "resolution"),
                         (["--variant", "clouds"], "unknown variant"), (["--num", "3"], "already exists")]:
        rc = cli.main(["data", "primitives", "--dest", str(dest), "--num", "3", "--device", "cpu"] + argv)
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and "Traceback" not in err, (argv, err)
    assert sorted(os.listdir(tmp_path)) == ["ps.zip"]


def test_cli_entry_point_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fastgan", "data", "primitives", "--dest", str(tmp_path / "x.zip"),
                        "--num", "2", "--resolution", "8", "--device", "cpu", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert zipfile.is_zipfile(tmp_path / "x.zip") and r.stdout == ""

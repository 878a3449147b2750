"""Preprocessing protocols (TF1 bilinear, PIL-equivalent bicubic, NVlabs quantisation) and the extractor registry."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastgan import metrics as M
from fastgan.metrics import extractors as E
from fastgan.metrics import protocols as P


def _tf1_bilinear_numpy(img: np.ndarray, size: int) -> np.ndarray:
    """TensorFlow 1 resize_bilinear(align_corners=False), written out pixel by pixel from its definition."""
    h, w = img.shape
    out = np.zeros((size, size), dtype=np.float64)
    for i in range(size):
        sy = i * h / size
        y0 = int(np.floor(sy))
        y1 = min(y0 + 1, h - 1)
        dy = sy - y0
        for j in range(size):
            sx = j * w / size
            x0 = int(np.floor(sx))
            x1 = min(x0 + 1, w - 1)
            dx = sx - x0
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * dx
            bot = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * dx
            out[i, j] = top + (bot - top) * dy
    return out


@pytest.mark.parametrize("h,w,size", [(8, 8, 19), (16, 12, 7), (5, 9, 5), (32, 32, 29)])
def test_tf1_bilinear_matches_its_definition(h, w, size):
    checker = ((np.arange(h)[:, None] // 2 + np.arange(w)[None, :] // 3) % 2 * 255.0)
    rnd = np.random.RandomState(h * w).rand(h, w) * 255
    for img in (checker, rnd):
        x = torch.from_numpy(img).float().view(1, 1, h, w).expand(2, 3, h, w)
        got = P.tf1_bilinear(x, size)
        want = _tf1_bilinear_numpy(img, size)
        assert got.shape == (2, 3, size, size)
        assert np.abs(got[1, 2].double().numpy() - want).max() <= 1e-3


def test_clean_resize_matches_pil_float_bicubic():
    from PIL import Image

    rs = np.random.RandomState(0)
    for h, size in [(32, 64), (64, 29), (40, 299)]:
        img = (rs.rand(h, h) * 255).astype(np.float32)
        pil = np.asarray(Image.fromarray(img, mode="F").resize((size, size), Image.BICUBIC))
        got = P.resize(torch.from_numpy(img).view(1, 1, h, h), size, "bicubic-aa")[0, 0].numpy()
        # PIL clips nothing in 'F' mode; the protocol clips to [0, 255] like clean-fid
        assert np.abs(got - np.clip(pil, 0, 255)).max() <= 2e-3, (h, size)


def test_nvlabs_quantisation_at_the_boundaries():
    x = torch.tensor([-1.5, -1.0, -1 + 0.5 / 127.5, 0.0, 0.5 / 127.5, 1 - 1 / 127.5, 1.0, 2.0])
    want = np.clip(x.numpy().astype(np.float32) * 127.5 + 128, 0, 255).astype(np.uint8)
    assert P.quantise(x.view(1, 1, 1, -1), "nvlabs").flatten().tolist() == want.tolist()
    # uint8 images on the [-1, 1] grid (u - 127.5) / 127.5 quantise back to u
    u = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    grid = (u.float() - 127.5) / 127.5
    assert torch.equal(P.quantise(grid, "nvlabs"), u)
    assert torch.equal(P.quantise(u), u)
    with pytest.raises(TypeError, match="uint8 or float"):
        P.quantise(torch.zeros(1, 3, 2, 2, dtype=torch.int32))


def test_preprocess_protocols():
    u = torch.randint(0, 256, (2, 3, 10, 10), dtype=torch.uint8)
    for name in P.PROTOCOLS:
        out = P.preprocess(u, name, 10)  # same size: no resize
        assert out.dtype == torch.float32 and out.shape == (2, 3, 10, 10)
        assert out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6
    assert torch.allclose(P.preprocess(u, "pytorch-fid", 10), u.float() / 255 * 2 - 1)
    assert torch.allclose(P.preprocess(u, "nvlabs", 10), (u.float() - 128) / 128)
    grey = P.preprocess(u[:, :1], "clean", 10)
    assert torch.equal(grey[:, 0], grey[:, 2])
    assert P.PROTOCOLS["nvlabs"].cov_norm == "biased" and P.PROTOCOLS["tf1"].cov_norm == "unbiased"
    with pytest.raises(ValueError, match="unknown protocol 'tf2'"):
        P.preprocess(u, "tf2", 10)
    with pytest.raises(ValueError, match=r"\(N, 1 or 3, H, W\)"):
        P.preprocess(u[0], "clean", 10)


def test_registry_and_builtin_extractors():
    assert {"pixels", "random-conv"} <= set(E.list_extractors())
    imgs = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    px = E.get_extractor("pixels", size=8)
    assert px(imgs).shape == (4, 192)
    rc = E.get_extractor("random-conv", dim=32, seed=1, input_size=32)
    a, b = rc(imgs), E.get_extractor("random-conv", dim=32, seed=1, input_size=32)(imgs)
    assert a.shape == (4, 32) and torch.equal(a, b)  # seeded: the same network every time
    assert not torch.equal(a, E.get_extractor("random-conv", dim=32, seed=2, input_size=32)(imgs))
    # float images in [-1, 1] on the uint8 grid give the same features as the uint8 images
    assert torch.equal(rc((imgs.float() - 127.5) / 127.5), a)
    assert rc.describe()["protocol"] == "clean" and rc.describe()["dim"] == 32
    with pytest.raises(ValueError, match="unknown extractor 'inception'"):
        E.get_extractor("inception")
    with pytest.raises(ValueError, match="already registered"):
        E.register_extractor("pixels", E._pixels)


def test_weight_files_are_found_locally_and_hash_checked(tmp_path, monkeypatch):
    f = tmp_path / "net.pth"
    f.write_bytes(b"weights")
    digest = E.sha256_of(f)
    assert E.find_weights("net.pth", digest[:8], weights=f) == f
    monkeypatch.setenv(E.WEIGHTS_ENV, str(tmp_path))
    assert E.find_weights("net.pth", digest[:8]) == tmp_path / "net.pth"
    with pytest.raises(ValueError, match=r"has sha256 .* expected 00000000"):
        E.find_weights("net.pth", "00000000")
    with pytest.raises(FileNotFoundError, match="other.pth not found"):
        E.find_weights("other.pth", "abcd")
    monkeypatch.delenv(E.WEIGHTS_ENV)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        E.find_weights("net.pth", digest[:8])


def test_fid_grows_with_noise_under_a_fixed_extractor():
    from fastgan.synth import PrimitivesPS

    imgs = PrimitivesPS(32, num_shapes=20, seed=0).images(0, 48)
    ext = E.get_extractor("random-conv", dim=32, seed=0, input_size=32)
    ref = ext(imgs)
    g = torch.Generator().manual_seed(0)
    fids = []
    for sigma in (0.0, 10.0, 30.0, 60.0):
        noisy = (imgs.float() + torch.randn(imgs.shape, generator=g) * sigma).clamp(0, 255).to(torch.uint8)
        fids.append(M.fid_from_features(ref, ext(noisy)))
    assert abs(fids[0]) < 1e-8 and fids[1] < fids[2] < fids[3], fids

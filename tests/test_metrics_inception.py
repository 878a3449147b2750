"""The FID Inception-v3 and the NVlabs TorchScript extractors (fastgan.metrics.inception), without real weights.

No weight file is available offline, so these tests pin what can be pinned without one: the exact state_dict key and
shape schema of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``, strict loading of such a file through the
registered factory, the FID-specific pooling, a seeded golden output, the hash / missing-file gates, and the NVlabs
TorchScript call convention (with small scripted stand-ins). CPU time is kept low: 2 images per 299 px forward.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastgan.metrics import extractors as E
from fastgan.metrics import inception as I  # importing registers the three extractors
from fastgan.metrics.functional import fid_from_features


# --- the schema of pt_inception-2015-12-05-6726825d.pth, typed out independently of the module -------------------
# (out, in, kh, kw) of every convolution, from torchvision's Inception3 (num_classes=1008, aux_logits=False) with
# pytorch-fid's FID blocks (same parameters as torchvision's blocks); torch-fidelity's converter from the TF graph
# (utils/util_convert_inception_weights.py) writes exactly these 94 convolutions + BatchNorms and fc.

def _block_a(cin, pool_features):
    return {"branch1x1": (64, cin, 1, 1), "branch5x5_1": (48, cin, 1, 1), "branch5x5_2": (64, 48, 5, 5),
            "branch3x3dbl_1": (64, cin, 1, 1), "branch3x3dbl_2": (96, 64, 3, 3), "branch3x3dbl_3": (96, 96, 3, 3),
            "branch_pool": (pool_features, cin, 1, 1)}


def _block_c(c7):
    return {"branch1x1": (192, 768, 1, 1), "branch7x7_1": (c7, 768, 1, 1), "branch7x7_2": (c7, c7, 1, 7),
            "branch7x7_3": (192, c7, 7, 1), "branch7x7dbl_1": (c7, 768, 1, 1), "branch7x7dbl_2": (c7, c7, 7, 1),
            "branch7x7dbl_3": (c7, c7, 1, 7), "branch7x7dbl_4": (c7, c7, 7, 1), "branch7x7dbl_5": (192, c7, 1, 7),
            "branch_pool": (192, 768, 1, 1)}


def _block_e(cin):
    return {"branch1x1": (320, cin, 1, 1), "branch3x3_1": (384, cin, 1, 1), "branch3x3_2a": (384, 384, 1, 3),
            "branch3x3_2b": (384, 384, 3, 1), "branch3x3dbl_1": (448, cin, 1, 1), "branch3x3dbl_2": (384, 448, 3, 3),
            "branch3x3dbl_3a": (384, 384, 1, 3), "branch3x3dbl_3b": (384, 384, 3, 1), "branch_pool": (192, cin, 1, 1)}


CONVS = {"Conv2d_1a_3x3": (32, 3, 3, 3), "Conv2d_2a_3x3": (32, 32, 3, 3), "Conv2d_2b_3x3": (64, 32, 3, 3),
         "Conv2d_3b_1x1": (80, 64, 1, 1), "Conv2d_4a_3x3": (192, 80, 3, 3)}
for _name, _convs in [("Mixed_5b", _block_a(192, 32)), ("Mixed_5c", _block_a(256, 64)),
                      ("Mixed_5d", _block_a(288, 64)),
                      ("Mixed_6a", {"branch3x3": (384, 288, 3, 3), "branch3x3dbl_1": (64, 288, 1, 1),
                                    "branch3x3dbl_2": (96, 64, 3, 3), "branch3x3dbl_3": (96, 96, 3, 3)}),
                      ("Mixed_6b", _block_c(128)), ("Mixed_6c", _block_c(160)), ("Mixed_6d", _block_c(160)),
                      ("Mixed_6e", _block_c(192)),
                      ("Mixed_7a", {"branch3x3_1": (192, 768, 1, 1), "branch3x3_2": (320, 192, 3, 3),
                                    "branch7x7x3_1": (192, 768, 1, 1), "branch7x7x3_2": (192, 192, 1, 7),
                                    "branch7x7x3_3": (192, 192, 7, 1), "branch7x7x3_4": (192, 192, 3, 3)}),
                      ("Mixed_7b", _block_e(1280)), ("Mixed_7c", _block_e(2048))]:
    CONVS.update({f"{_name}.{k}": v for k, v in _convs.items()})

# the file: conv weight + BN weight, bias, running_mean, running_var per convolution, and the 1008-class fc
FILE_SHAPES = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}
for _name, _shape in CONVS.items():
    FILE_SHAPES[f"{_name}.conv.weight"] = _shape
    for _t in ("weight", "bias", "running_mean", "running_var"):
        FILE_SHAPES[f"{_name}.bn.{_t}"] = (_shape[0],)
# torchvision's inception_v3(aux_logits=False) has 23,834,568 parameters with 1000 classes; 8 more classes add
# 8 * (2048 + 1) = 16,392
N_PARAMS = 23_850_960


def _seeded_state_dict(seed: int = 0) -> dict:
    """A state_dict with the file's schema (no num_batches_tracked, like the converted file): He-normal convolutions
    and non-trivial BatchNorm affine parameters and running statistics, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in FILE_SHAPES.items():
        if key.endswith("conv.weight"):
            sd[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / (shape[1] * shape[2] * shape[3]))
        elif key.endswith(("bn.weight", "running_var")):
            sd[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith(("bn.bias", "running_mean")) or key == "fc.bias":
            sd[key] = 0.1 * torch.randn(shape, generator=g)
        else:  # fc.weight
            sd[key] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
    return sd


@pytest.fixture(scope="module")
def seeded_sd():
    return _seeded_state_dict(0)


@pytest.fixture(scope="module")
def seeded_net(seeded_sd):
    net = I.FIDInceptionV3()
    net.load_state_dict(seeded_sd, strict=True)
    return net.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def fid_file(seeded_sd, tmp_path_factory):
    """The seeded state_dict saved under the real file name (its sha256 is of course not 6726825d...)."""
    path = tmp_path_factory.mktemp("weights") / I.FID_WEIGHTS
    torch.save(seeded_sd, path)
    return path


def _pattern(n: int = 2, size: int = 299) -> Tensor:
    """A fixed, platform-independent input in [-1, 1] (no random generator involved)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    x = torch.stack([torch.sin(3 * xx + yy), torch.cos(5 * yy) * xx, xx * yy])[None]
    return torch.cat([x, -x.flip(-1)])[:n]


# --- schema -----------------------------------------------------------------------------------------------------

def test_state_dict_schema_matches_the_fid_weights_file():
    with torch.device("meta"):
        net = I.FIDInceptionV3()
    sd = net.state_dict()
    bn_counters = {k for k in sd if k.endswith(".num_batches_tracked")}
    assert len(CONVS) == 94 and len(FILE_SHAPES) == 472
    assert len(bn_counters) == 94 and len(sd) == 472 + 94
    assert {k: tuple(v.shape) for k, v in sd.items() if k not in bn_counters} == FILE_SHAPES
    # a few keys spelled out
    assert tuple(sd["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["Mixed_7c.branch_pool.conv.weight"].shape) == (192, 2048, 1, 1)
    assert tuple(sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape) == (192, 192, 1, 7)
    assert tuple(sd["fc.weight"].shape) == (1008, 2048) and tuple(sd["fc.bias"].shape) == (1008,)
    assert "Mixed_5b.branch_pool.bn.running_var" in sd and not any("AuxLogits" in k for k in sd)
    # parameter count: from the typed-out table and from the module
    from_table = sum(o * i * kh * kw + 2 * o for o, i, kh, kw in CONVS.values()) + 1008 * 2048 + 1008
    assert from_table == N_PARAMS == sum(p.numel() for p in net.parameters())
    assert sum(b.numel() for k, b in net.named_buffers() if k not in bn_counters) == 2 * sum(
        o for o, *_ in CONVS.values())
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 94 and all(m.eps == 1e-3 for m in bns)
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))


def test_strict_load_with_or_without_batch_counters(seeded_sd, fid_file, tmp_path):
    """pytorch-fid loads the file strictly into torchvision's model; a plain dict without num_batches_tracked (what
    the TF converter writes), the same in the legacy (pre-1.6) format, and a full state_dict with the counters all
    load strictly."""
    legacy, full = tmp_path / "legacy.pth", tmp_path / "full.pth"
    torch.save(seeded_sd, legacy, _use_new_zipfile_serialization=False)
    torch.save(I.FIDInceptionV3().state_dict(), full)
    for path in (fid_file, legacy, full):
        net = I.load_fid_inception(path)
        assert net.Mixed_7c.branch_pool.bn.num_batches_tracked.item() == 0
        assert not net.fc.weight.requires_grad and not net.training
        assert not any(t.is_meta for t in list(net.parameters()) + list(net.buffers()))
    assert torch.equal(I.load_fid_inception(legacy).fc.weight, seeded_sd["fc.weight"])
    legacy.unlink()
    full.unlink()
    with torch.device("meta"):
        net = I.FIDInceptionV3()
    bad = dict(seeded_sd)
    bad.pop("fc.bias")
    with pytest.raises(RuntimeError, match="fc.bias"):
        net.load_state_dict(bad, strict=True, assign=True)
    with pytest.raises(RuntimeError, match="AuxLogits"):
        net.load_state_dict(dict(seeded_sd, **{"AuxLogits.fc.weight": torch.zeros(1)}), strict=True, assign=True)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a state_dict"):
        I.load_fid_inception(tmp_path / "list.pth")


# --- the network --------------------------------------------------------------------------------------------------

# Recorded from this implementation after checking the architecture against pytorch-fid's inception.py and
# torchvision's inception.py (float64 forward; the float32 forward agrees to ~6e-6). They pin the implementation
# against regressions; they are not values of the real weights.
GOLDEN_IDX = [0, 159, 322, 711, 1088, 1477, 1857, 1950]  # two per branch of Mixed_7c (1x1, 3x3, 3x3dbl, pool)
GOLDEN = {
    "feat": [[7.73711308, 0.20254061, 0.6001631, 1.80562344, 1.83746572, 0.65460522, 0.38037125, 7.63130189],
             [7.8088895, 0.29068206, 0.64897008, 1.73336454, 1.95312617, 0.60370714, 0.38470537, 7.48824595]],
    "norm": [114.18334129, 113.54744924],
    "logits": [[0.93536508, -0.72074851], [0.90581409, -0.74199395]],
}


def test_seeded_golden_features(seeded_net):
    x = _pattern()
    feats, logits = seeded_net(x, return_logits=True)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008) and feats.dtype == torch.float32
    assert torch.equal(logits, seeded_net.fc(feats))
    assert (feats >= 0).all()  # pool3 averages ReLU outputs
    torch.testing.assert_close(feats[:, GOLDEN_IDX].double(), torch.tensor(GOLDEN["feat"], dtype=torch.float64),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.double().norm(dim=1), torch.tensor(GOLDEN["norm"], dtype=torch.float64),
                               atol=0, rtol=1e-5)
    torch.testing.assert_close(logits[:, [0, 1007]].double(), torch.tensor(GOLDEN["logits"], dtype=torch.float64),
                               atol=1e-4, rtol=0)


def test_pool3x3_variants():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    corner = x[0, 0, :2, :2]
    assert I.pool3x3(x, "avg")[0, 0, 0, 0] == corner.mean()           # TF: padded zeros not counted
    assert I.pool3x3(x, "avg_pad")[0, 0, 0, 0] == corner.sum() / 9    # torchvision's InceptionA/C/E
    assert I.pool3x3(x, "max")[0, 0, 0, 0] == corner.max()
    assert torch.equal(I.pool3x3(x, "avg")[..., 1:3, 1:3], I.pool3x3(x, "avg_pad")[..., 1:3, 1:3])  # same inside
    with pytest.raises(ValueError, match="unknown pooling"):
        I.pool3x3(x, "mean")


def test_fid_specific_pooling_is_used(seeded_net):
    """Blocks A, C and Mixed_7b average without the padded zeros, Mixed_7c max-pools (pytorch-fid's FIDInception*);
    putting torchvision's variant back changes the block outputs and the network's features."""
    pools = {n: m.pool for n, m in seeded_net.named_children() if hasattr(m, "pool")}
    assert pools == {**{n: "avg" for n in ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                                           "Mixed_6e", "Mixed_7b"]}, "Mixed_7c": "max"}
    assert isinstance(seeded_net.Mixed_7b, I.FIDInceptionE_1) and isinstance(seeded_net.Mixed_7c, I.FIDInceptionE_2)
    g = torch.Generator().manual_seed(0)
    for block, cin, size, wrong in [("Mixed_5b", 192, 35, "avg_pad"), ("Mixed_6e", 768, 17, "avg_pad"),
                                    ("Mixed_7b", 1280, 8, "avg_pad"), ("Mixed_7c", 2048, 8, "avg")]:
        module = getattr(seeded_net, block)
        x = torch.rand(1, cin, size, size, generator=g) - 0.3
        ref = module(x)
        module.pool = wrong
        try:
            out = module(x)
        finally:
            module.pool = pools[block]
        branch = module.branch_pool.conv.out_channels  # only the pool branch (the last channels) changes
        assert torch.equal(out[:, :-branch], ref[:, :-branch]), block
        assert (out[:, -branch:] - ref[:, -branch:]).abs().max() > 1e-3, block
    # the whole network: 139 px gives Mixed_7c a 3 x 3 input (at 96 px it would be 1 x 1, where pools coincide)
    x = _pattern(1, 139)
    ref = seeded_net(x)
    seeded_net.Mixed_7c.pool = "avg"
    try:
        out = seeded_net(x)
    finally:
        seeded_net.Mixed_7c.pool = "max"
    assert (out - ref)[:, 1856:].abs().max() > 1e-3 and torch.equal(out[:, :1856], ref[:, :1856])


# --- the registered extractor and its weight file -------------------------------------------------------------------

def test_inception_fid_factory_loads_the_file_strictly(fid_file, seeded_sd, monkeypatch):
    assert {"inception-fid", "inception-nvlabs-ts", "vgg16-nvlabs"} <= set(E.list_extractors())
    digest = E.sha256_of(fid_file)
    # test only: the random file cannot have the real prefix, so the expected prefix is set to this file's
    monkeypatch.setattr(I, "FID_SHA256_PREFIX", digest[:8])
    ext = E.get_extractor("inception-fid", weights=fid_file)
    assert ext.describe() == {"extractor": "inception-fid", "dim": 2048, "input_size": 299,
                              "protocol": "pytorch-fid", "weights_sha256": digest}
    imgs = torch.randint(0, 256, (2, 3, 24, 20), dtype=torch.uint8)  # any size: the protocol resizes to 299
    feats = ext(imgs)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    # every tensor of the file, strictly loaded (the seeded network's golden test pins what they compute)
    loaded = ext.net.state_dict()
    assert all(torch.equal(loaded[k], seeded_sd[k]) for k in FILE_SHAPES)
    # found through $FASTGAN_WEIGHTS_DIR as well
    monkeypatch.setenv(E.WEIGHTS_ENV, str(fid_file.parent))
    assert E.get_extractor("inception-fid", protocol="nvlabs").describe()["protocol"] == "nvlabs"


def test_inception_fid_missing_or_wrong_file(tmp_path, monkeypatch):
    monkeypatch.delenv(E.WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=rf"{I.FID_WEIGHTS}.*FASTGAN_WEIGHTS_DIR"):
        E.get_extractor("inception-fid")
    monkeypatch.setenv(E.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"{I.FID_WEIGHTS} not found \(\$FASTGAN_WEIGHTS_DIR="):
        E.get_extractor("inception-fid")
    (tmp_path / I.FID_WEIGHTS).write_bytes(b"not the FID weights")  # right name, wrong bytes: refused before loading
    with pytest.raises(ValueError, match=r"expected 6726825d"):
        E.get_extractor("inception-fid")
    with pytest.raises(ValueError, match=r"expected 6726825d"):
        E.get_extractor("inception-fid", weights=tmp_path / I.FID_WEIGHTS)


def test_fid_of_inception_features(seeded_net):
    """FID(A, A) = 0 and FID(A, A + noise) grows with the noise, on 16 images. Same network, wrapped at 80 px to keep
    CPU time low (the registered inception-fid extractor uses 299; 75 px is the smallest input the network takes)."""
    ext = E.FeatureExtractor(seeded_net, name="inception-fid", dim=2048, input_size=80, protocol="pytorch-fid")
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    base = torch.stack([torch.sin(xx / (2 + i % 5) + i) * torch.cos(yy / (3 + i % 3)) for i in range(16)])
    a = ((base[:, None] * torch.tensor([1.0, -0.5, 0.8]).view(1, 3, 1, 1)) * 100 + 128).round().clamp(0, 255)
    a = a.to(torch.uint8)
    fa = ext(a).double()
    assert fa.shape == (16, 2048) and torch.isfinite(fa).all()
    assert abs(fid_from_features(fa, fa)) < 1e-6
    fids = []
    for sigma in (4.0, 16.0, 48.0):
        noisy = (a.float() + sigma * torch.randn(a.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)
        fids.append(fid_from_features(fa, ext(noisy).double()))
    assert 0 < fids[0] < fids[1] < fids[2], fids


# --- NVlabs TorchScript detectors ------------------------------------------------------------------------------------

class _FakeNVlabsInception(nn.Module):
    """Stand-in with the call signature of NVlabs' inception-2015-12-05.pt: uint8 (N, 3, H, W) of any size, resized
    and normalised inside; ``return_features=True`` gives (N, 2048), otherwise class probabilities."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(48, 2048)

    def forward(self, img: Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> Tensor:
        if img.dtype != torch.uint8 or img.shape[1] != 3:
            raise RuntimeError("expects uint8 (N, 3, H, W)")
        x = F.interpolate(img.to(torch.float32), size=[299, 299], mode="bilinear", align_corners=False)
        f = self.proj(F.adaptive_avg_pool2d((x - 128) / 128, 4).flatten(1))
        if return_features:
            return f
        return torch.softmax(f[:, :1008], dim=1)


class _FakeNVlabsVGG16(nn.Module):
    """Stand-in with the call signature of NVlabs' vgg16.pt (resize_images, return_lpips, return_features)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(48, 4096)

    def forward(self, img: Tensor, resize_images: bool = True, return_lpips: bool = False,
                return_features: bool = False) -> Tensor:
        if img.dtype != torch.uint8 or img.shape[1] != 3:
            raise RuntimeError("expects uint8 (N, 3, H, W)")
        x = img.to(torch.float32)
        if resize_images:
            x = F.interpolate(x, size=[224, 224], mode="area")
        f = torch.relu(self.proj(F.adaptive_avg_pool2d(x / 255, 4).flatten(1)))
        if return_features:
            return f
        return f[:, :1000]


@pytest.mark.parametrize("name,filename,fake,dim", [
    ("inception-nvlabs-ts", I.NVLABS_INCEPTION, _FakeNVlabsInception, 2048),
    ("vgg16-nvlabs", I.NVLABS_VGG16, _FakeNVlabsVGG16, 4096)])
def test_nvlabs_torchscript_loaders(name, filename, fake, dim, tmp_path, monkeypatch):
    torch.manual_seed(1)
    with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated; the NVlabs files are TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(fake().eval())
    path = tmp_path / filename
    scripted.save(str(path))
    digest = E.sha256_of(path)
    monkeypatch.delenv(E.WEIGHTS_ENV, raising=False)

    with pytest.raises(FileNotFoundError, match=rf"{filename}.*FASTGAN_WEIGHTS_DIR"):
        E.get_extractor(name)
    with pytest.raises(ValueError, match="expected 00000000"):
        E.get_extractor(name, weights=path, sha256="00000000")
    with pytest.raises(ValueError, match="takes protocol nvlabs or tf1"):
        E.get_extractor(name, weights=path, sha256=digest[:8], protocol="clean")

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a pinned hash: no warning
        ext = E.get_extractor(name, weights=path, sha256=digest[:8].upper())
    assert ext.describe()["weights_sha256"] == digest and ext.describe()["protocol"] == "nvlabs"
    assert ext.dim == dim

    monkeypatch.setenv(E.WEIGHTS_ENV, str(tmp_path))
    with pytest.warns(UserWarning, match=f"recorded its sha256 {digest}"):  # no published hash: accepted, recorded
        unpinned = E.get_extractor(name)
    assert unpinned.describe()["weights_sha256"] == digest

    # NVlabs' call: detector(uint8 images of any size, return_features=True); float [-1, 1] input is quantised
    # the NVlabs way first, grey images are repeated to 3 channels, and nothing is resized outside the module
    u8 = torch.randint(0, 256, (2, 3, 37, 23), dtype=torch.uint8)
    feats = ext(u8)
    assert feats.shape == (2, dim) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert torch.equal(feats, scripted(u8, return_features=True))
    as_float = (u8.float() - 127.5) / 127.5
    assert torch.equal(ext(as_float), feats)
    assert torch.equal(ext(as_float, protocol="tf1"), feats)
    grey = u8[:, :1]
    assert torch.equal(ext(grey), scripted(grey.repeat(1, 3, 1, 1), return_features=True))
    with pytest.raises(ValueError, match="takes protocol"):
        ext(u8, protocol="pytorch-fid")
    with pytest.raises(ValueError, match=r"\(N, 1 or 3, H, W\)"):
        ext(u8[0])

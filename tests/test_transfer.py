"""Transfer recipes: AdaFM generators (identity init, fold, snapshots), freeze policies (which parameters get
gradients under finetune / freezed / adafm before and after the unfreeze), strict transfer errors, and exact
resume across the AdaFM unfreeze point and a vision backbone addition."""
from __future__ import annotations

import json
import pathlib

import pytest
import torch

from fastgan.nn import Discriminator, Generator, load_network, save_snapshot
from fastgan.train import rng
from fastgan.train.distributed import Dist
from fastgan.train.loop import Trainer, _build, _transfer, train
from fastgan.train.options import TrainOptions, resolve
from fastgan.transfer import (WeightMismatchError, adafm_resolutions_for, fold, fold_snapshot, make_policy,
                              to_adafm, transfer_networks)
from transfer_cases import assert_bit_equal, target_zip

SMALL = dict(z_dim=16, w_dim=16, img_resolution=16, channel_base=256, channel_max=32, mapping_layers=2)


@pytest.fixture(scope="module")
def data16(tmp_path_factory) -> pathlib.Path:
    """A 16 px dataset zip of 16 RGB images."""
    return target_zip(tmp_path_factory, "target16.zip", seed=1, count=16, base=180, noise=60)


def base_opts(data, outdir, **kw) -> TrainOptions:
    o = dict(data=str(data), outdir=str(outdir), cfg="tiny", batch=8, kimg=0.016, tick=0.008, snap=1, aug="none",
             workers=0, progress=False)
    o.update(kw)
    return TrainOptions(**o)


@pytest.fixture(scope="module")
def source(data16, tmp_path_factory) -> pathlib.Path:
    """A source snapshot with the tiny preset's 16 px architecture (random weights, non-zero noise strengths and
    biases, so that freezing is visible)."""
    o = resolve(base_opts(data16, "x"), data_resolution=16, world_size=1)
    torch.manual_seed(123)
    G, D = _build(o, 3, 0)
    with torch.no_grad():
        for n, p in G.named_parameters():
            if n.endswith("noise_strength") or n.endswith(".bias"):
                p.normal_(0, 0.1)
        G.mapping.w_avg.normal_()
    G_ema = Generator(**G.config)
    G_ema.load_state_dict(G.state_dict())
    with torch.no_grad():
        for p in G_ema.parameters():
            p.add_(0.01)
    path = tmp_path_factory.mktemp("source") / "network-snapshot-source.pt"
    save_snapshot(path, {"G": G, "G_ema": G_ema, "D": D})
    return path


class _Stream:
    """An in-memory 16 px stream for Trainer-level tests."""

    resolution, channels, label_dim, name = 16, 3, 0, "mem16"

    def gen_labels(self, keys):
        return None

    def describe(self):
        return {"kind": "memory", "name": self.name}

    def grid_reals(self, count):
        return torch.randint(0, 256, (count, 3, 16, 16), generator=torch.Generator().manual_seed(5),
                             dtype=torch.uint8)


def make_trainer(tmp_path, source, **kw) -> Trainer:
    o = resolve(base_opts("mem", tmp_path, transfer=str(source), **kw), data_resolution=16, world_size=1)
    torch.manual_seed(o.seed)
    t = Trainer(o, Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")), _Stream(), tmp_path,
                quiet=True)
    _transfer(t, o, None)
    return t


def reals(n=8):
    g = torch.Generator().manual_seed(9)
    return [(torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8), torch.zeros(n, 0))]


def changed(before: dict, module) -> set:
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())}


def snapshot_params(module) -> dict:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------------------


def test_adafm_identity_reproduces_plain_generator_and_fold_is_exact():
    torch.manual_seed(0)
    G = Generator(**SMALL).eval()
    with torch.no_grad():
        for n, p in G.named_parameters():
            if n.endswith("noise_strength"):
                p.fill_(0.3)
    A = to_adafm(G, [8, 16])
    assert A.config["adafm_resolutions"] == [8, 16] and "adafm_resolutions" not in G.config
    assert A.synthesis.b16.conv0.up == 2 and A.synthesis.b16.conv0.adafm  # the up-sampling layer has AdaFM too
    z = torch.randn(4, 16)
    keys = rng.sample_keys(rng.derive(3), torch.arange(4))
    for mode in ("const", "random"):
        assert torch.equal(G(z, noise_mode=mode, noise_keys=keys), A(z, noise_mode=mode, noise_keys=keys))
    with torch.no_grad():  # non-identity gamma/beta: fold bakes them in exactly
        for n, p in A.named_parameters():
            if "adafm_gamma" in n:
                p.uniform_(0.5, 1.5)
            elif "adafm_beta" in n:
                p.normal_(0, 0.05)
    out = A(z, noise_mode="const")
    assert not torch.equal(out, G(z, noise_mode="const"))
    F = fold(A)
    assert "adafm_resolutions" not in F.config
    assert not any("adafm" in k for k in F.state_dict())
    assert torch.equal(F(z, noise_mode="const"), out)
    # the gradients reach gamma/beta (and not the frozen weight) through the modulated conv
    A.requires_grad_(False)
    layer = A.synthesis.b16.conv0
    layer.adafm_gamma.requires_grad_(True)
    layer.adafm_beta.requires_grad_(True)
    A(z, noise_mode="const").square().mean().backward()
    assert layer.adafm_gamma.grad.abs().sum() > 0 and layer.adafm_beta.grad.abs().sum() > 0
    assert layer.weight.grad is None
    # re-wrapping an AdaFM generator folds first: identity on top of the current weights
    B = to_adafm(A, [16])
    assert B.config["adafm_resolutions"] == [16] and torch.equal(B(z, noise_mode="const"), out)


def test_adafm_configuration_errors():
    with pytest.raises(ValueError, match=r"adafm_resolutions: 12 is not a synthesis block resolution"):
        Generator(**SMALL, adafm_resolutions=[12])
    with pytest.raises(ValueError, match=r"--adafm-front-res 16 must be below the image resolution \(16 px\)"):
        adafm_resolutions_for(16, 16)
    with pytest.raises(ValueError, match=r"--adafm-front-res must be a power of two"):
        adafm_resolutions_for(64, 12)
    assert adafm_resolutions_for(128, 16) == [32, 64, 128]
    G = Generator(**SMALL)
    D = Discriminator(img_resolution=16, channel_base=256, channel_max=32)
    with pytest.raises(ValueError, match="not the blocks above --adafm-front-res 4"):
        make_policy(to_adafm(G, [16]), D, "adafm", front_res=4, unfreeze_nimg=0)
    with pytest.raises(ValueError, match="AdaFM generator; fold it first"):
        make_policy(to_adafm(G, [16]), D, "freezed", freeze_d=1)
    with pytest.raises(ValueError, match=r"--freeze-d 3 is larger than the number of discriminator blocks at 16 px "
                                         r"\(2: b16, b8\)"):
        make_policy(G, D, "freezed", freeze_d=3)


def test_adafm_snapshot_loads_generates_and_folds(tmp_path):
    from fastgan.sampling import write_images

    torch.manual_seed(1)
    A = to_adafm(Generator(**SMALL), [16]).eval()
    with torch.no_grad():
        A.synthesis.b16.conv1.adafm_gamma.uniform_(0.8, 1.2)
    D = Discriminator(img_resolution=16, channel_base=256, channel_max=32)
    snap = save_snapshot(tmp_path / "network-snapshot-000001.pt", {"G": A, "G_ema": A, "D": D})
    G = load_network(snap)
    assert G.config["adafm_resolutions"] == [16]
    z = torch.randn(3, 16)
    assert torch.equal(G(z, noise_mode="const"), A(z, noise_mode="const"))
    write_images(snap, [0, 1, 2], tmp_path / "out", batch_size=2, device="cpu")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["seed0000.png", "seed0001.png",
                                                                         "seed0002.png"]
    fold_snapshot(snap, tmp_path / "plain.pt")
    P = load_network(tmp_path / "plain.pt")
    assert "adafm_resolutions" not in P.config and torch.equal(P(z, noise_mode="const"), A(z, noise_mode="const"))
    with pytest.raises(FileExistsError, match="plain.pt"):
        fold_snapshot(snap, tmp_path / "plain.pt")


def test_identity_init_reproduces_the_source_images(tmp_path, source):
    t = make_trainer(tmp_path, source, method="adafm", adafm_front_res=8, adafm_unfreeze=0.0)
    src_ema = load_network(source, "G_ema")
    z = torch.randn(5, t.G.z_dim)
    keys = rng.sample_keys(rng.derive(7), torch.arange(5))
    assert t.G_ema.config["adafm_resolutions"] == [16]
    for mode in ("const", "random"):
        assert torch.equal(t.G_ema(z, noise_mode=mode, noise_keys=keys),
                           src_ema(z, noise_mode=mode, noise_keys=keys))
    # a new front starts from a fresh initialisation: the images differ, the transferred blocks do not
    t2 = make_trainer(tmp_path / "nf", source, method="adafm", adafm_front_res=8, adafm_new_front=True)
    assert not torch.equal(t2.G_ema(z, noise_mode="const"), src_ema(z, noise_mode="const"))
    sd, src_sd = t2.G.state_dict(), load_network(source, "G").state_dict()
    assert torch.equal(sd["synthesis.b16.conv0.weight"], src_sd["synthesis.b16.conv0.weight"])
    assert not torch.equal(sd["synthesis.b8.conv0.weight"], src_sd["synthesis.b8.conv0.weight"])
    assert not torch.equal(sd["mapping.fc0.weight"], src_sd["mapping.fc0.weight"])


def _front(names):
    return {n for n in names if n.startswith("mapping.") or n.startswith("synthesis.b4.")
            or n.startswith("synthesis.b8.")}


@pytest.mark.parametrize("method,kw", [
    ("finetune", {}),
    ("freezed", {"freeze_d": 2}),
    ("adafm", {"adafm_front_res": 8, "adafm_unfreeze": 0.008}),  # gamma/beta frozen at step 0, train at step 1
    ("adafm", {"adafm_front_res": 8, "adafm_unfreeze": 0.0, "freeze_d": 0}),
])
def test_which_parameters_train(tmp_path, source, method, kw):
    t = make_trainer(tmp_path, source, method=method, r1_interval=1, **kw)
    gnames = [n for n, _ in t.G.named_parameters()]
    dnames = [n for n, _ in t.D.named_parameters()]
    opt_g = {id(p) for g in t.opt_G.param_groups for p in g["params"]}
    opt_d = {id(p) for g in t.opt_D.param_groups for p in g["params"]}
    named_g, named_d = dict(t.G.named_parameters()), dict(t.D.named_parameters())
    g0, d0 = snapshot_params(t.G), snapshot_params(t.D)
    t.run_step(reals())
    g_changed, d_changed = changed(g0, t.G), changed(d0, t.D)
    assert not any(p.requires_grad for p in list(t.G.parameters()) + list(t.D.parameters()))
    adafm = {n for n in gnames if "adafm_" in n}
    freeze_d = t.opts.freeze_d
    d_frozen = {n for n in dnames if n.split(".")[0] in [f"b{16 >> i}" for i in range(freeze_d)]}
    assert d_changed == set(dnames) - d_frozen
    assert {n for n in dnames if id(named_d[n]) in opt_d} == set(dnames) - d_frozen
    if method != "adafm":
        assert g_changed == set(gnames) and {n for n in gnames if id(named_g[n]) in opt_g} == set(gnames)
        assert freeze_d == (2 if method == "freezed" else 0)
        return
    assert freeze_d == kw.get("freeze_d", 1)  # AdaFM's default FreezeD depth is one block
    front = _front(gnames)
    # gamma/beta are in the optimizer from the start; frozen transferred weights never are
    assert {n for n in gnames if id(named_g[n]) in opt_g} == front | adafm
    if kw["adafm_unfreeze"] > 0:
        assert g_changed == front  # before the unfreeze: only the front moves
        assert not any(id(p) in {id(q) for q in t.opt_G.state} for n, p in named_g.items() if n in adafm)
        g1 = snapshot_params(t.G)
        t.run_step(reals())  # cur_nimg 8 >= unfreeze 8 images
        assert changed(g1, t.G) == front | adafm
    else:
        assert g_changed == front | adafm
    assert t.G.synthesis.b16.torgb.weight.requires_grad is False
    frozen = set(gnames) - front - adafm
    assert frozen and all(torch.equal(g0[n], named_g[n].detach()) for n in frozen)
    assert {"synthesis.b16.conv0.weight", "synthesis.b16.conv0.affine.weight", "synthesis.b16.conv1.noise_strength",
            "synthesis.b16.conv1.bias", "synthesis.b16.torgb.weight"} <= frozen


def _vision_ada_trajectory(tmp_path, source, batch_gpu: int, steps: int = 8) -> list:
    """Per-step (p, r_t) of the vision heads' ADA in a transfer run with --batch 8 and ``batch_gpu``."""
    import math

    from fastgan.nn.vision import VisionAidedDiscriminator

    t = make_trainer(tmp_path, source, method="freezed", batch_gpu=batch_gpu, mbstd=4, vision_aided="random",
                     vision_augment="ada", vision_ada_target=-0.5, vision_ada_kimg=0.1)
    cfg = t.vision.config()
    assert (cfg["ada_target"], cfg["ada_kimg"], cfg["ada_interval"]) == (-0.5, 0.1, 4)   # from the options
    # the same controller with an interval of 2 D steps, so that a few steps move p up and down
    t.vision = VisionAidedDiscriminator(["random"], augment="ada", ada_interval=2, ada_kimg=0.1, ada_target=-0.5,
                                        seed=t.opts.seed)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # centre the real logits at 0: mixed signs, so p goes up and down
        probe = torch.randint(0, 256, (32, 3, 16, 16), generator=g, dtype=torch.uint8).float() / 127.5 - 1
        t.vision.heads["random"].branches[-1].out.bias.sub_(t.vision.logits("random", probe, phase=1)[-1].median())
    t.opt_vis = None
    t._rebuild_vision_optimizer()
    out = []
    for _ in range(steps):
        batch = torch.randint(0, 256, (8, 3, 16, 16), generator=g, dtype=torch.uint8)
        t.run_step([(batch[i:i + batch_gpu], torch.zeros(batch_gpu, 0)) for i in range(0, 8, batch_gpu)])
        rt = t.vision.ada_rt()["random"]
        out.append((t.vision.ada_p()["random"], None if math.isnan(rt) else rt))
    return out


def test_vision_ada_p_does_not_depend_on_batch_gpu(tmp_path, source):
    """The heads' ADA ticks once per D step with the signs of all its rounds: --batch-gpu 4 (two rounds of
    gradient accumulation) follows the p trajectory of --batch-gpu 8 step by step."""
    whole = _vision_ada_trajectory(tmp_path / "a", source, 8)
    halves = _vision_ada_trajectory(tmp_path / "b", source, 4)
    assert whole == halves
    ps = [p for p, _ in whole]
    assert ps[0] == 0.0 and ps[1] > 0 and 0.0 in ps[2:]                # updates every 2 steps; p rose, then fell
    assert len({rt for _, rt in whole[1:]}) >= 3                        # from mixed real-logit signs


def test_strict_transfer_names_the_mismatched_tensors(tmp_path, source):
    G = Generator(**SMALL)  # other channel counts than the source
    D = Discriminator(img_resolution=16, channel_base=256, channel_max=32)
    blob = torch.load(source, weights_only=True)
    with pytest.raises(WeightMismatchError, match=r"(?s)synthesis\.b4\.const.*shape.*--allow-partial"):
        transfer_networks({"G": G, "D": D}, blob)
    reps = transfer_networks({"G": G, "D": D}, blob, allow_partial=True)
    assert reps["G"].mismatched and not reps["G"].complete
    no_d = dict(blob, networks={k: v for k, v in blob["networks"].items() if k != "D"})
    with pytest.raises(ValueError, match=r"holds no D \(it has \['G', 'G_ema'\]\)"):
        transfer_networks({"D": D}, no_d, source="snap.pt")
    # an AdaFM source is folded before the transfer into a plain target
    torch.manual_seed(0)
    P = Generator(**SMALL)
    A = to_adafm(P, [16])
    with torch.no_grad():
        A.synthesis.b16.conv1.adafm_beta.fill_(0.01)
    rec = {"networks": {"G": {"config": A.config, "state_dict": A.state_dict()}}}
    target = Generator(**SMALL)
    rep = transfer_networks({"G": target}, rec)
    assert rep["G"].complete
    z = torch.randn(2, 16)
    assert torch.equal(target(z, noise_mode="const"), A(z, noise_mode="const"))


def test_resume_across_unfreeze_and_backbone_addition_is_bit_exact(data16, source, tmp_path):
    """The state at kimg 0.008 is before both boundaries (AdaFM unfreeze and the first vision backbone at kimg
    0.016); the resumed run crosses them and ends with the uninterrupted run's state, bit for bit."""
    kw = dict(transfer=str(source), method="adafm", adafm_front_res=8, adafm_unfreeze=0.016, vision_aided="auto",
              vision_candidates="random", vision_warmup=0.016, probe_images=16, vision_stage_kimg=1.0,
              vision_augment="ada", r1_interval=2, img_snap=100)
    full = train(base_opts(data16, tmp_path / "a", kimg=0.024, **kw), quiet=True)
    part = train(base_opts(data16, tmp_path / "b", kimg=0.008, **kw), quiet=True)
    resumed = train(base_opts(data16, tmp_path / "b", kimg=0.024, resume="auto", **kw), quiet=True)
    assert resumed.run_dir == part.run_dir and part.run_dir.name.endswith("-adafm")
    a = torch.load(full.run_dir / "training-state-000000.024.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "training-state-000000.024.pt", weights_only=True)
    assert_bit_equal(a, b, skip=("options", "rng"))  # training states, options and RNG states aside
    assert a["vision"]["config"]["backbones"][0]["spec"] == "random"
    assert a["vision"]["schedule"]["added"][0]["nimg"] == 16
    gamma = a["networks"]["G"]["state_dict"]["synthesis.b16.conv0.adafm_gamma"]
    assert not torch.equal(gamma, torch.ones_like(gamma))  # gamma trained after the unfreeze
    early = torch.load(part.run_dir / "training-state-000000.008.pt", weights_only=True)
    assert early["vision"]["config"]["backbones"] == [] and early["vision"]["optimizer"] is None
    snap = torch.load(resumed.run_dir / "network-snapshot-000000.024.pt", weights_only=True)
    assert snap["extra"]["vision"]["backbones"][0]["spec"] == "random"
    assert snap["extra"]["transfer"]["method"] == "adafm" and snap["extra"]["transfer"]["adafm_unfrozen"]
    log = (part.run_dir / "log.txt").read_text()
    assert "added random" in log and "G AdaFM" in log and "kept" in log
    stats = [json.loads(x) for x in (resumed.run_dir / "stats.jsonl").read_text().splitlines()]
    assert [s["nimg"] for s in stats] == [8, 16, 24]
    assert stats[-1]["stats"]["Progress/vision_backbones"]["mean"] == 1 and "Loss/vision/D" in stats[-1]["stats"]

"""StyleGAN2-ADA pickle import (fastgan.nn.legacy) without StyleGAN2-ADA's code or weights.

The pickles are written the way StyleGAN2-ADA's training loop writes them: a throw-away package in tmp_path
provides ``torch_utils/persistence.py`` (the persistence reduce protocol: ``_reconstruct_persistent_obj(meta)`` with
``meta = {type, version, module_src, class_name, state}``), ``dnnlib.util.EasyDict`` and a ``training/networks.py``
whose persistent classes carry StyleGAN2-ADA's class names. Their instances are filled from fastgan networks
(parameters, buffers, submodules, plain attributes, numpy-scalar gains, ``_init_args``/``_init_kwargs`` and the
attributes StyleGAN2-ADA's modules hold that fastgan's do not), then ``{"G", "D", "G_ema", "augment_pipe",
"training_set_kwargs"}`` is pickled with ``pickle.dump``. The package is removed from sys.path/sys.modules before
fastgan reads the file.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import math
import os
import pickle
import sys
import textwrap
import types

import numpy as np
import pytest
import torch

import fastgan
from fastgan.nn import Discriminator, Generator, load_network, load_snapshot
from fastgan.nn.layers import setup_filter
from fastgan.nn.legacy import UnsafePickleError, load_stylegan2_pkl, read_persistent_pickle

FAKE_PACKAGES = ("dnnlib", "torch_utils", "training")

FAKE_SOURCES = {
    "dnnlib/__init__.py": "from .util import EasyDict\n",
    "dnnlib/util.py": '''
        class EasyDict(dict):
            """dict with attribute access, pickled as dnnlib.util.EasyDict like StyleGAN2-ADA's."""

            def __getattr__(self, name):
                try:
                    return self[name]
                except KeyError:
                    raise AttributeError(name)

            def __setattr__(self, name, value):
                self[name] = value

            def __delattr__(self, name):
                del self[name]
        ''',
    "torch_utils/__init__.py": "",
    "torch_utils/persistence.py": '''
        """The persistence protocol of StyleGAN2-ADA's torch_utils/persistence.py, written for these tests."""
        import copy
        import inspect
        import sys
        import types
        import uuid

        import dnnlib

        _version = 6
        _decorated = set()
        _src_by_module = {}
        _module_by_src = {}


        def _source_of(module):
            if module not in _src_by_module:
                src = inspect.getsource(module)
                _src_by_module[module] = src
                _module_by_src[src] = module
            return _src_by_module[module]


        def _module_from_source(src):
            module = _module_by_src.get(src)
            if module is None:  # what the real protocol does on load: run the pickled module source
                module = types.ModuleType("_imported_module_" + uuid.uuid4().hex)
                sys.modules[module.__name__] = module
                _src_by_module[module] = src
                _module_by_src[src] = module
                exec(src, module.__dict__)
            return module


        def persistent_class(cls):
            if cls in _decorated:
                return cls
            src = _source_of(sys.modules[cls.__module__])

            class Persistent(cls):
                _orig_module_src = src
                _orig_class_name = cls.__name__

                def __init__(self, *args, **kwargs):
                    super().__init__(*args, **kwargs)
                    self._init_args = copy.deepcopy(args)
                    self._init_kwargs = copy.deepcopy(kwargs)

                @property
                def init_args(self):
                    return copy.deepcopy(self._init_args)

                @property
                def init_kwargs(self):
                    return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

                def __reduce__(self):
                    parts = list(super().__reduce__())
                    parts += [None] * (3 - len(parts))
                    if parts[0] is not _reconstruct_persistent_obj:
                        meta = dict(type="class", version=_version, module_src=self._orig_module_src,
                                    class_name=self._orig_class_name, state=parts[2])
                        parts[0], parts[1], parts[2] = _reconstruct_persistent_obj, (meta,), None
                    return tuple(parts)

            Persistent.__name__ = cls.__name__
            _decorated.add(Persistent)
            return Persistent


        def _reconstruct_persistent_obj(meta):
            meta = dnnlib.EasyDict(meta)
            meta.state = dnnlib.EasyDict(meta.state)
            assert meta.version == _version and meta.type == "class"
            cls = persistent_class(_module_from_source(meta.module_src).__dict__[meta.class_name])
            obj = cls.__new__(cls)
            obj.__setstate__(meta.state)
            return obj
        ''',
    "training/__init__.py": "",
    "training/networks.py": '''
        """Persistent classes named like StyleGAN2-ADA's training/networks.py; the tests fill their state."""
        import torch

        from torch_utils import persistence


        class _Shell(torch.nn.Module):
            def __init__(self, *args, **kwargs):
                super().__init__()


        @persistence.persistent_class
        class FullyConnectedLayer(_Shell): pass


        @persistence.persistent_class
        class Conv2dLayer(_Shell): pass


        @persistence.persistent_class
        class MappingNetwork(_Shell): pass


        @persistence.persistent_class
        class SynthesisLayer(_Shell): pass


        @persistence.persistent_class
        class ToRGBLayer(_Shell): pass


        @persistence.persistent_class
        class SynthesisBlock(_Shell): pass


        @persistence.persistent_class
        class SynthesisNetwork(_Shell): pass


        @persistence.persistent_class
        class SynthesisInput(_Shell): pass


        @persistence.persistent_class
        class Generator(_Shell): pass


        @persistence.persistent_class
        class DiscriminatorBlock(_Shell): pass


        @persistence.persistent_class
        class MinibatchStdLayer(_Shell): pass


        @persistence.persistent_class
        class DiscriminatorEpilogue(_Shell): pass


        @persistence.persistent_class
        class Discriminator(_Shell): pass
        ''',
    "training/augment.py": '''
        import torch

        from torch_utils import persistence


        @persistence.persistent_class
        class AugmentPipe(torch.nn.Module):
            def __init__(self, xflip=0, rotate90=0, xint=0, brightness=0, contrast=0, lumaflip=0, hue=0,
                         saturation=0):
                super().__init__()
                self.register_buffer("p", torch.zeros([]))
                self.xflip, self.rotate90, self.xint = float(xflip), float(rotate90), float(xint)
                self.brightness, self.contrast = float(brightness), float(contrast)
        ''',
}


@contextlib.contextmanager
def fake_stylegan2(root):
    """Import the stand-in StyleGAN2-ADA packages from ``root``; remove every trace of them afterwards."""
    clash = [m for m in sys.modules if m.split(".")[0] in FAKE_PACKAGES]
    if clash:
        pytest.skip(f"modules {clash[:3]} are already imported; the fake StyleGAN2-ADA packages would clash")
    for rel, src in FAKE_SOURCES.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(src))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield types.SimpleNamespace(dnnlib=importlib.import_module("dnnlib"),
                                    persistence=importlib.import_module("torch_utils.persistence"),
                                    nets=importlib.import_module("training.networks"),
                                    augment=importlib.import_module("training.augment"))
    finally:
        sys.path.remove(str(root))
        for name in list(sys.modules):
            if name.split(".")[0] in FAKE_PACKAGES or name.startswith("_imported_module_"):
                del sys.modules[name]
        importlib.invalidate_caches()


def _sg2_extras(fast, cls_name: str, arch: dict) -> dict:
    """Attributes StyleGAN2-ADA's module of that class holds beyond what fastgan's does."""
    sqrt2 = np.float64(np.sqrt(2))
    if cls_name == "SynthesisBlock":
        return dict(architecture=arch["G"], channels_last=False, w_dim=fast.torgb.affine.in_features,
                    img_channels=fast.torgb.out_channels)
    if cls_name == "SynthesisLayer":
        return dict(activation="lrelu", act_gain=sqrt2, channels_last=False)
    if cls_name == "Conv2dLayer":
        return dict(up=1, act_gain=sqrt2 if fast.activation == "lrelu" else np.float64(1), channels_last=False)
    if cls_name == "DiscriminatorBlock":
        return dict(architecture=arch["D"], channels_last=False, first_layer_idx=0,
                    num_layers=4 if fast.in_channels == 0 else 3)
    if cls_name == "DiscriminatorEpilogue":
        return dict(architecture=arch["D"], resolution=4, in_channels=fast.conv.out_channels)
    if cls_name in ("SynthesisNetwork", "Discriminator"):
        return dict(img_resolution_log2=int(math.log2(fast.img_resolution)))
    return {}


def _leaf_kwargs(fast, cls_name: str) -> dict:
    if cls_name == "FullyConnectedLayer":
        return dict(in_features=fast.in_features, out_features=fast.out_features, activation=fast.activation,
                    lr_multiplier=fast.bias_gain)
    if cls_name == "Conv2dLayer":
        return dict(in_channels=fast.in_channels, out_channels=fast.out_channels, kernel_size=fast.kernel_size,
                    activation=fast.activation, down=fast.down, conv_clamp=fast.conv_clamp)
    return {}


def mirror(fake, fast: torch.nn.Module, kwargs=None, arch=None) -> torch.nn.Module:
    """A persistent StyleGAN2-ADA-layout module holding ``fast``'s tensors and settings, recursively."""
    arch = arch or {"G": "skip", "D": "resnet"}
    cls_name = type(fast).__name__
    obj = getattr(fake.nets, cls_name)(**(_leaf_kwargs(fast, cls_name) if kwargs is None else kwargs))
    for name, p in fast._parameters.items():
        obj._parameters[name] = None if p is None else torch.nn.Parameter(p.detach().clone(), requires_grad=False)
    if cls_name == "DiscriminatorBlock":  # StyleGAN2-ADA's blocks register their own FIR filter
        obj._buffers["resample_filter"] = setup_filter()
    for name, b in fast._buffers.items():
        obj._buffers[name] = b.detach().clone()
    for name, m in fast._modules.items():
        obj._modules[name] = None if m is None else mirror(fake, m, arch=arch)
    for key, value in vars(fast).items():
        if key.startswith("_") or key in ("training", "config", "impl"):
            continue
        obj.__dict__[key] = np.float64(value) if isinstance(value, float) else value  # numpy gains, as in SG2-ADA
    obj.__dict__.update(_sg2_extras(fast, cls_name, arch))
    return obj.eval()


def sg2_generator(fake, G: Generator, flat: bool = False, drop=(), arch="skip", **extra_synth) -> torch.nn.Module:
    cfg = G.config
    mk = fake.dnnlib.EasyDict(num_layers=cfg["mapping_layers"])
    sk = fake.dnnlib.EasyDict(channel_base=cfg["channel_base"], channel_max=cfg["channel_max"],
                              num_fp16_res=cfg["num_fp16_res"], conv_clamp=cfg["conv_clamp"], **extra_synth)
    if not cfg["use_noise"]:
        sk.use_noise = False
    for key in drop:
        sk.pop(key)
    if flat:  # StyleGAN3's networks_stylegan2.Generator(..., mapping_kwargs={}, **synthesis_kwargs)
        kwargs = dict(z_dim=cfg["z_dim"], w_dim=cfg["w_dim"], mapping_kwargs=mk, **sk)
    else:  # StyleGAN2-ADA: G_kwargs from train.py plus common_kwargs from the training loop
        kwargs = dict(z_dim=cfg["z_dim"], w_dim=cfg["w_dim"], mapping_kwargs=mk, synthesis_kwargs=sk)
    kwargs.update(c_dim=cfg["c_dim"], img_resolution=cfg["img_resolution"], img_channels=cfg["img_channels"])
    return mirror(fake, G, kwargs=kwargs, arch={"G": arch, "D": "resnet"})


def sg2_discriminator(fake, D: Discriminator, arch="resnet") -> torch.nn.Module:
    cfg = D.config
    mk = fake.dnnlib.EasyDict()
    if cfg["mapping_layers"] != 8:
        mk.num_layers = cfg["mapping_layers"]
    kwargs = dict(block_kwargs=fake.dnnlib.EasyDict(), mapping_kwargs=mk,
                  epilogue_kwargs=fake.dnnlib.EasyDict(mbstd_group_size=cfg["mbstd_group_size"]),
                  channel_base=cfg["channel_base"], channel_max=cfg["channel_max"],
                  num_fp16_res=cfg["num_fp16_res"], conv_clamp=cfg["conv_clamp"],
                  c_dim=cfg["c_dim"], img_resolution=cfg["img_resolution"], img_channels=cfg["img_channels"])
    if arch != "resnet":
        kwargs["architecture"] = arch
    return mirror(fake, D, kwargs=kwargs, arch={"G": "skip", "D": arch})


def write_snapshot(path, fake, G, G_ema, D, augment_p=None, training_set=None, protocol=None, tamper=None):
    """What StyleGAN2-ADA's training loop does: dict(training_set_kwargs=...), then deep copies of G, D, G_ema,
    augment_pipe, pickle.dump. ``tamper(data)`` edits the dict after the copies (a payload must not run there)."""
    data = dict(training_set_kwargs=dict(training_set or {}))
    aug = None
    if augment_p is not None:
        aug = fake.augment.AugmentPipe(xflip=1, rotate90=1, xint=1, brightness=1, contrast=1)
        aug.p.copy_(torch.tensor(augment_p))
    for name, module in (("G", G), ("D", D), ("G_ema", G_ema), ("augment_pipe", aug)):
        data[name] = None if module is None else copy.deepcopy(module).eval().requires_grad_(False).cpu()
    if tamper is not None:
        tamper(data)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


def small_nets(c_dim=0, **gkw):
    cfg = dict(z_dim=16, w_dim=16, img_resolution=16, img_channels=3, mapping_layers=2, channel_base=128,
               channel_max=16, c_dim=c_dim)
    cfg.update(gkw)
    G = Generator(**cfg).eval()
    with torch.no_grad():  # non-trivial values for the tensors that start at zero
        for name, t in G.state_dict().items():
            if name.endswith(("noise_strength", "w_avg", "bias")):
                t.copy_(torch.randn_like(t) * 0.3)
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G_ema.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    D = Discriminator(c_dim=c_dim, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
                      num_fp16_res=cfg.get("num_fp16_res", 0), conv_clamp=cfg.get("conv_clamp"),
                      mbstd_grouping="strided").eval()  # StyleGAN2's groups
    return G, G_ema, D


def _no_fake_modules():
    return not [m for m in sys.modules if m.split(".")[0] in FAKE_PACKAGES or m.startswith("_imported_module_")]


def _assert_same_outputs(src, path, which, c=None):
    net = load_network(path, which=which)
    torch.manual_seed(1)
    if which == "D":
        img = torch.randn(4, 3, 16, 16)
        assert torch.equal(net(img, c), src(img, c))
        return
    z = torch.randn(4, src.z_dim)
    for psi in (1.0, 0.7):
        ref = src(z, c, truncation_psi=psi, noise_mode="const")
        assert torch.equal(net(z, c, truncation_psi=psi, noise_mode="const"), ref)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_unconditional_roundtrip_is_exact(tmp_path, protocol):
    G, G_ema, D = small_nets()
    path = tmp_path / "network-snapshot-000123.pkl"
    ts = dict(class_name="training.dataset.ImageFolderDataset", path="/data/faces-16.zip", use_labels=False,
              max_size=50, xflip=True, resolution=16)
    with fake_stylegan2(tmp_path / "sg2") as fake:
        write_snapshot(path, fake, sg2_generator(fake, G), sg2_generator(fake, G_ema), sg2_discriminator(fake, D),
                       training_set=ts, protocol=protocol)
    assert _no_fake_modules()

    blob = load_stylegan2_pkl(path)
    assert _no_fake_modules()  # nothing was imported while reading
    assert blob["format"] == "fastgan-snapshot" and blob["version"] == 1
    assert blob["fastgan_version"] == fastgan.__version__
    assert set(blob["networks"]) == {"G", "G_ema", "D"}
    assert blob["networks"]["G_ema"]["config"] == G.config
    assert blob["networks"]["G"]["config"] == G.config
    assert blob["networks"]["D"]["config"] == D.config
    assert blob["kimg"] == 123.0
    assert blob["training_set"]["path"] == "/data/faces-16.zip" and blob["training_set"]["mirror"] is True
    assert blob["training_set"]["resolution"] == 16 and blob["training_set"]["label_dim"] == 0
    assert blob["extra"]["source"] == "stylegan2-ada-pkl" and blob["extra"]["flavor"] == "stylegan2-ada"
    assert blob["extra"]["augment_p"] is None and blob["extra"]["persistence_version"] == 6

    for which, src in (("G_ema", G_ema), ("G", G), ("D", D)):
        got = blob["networks"][which]["state_dict"]
        assert got.keys() == src.state_dict().keys()
        assert all(torch.equal(got[k], v) for k, v in src.state_dict().items())
    if protocol == 4:  # forward passes are the slow part; one protocol is enough for them
        for which, src in (("G_ema", G_ema), ("G", G), ("D", D)):
            _assert_same_outputs(src, path, which)
    assert load_snapshot(path)["networks"]["D"]["config"] == D.config

    # the dict is plain: it re-saves and reloads with weights_only=True like a native snapshot
    torch.save(blob, tmp_path / "resaved.pt")
    again = torch.load(tmp_path / "resaved.pt", weights_only=True)
    assert torch.equal(again["networks"]["G_ema"]["state_dict"]["mapping.w_avg"], G_ema.mapping.w_avg)


def test_conditional_fp16_roundtrip_with_augment_pipe(tmp_path):
    G, G_ema, D = small_nets(c_dim=3, num_fp16_res=2, conv_clamp=256)
    path = tmp_path / "network-snapshot-004000.pkl"
    ts = dict(class_name="training.dataset.ImageFolderDataset", path="/data/cifar.zip", use_labels=True,
              max_size=10, xflip=False, resolution=16)
    with fake_stylegan2(tmp_path / "sg2") as fake:
        write_snapshot(path, fake, sg2_generator(fake, G), sg2_generator(fake, G_ema), sg2_discriminator(fake, D),
                       augment_p=0.3125, training_set=ts)
    blob = load_stylegan2_pkl(path)
    assert blob["networks"]["G_ema"]["config"] == G.config
    assert blob["networks"]["D"]["config"] == D.config and blob["networks"]["D"]["config"]["c_dim"] == 3
    assert "mapping.embed.weight" in blob["networks"]["D"]["state_dict"]
    assert blob["extra"]["augment_p"] == 0.3125
    assert blob["extra"]["augment_kwargs"]["rotate90"] == 1
    assert blob["training_set"]["use_labels"] is True and blob["training_set"]["label_dim"] == 3
    c = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 2]), 3).float()
    _assert_same_outputs(G_ema, path, "G_ema", c)
    _assert_same_outputs(D, path, "D", c)


def test_pickles_follow_the_persistence_protocol(tmp_path):
    """The fixture's pickles load through ``_reconstruct_persistent_obj`` (running module_src, as
    StyleGAN2-ADA does) into modules whose state_dict equals fastgan's: they have StyleGAN2-ADA's layout."""
    G, G_ema, D = small_nets(c_dim=2)
    path = tmp_path / "network-snapshot-000000.pkl"
    with fake_stylegan2(tmp_path / "sg2") as fake:
        write_snapshot(path, fake, sg2_generator(fake, G), sg2_generator(fake, G_ema), sg2_discriminator(fake, D))
        with open(path, "rb") as f:
            data = pickle.load(f)
        assert type(data["G_ema"]).__module__ == "torch_utils.persistence"
        assert type(data["G_ema"].init_kwargs["mapping_kwargs"]).__name__ == "EasyDict"
        got = data["G_ema"].state_dict()
        assert got.keys() == G_ema.state_dict().keys()
        assert all(torch.equal(got[k], v) for k, v in G_ema.state_dict().items())
        assert "b16.resample_filter" in data["D"].state_dict()  # the extra StyleGAN2-ADA buffer
        assert isinstance(data["G_ema"].mapping.fc0.weight_gain, np.float64)
    raw = read_persistent_pickle(path)
    g = raw["G_ema"]
    assert g["class_name"] == "Generator" and "class Generator" in g["module_src"]
    assert type(g["state"]["_init_kwargs"]["mapping_kwargs"]) is dict
    assert g["state"]["_modules"]["mapping"]["state"]["_modules"]["fc0"]["state"]["weight_gain"] == pytest.approx(
        G_ema.mapping.fc0.weight_gain)
    assert type(g["state"]["_modules"]["mapping"]["state"]["_modules"]["fc0"]["state"]["weight_gain"]) is float
    assert torch.equal(g["state"]["_modules"]["mapping"]["state"]["_buffers"]["w_avg"], G_ema.mapping.w_avg)


def test_stylegan3_stylegan2_config(tmp_path):
    """StyleGAN3 --cfg=stylegan2: flat generator kwargs, num_fp16_res/conv_clamp left at StyleGAN3's defaults
    (4 and 256, absent from init_kwargs) and w_avg_beta 0.998: read from what the modules hold."""
    G, G_ema, D = small_nets(num_fp16_res=2, conv_clamp=256, use_noise=False)
    path = tmp_path / "network-snapshot-000040.pkl"
    with fake_stylegan2(tmp_path / "sg2") as fake:
        sg = [sg2_generator(fake, net, flat=True, drop=("num_fp16_res", "conv_clamp"),
                            fused_modconv_default="inference_only") for net in (G, G_ema)]
        for g in sg:
            g.mapping.w_avg_beta = 0.998
        write_snapshot(path, fake, sg[0], sg[1], sg2_discriminator(fake, D))
    blob = load_stylegan2_pkl(path)
    assert blob["extra"]["flavor"] == "stylegan3-stylegan2"
    assert blob["networks"]["G_ema"]["config"] == G.config
    assert blob["networks"]["G_ema"]["config"]["use_noise"] is False
    assert any("w_avg_beta" in n for n in blob["extra"]["notes"])
    assert any("fused_modconv_default" in n for n in blob["extra"]["notes"])
    _assert_same_outputs(G_ema, path, "G_ema")


def test_stylegan3_r_t_generators_are_refused(tmp_path):
    G, G_ema, D = small_nets()
    path = tmp_path / "network-snapshot-000001.pkl"
    with fake_stylegan2(tmp_path / "sg2") as fake:
        sg = [sg2_generator(fake, net, flat=True, magnitude_ema_beta=0.999) for net in (G, G_ema)]
        sg[1].synthesis._modules["input"] = fake.nets.SynthesisInput()
        write_snapshot(path, fake, sg[0], sg[1], sg2_discriminator(fake, D))
    with pytest.raises(ValueError, match="StyleGAN3 'stylegan3-t'/'stylegan3-r'.*magnitude_ema_beta"):
        load_stylegan2_pkl(path)
    with pytest.raises(ValueError, match="StyleGAN3"):
        load_stylegan2_pkl(path, networks=["G_ema"])
    blob = load_stylegan2_pkl(path, networks=["D"])
    assert list(blob["networks"]) == ["D"] and blob["networks"]["D"]["config"] == D.config


class _Evil:
    """Pickles as a call of a global that leaves a file behind when it runs."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "nested-storage"])
def test_foreign_globals_are_refused_without_running(tmp_path, kind):
    marker = tmp_path / "pwned"
    if kind == "os.system":
        evil, name = _Evil(os.system, f"touch '{marker}'"), "posix.system"
    elif kind == "builtins.exec":
        evil, name = _Evil(exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"
    else:  # a tensor storage payload that is itself a code-running pickle
        payload = pickle.dumps(_Evil(os.system, f"touch '{marker}'"))
        evil, name = _Evil(torch.storage._load_from_bytes, payload), "nested tensor storage"
    G, G_ema, D = small_nets()
    path = tmp_path / "network-snapshot-000010.pkl"

    def tamper(data):  # deep inside a persistent module's state
        data["G_ema"].synthesis.b8.conv1.__dict__["payload"] = evil

    with fake_stylegan2(tmp_path / "sg2") as fake:
        write_snapshot(path, fake, sg2_generator(fake, G), sg2_generator(fake, G_ema), sg2_discriminator(fake, D),
                       tamper=tamper)
        assert not marker.exists()
        with open(path, "rb") as f:  # control: an ordinary unpickler runs it
            with contextlib.suppress(Exception):
                pickle.load(f)
        assert marker.exists()
        marker.unlink()

    with pytest.raises(UnsafePickleError, match=f"{name}".replace(".", r"\.")):
        load_stylegan2_pkl(path)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError):
        read_persistent_pickle(path)
    assert not marker.exists()


def test_module_source_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    G, G_ema, D = small_nets()
    path = tmp_path / "network-snapshot-000010.pkl"

    def tamper(data):  # G and G_ema share the persistent Generator class and so its module source
        cls = type(data["G_ema"])
        cls._orig_module_src = f"open({str(marker)!r}, 'w').close()\n" + cls._orig_module_src

    with fake_stylegan2(tmp_path / "sg2") as fake:
        write_snapshot(path, fake, sg2_generator(fake, G), sg2_generator(fake, G_ema), sg2_discriminator(fake, D),
                       tamper=tamper)
        assert not marker.exists()
        with open(path, "rb") as f:  # control: the persistence protocol runs module_src
            pickle.load(f)
        assert marker.exists()
        marker.unlink()
    blob = load_stylegan2_pkl(path)
    assert not marker.exists()
    assert blob["networks"]["G_ema"]["config"] == G.config


@pytest.mark.parametrize("which", ["G", "D"])
def test_unsupported_architecture_is_named(tmp_path, which):
    G, G_ema, D = small_nets()
    path = tmp_path / "network-snapshot-000001.pkl"
    with fake_stylegan2(tmp_path / "sg2") as fake:
        garch = "orig" if which == "G" else "skip"
        gs = [sg2_generator(fake, net, arch=garch, **({"architecture": "orig"} if which == "G" else {}))
              for net in (G, G_ema)]
        d = sg2_discriminator(fake, D, arch="skip" if which == "D" else "resnet")
        write_snapshot(path, fake, gs[0], gs[1], d)
    pattern = "synthesis_kwargs.architecture='orig'" if which == "G" else "architecture='skip'.*'resnet'"
    with pytest.raises(ValueError, match=pattern):
        load_stylegan2_pkl(path)
    bad, good = ("G_ema", "D") if which == "G" else ("D", "G_ema")
    with pytest.raises(ValueError, match="architecture"):
        load_network(path, which=bad)
    assert load_network(path, which=good) is not None  # only the requested network is imported
    if which == "D":  # the generators alone are still importable
        blob = load_stylegan2_pkl(path, networks=("G_ema", "G"))
        assert set(blob["networks"]) == {"G_ema", "G"}


def test_unsupported_settings_are_named(tmp_path):
    G, G_ema, D = small_nets()
    path = tmp_path / "a.pkl"
    with fake_stylegan2(tmp_path / "sg2") as fake:
        g = sg2_generator(fake, G)
        g._init_kwargs["mapping_kwargs"]["lr_multiplier"] = 0.1
        write_snapshot(path, fake, g, g, sg2_discriminator(fake, D))
        with pytest.raises(ValueError, match=r"mapping_kwargs\.lr_multiplier=0\.1"):
            load_stylegan2_pkl(path)
        g = sg2_generator(fake, G)  # the same setting seen only in a module's attributes
        g.mapping.fc1.__dict__["bias_gain"] = 0.1
        write_snapshot(path, fake, g, g, sg2_discriminator(fake, D))
        with pytest.raises(ValueError, match=r"mapping\.fc1\.bias_gain\s+0\.1\s+0\.01"):
            load_stylegan2_pkl(path)
        g = sg2_generator(fake, G, resample_filter=[1, 2, 1])
        write_snapshot(path, fake, g, g, sg2_discriminator(fake, D))
        with pytest.raises(ValueError, match="resample_filter"):
            load_stylegan2_pkl(path)


def test_tensor_mismatches_are_tabled(tmp_path):
    G, G_ema, D = small_nets()
    path = tmp_path / "network-snapshot-000001.pkl"
    with fake_stylegan2(tmp_path / "sg2") as fake:
        g = sg2_generator(fake, G_ema)
        g.synthesis.b8.conv1._parameters["weight"] = torch.nn.Parameter(torch.zeros(16, 8, 3, 3))
        del g.mapping._buffers["w_avg"]
        g.synthesis.b8._buffers["stray"] = torch.zeros(5)
        write_snapshot(path, fake, sg2_generator(fake, G), g, sg2_discriminator(fake, D))
    with pytest.raises(ValueError) as info:
        load_stylegan2_pkl(path)
    msg = str(info.value)
    assert "G_ema does not match" in msg and "3 tensor(s) differ" in msg
    lines = {line.split()[0]: line.split(None, 1)[1] for line in msg.splitlines()[1:]}
    assert lines["synthesis.b8.conv1.weight"].split() == ["(16,", "8,", "3,", "3)", "(16,", "16,", "3,", "3)"]
    assert lines["mapping.w_avg"].split() == ["missing", "(16,)"]
    assert lines["synthesis.b8.stray"].split() == ["(5,)", "unexpected"]
    blob = load_stylegan2_pkl(path, networks=["G", "D"])  # the intact ones still load
    assert set(blob["networks"]) == {"G", "D"}


def test_not_a_stylegan2_pickle(tmp_path):
    zipped = tmp_path / "model.pkl"
    torch.save({"a": torch.zeros(1)}, zipped)
    with pytest.raises(ValueError, match="zip archive"):
        load_stylegan2_pkl(zipped)
    other = tmp_path / "list.pkl"
    other.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="not StyleGAN2-ADA's snapshot dict"):
        load_stylegan2_pkl(other)
    tf = tmp_path / "tf.pkl"
    tf.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.")
    with pytest.raises(UnsafePickleError, match="TensorFlow"):
        load_stylegan2_pkl(tf)

"""nn.Modules built only from fastgan.ops and torch: modulated / AdaFM convs and the StyleGAN2-style networks."""
from .checkpoint import load_network, load_snapshot, save_snapshot
from .modconv import AdaFMConv2d, ModulatedConv2d
from .networks import Discriminator, Generator, MappingNetwork, SynthesisNetwork, build_network
from .vision import VisionAidedDiscriminator, available_backbones, build_backbone

__all__ = ["ModulatedConv2d", "AdaFMConv2d", "Generator", "Discriminator", "MappingNetwork", "SynthesisNetwork",
           "build_network", "save_snapshot", "load_snapshot", "load_network", "VisionAidedDiscriminator",
           "available_backbones", "build_backbone"]

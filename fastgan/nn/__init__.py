"""nn.Modules built only from fastgan.ops and torch."""
from .modconv import AdaFMConv2d, ModulatedConv2d

__all__ = ["ModulatedConv2d", "AdaFMConv2d"]

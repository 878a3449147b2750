"""``fastgan demo``: synthesise, pretrain, select the source by recall, transfer with AdaFM and a vision-aided
discriminator, sample naively and with MaGNET, evaluate (see docs/demo.md).

:func:`run_demo` runs it from Python; :mod:`fastgan.demo.data` writes the real image set that ships in an
installed package (``lfw-faces``) as a dataset zip.
"""
from .data import PACKAGED_SETS, write_packaged_set
from .run import PRESETS, DemoConfig, run_demo

__all__ = ["run_demo", "DemoConfig", "PRESETS", "PACKAGED_SETS", "write_packaged_set"]

"""The 2-D experiment of *When, Why, and Which Pretrained GANs Are Useful?* (Grigoryev et al., ICLR 2022).

Small MLP GANs are pretrained on two source distributions, every checkpoint is measured (recall of the 10-mode target,
∇D similarity) and fine-tuned on the target, and the measures are correlated with the fine-tuned W1. Modules:

- ``toy``: Source-I, Source-II and the target;
- ``models``: the networks, one at a time (reference modules) and many at once (stacked states);
- ``trainer``: the batched training loop (per-model batches, BatchNorm statistics, Adam and random streams);
- ``w1``: exact W1 by optimal assignment, and a process pool for many of them;
- ``diagnostics``: recall, ∇D similarity, Pearson r with bootstrap intervals;
- ``study``: the protocol end to end (``run_study``), ``plots``: PNG figures, ``cli``: ``fastgan playground``;
- ``image_scale``: the same question on small image generators (``run_image_scale``, ``fastgan playground
  image-scale``): does recall rank Primitives-PS, spectrum-only and random initialisations in the order of their
  fine-tuned FID?

See docs/playground.md.
"""
from .image_scale import ImageScaleConfig, run_image_scale
from .study import PlaygroundConfig, run_study
from .w1 import w1_exact

__all__ = ["ImageScaleConfig", "PlaygroundConfig", "run_image_scale", "run_study", "w1_exact"]

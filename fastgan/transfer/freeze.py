"""Which parameters train under each transfer method: finetune, FreezeD and the AdaFM recipe.

A :class:`FreezePolicy` lists parameter names (in module order) in four groups:

- ``g_trainable``: generator parameters that train from the first step;
- ``g_adafm``: AdaFM gamma/beta, which train from ``unfreeze_nimg`` images on (AdaFM's delayed unfreeze);
- ``g_frozen`` / ``d_frozen``: never trained (``requires_grad`` stays False, not in any optimizer, not in the
  gradient all-reduce);
- ``d_trainable``: discriminator parameters that train.

Methods (``fastgan transfer --method``):

- ``finetune``: every G and D parameter trains (the plain baseline).
- ``freezed`` (FreezeD, Mo et al. 2020): every G parameter trains; the ``freeze_d`` highest-resolution D blocks
  (``b<R>``, ``b<R/2>``, ...: the early layers that see the image, including the first block's fromRGB) are frozen.
- ``adafm``: the front (mapping network + synthesis blocks at or below the front resolution) trains; in the
  transferred blocks above it the convolution weights, biases, noise strengths, style affines and toRGB are
  frozen and only gamma/beta train, after the unfreeze point; D as with FreezeD.

The policy is a pure function of the network structure and the options, so a resumed run rebuilds the same one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from .adafm import is_adafm_name

METHODS = ("finetune", "freezed", "adafm")

__all__ = ["METHODS", "FreezePolicy", "make_policy", "d_block_names", "check_freeze_d", "default_freeze_d"]


def d_block_names(D: nn.Module) -> list[str]:
    """The discriminator's resolution blocks from the image side inwards: ``["b256", "b128", ..., "b8"]``
    (the epilogue ``b4`` is not a block that FreezeD freezes)."""
    return [f"b{r}" for r in D.block_resolutions]


def num_d_blocks(img_resolution: int) -> int:
    """Number of freezable D blocks at ``img_resolution`` (blocks 8 px .. R)."""
    return max(img_resolution.bit_length() - 1 - 2, 0)


def check_freeze_d(k, img_resolution: int) -> int:
    """``k`` as an int in [0, number of D blocks], or ``ValueError`` naming ``--freeze-d``."""
    n = num_d_blocks(img_resolution)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"--freeze-d must be a non-negative integer (number of D blocks to freeze), got {k!r}")
    if k > n:
        names = ", ".join(f"b{img_resolution >> i}" for i in range(n))
        raise ValueError(f"--freeze-d {k} is larger than the number of discriminator blocks at {img_resolution} px "
                         f"({n}: {names}); the epilogue b4 always trains")
    return k


def default_freeze_d(method: Optional[str]) -> int:
    """FreezeD depth per method: 0 for finetune (and plain training), 1 for freezed and adafm.

    AdaFM's code freezes D's ``conv_img`` and its first (128 px) stage (``D_Layer_FIX=2``); in fastgan's
    discriminator the first block holds the fromRGB layer and the first stage, so the analogue is one block.
    """
    return 1 if method in ("freezed", "adafm") else 0


@dataclass(frozen=True)
class FreezePolicy:
    method: Optional[str]
    g_trainable: tuple[str, ...]
    g_adafm: tuple[str, ...]
    g_frozen: tuple[str, ...]
    d_trainable: tuple[str, ...]
    d_frozen: tuple[str, ...]
    unfreeze_nimg: Optional[int] = None  # images after which g_adafm trains (None: no AdaFM)
    front_res: Optional[int] = None
    freeze_d: int = 0

    def adafm_active(self, cur_nimg: int) -> bool:
        return bool(self.g_adafm) and self.unfreeze_nimg is not None and cur_nimg >= self.unfreeze_nimg

    def g_names(self, cur_nimg: int) -> tuple[str, ...]:
        """Names of the G parameters that train at ``cur_nimg`` (module order is kept by :meth:`params`)."""
        return self.g_trainable + (self.g_adafm if self.adafm_active(cur_nimg) else ())

    def g_optimized(self) -> tuple[str, ...]:
        """Names in the G optimizer: the trainable ones and gamma/beta (from the start, so that resuming across
        the unfreeze point rebuilds the same optimizer; Adam skips parameters without a gradient)."""
        return self.g_trainable + self.g_adafm

    @staticmethod
    def params(module: nn.Module, names) -> list[nn.Parameter]:
        """The parameters of ``module`` named in ``names``, in module order."""
        want = set(names)
        return [p for n, p in module.named_parameters() if n in want]

    def summary(self, G: nn.Module, D: nn.Module) -> str:
        """A few lines for the run log: how many tensors / scalars train, wait for the unfreeze, or are frozen."""
        gp, dp = dict(G.named_parameters()), dict(D.named_parameters())

        def count(names, table) -> str:
            return f"{len(names)} tensors / {sum(table[n].numel() for n in names):,} values"

        lines = [f"method {self.method or 'train'}:"]
        lines.append(f"  G trainable  {count(self.g_trainable, gp)}"
                     + (f" (front: mapping + blocks <= {self.front_res} px)" if self.front_res else ""))
        if self.g_adafm:
            lines.append(f"  G AdaFM      {count(self.g_adafm, gp)} (gamma/beta; train from kimg "
                         f"{self.unfreeze_nimg / 1000:g})")
        lines.append(f"  G frozen     {count(self.g_frozen, gp)}")
        lines.append(f"  D trainable  {count(self.d_trainable, dp)}")
        blocks = ", ".join(d_block_names(D)[: self.freeze_d]) or "none"
        lines.append(f"  D frozen     {count(self.d_frozen, dp)} (FreezeD {self.freeze_d}: {blocks})")
        return "\n".join(lines)


def _block_res(name: str) -> Optional[int]:
    """Resolution of the synthesis block a G parameter belongs to (None for the mapping network)."""
    parts = name.split(".")
    if len(parts) > 1 and parts[0] == "synthesis" and parts[1].startswith("b"):
        return int(parts[1][1:])
    return None


def make_policy(G: nn.Module, D: nn.Module, method: Optional[str] = None, *, freeze_d: int = 0,
                front_res: Optional[int] = None, unfreeze_nimg: Optional[int] = None) -> FreezePolicy:
    """The parameter groups of ``method`` (None = plain training, everything trains) for these networks.

    ``adafm`` needs an AdaFM generator whose AdaFM blocks are exactly those above ``front_res``.
    """
    if method is not None and method not in METHODS:
        raise ValueError(f"--method must be one of {METHODS}, got {method!r}")
    if method in (None, "finetune") and freeze_d:
        raise ValueError(f"--freeze-d {freeze_d} freezes discriminator blocks: use --method freezed (or adafm); "
                         f"--method {method or 'finetune'} trains every parameter")
    k = check_freeze_d(freeze_d, D.img_resolution)
    frozen_blocks = set(d_block_names(D)[:k])
    d_names = [n for n, _ in D.named_parameters()]
    d_frozen = tuple(n for n in d_names if n.split(".")[0] in frozen_blocks)
    d_trainable = tuple(n for n in d_names if n.split(".")[0] not in frozen_blocks)
    g_names = [n for n, _ in G.named_parameters()]
    if method != "adafm":
        if any(is_adafm_name(n) for n in g_names):
            raise ValueError(f"--method {method or 'train'} got an AdaFM generator; fold it first "
                             "(fastgan.transfer.fold) or use --method adafm")
        return FreezePolicy(method, tuple(g_names), (), (), d_trainable, d_frozen, None, None, k)
    if front_res is None:
        raise ValueError("--method adafm needs the front resolution (--adafm-front-res)")
    want = [r for r in G.synthesis.block_resolutions if r > front_res]
    if list(G.synthesis.adafm_resolutions) != want:
        raise ValueError(f"the generator's AdaFM blocks {list(G.synthesis.adafm_resolutions)} are not the blocks "
                         f"above --adafm-front-res {front_res} ({want})")
    if unfreeze_nimg is None or unfreeze_nimg < 0:
        raise ValueError(f"--adafm-unfreeze must be >= 0 kimg, got {unfreeze_nimg!r} images")
    trainable, adafm, frozen = [], [], []
    for n in g_names:
        res = _block_res(n)
        if res is None or res <= front_res:
            trainable.append(n)
        elif is_adafm_name(n):
            adafm.append(n)
        else:
            frozen.append(n)
    return FreezePolicy(method, tuple(trainable), tuple(adafm), tuple(frozen), d_trainable, d_frozen,
                        int(unfreeze_nimg), front_res, k)

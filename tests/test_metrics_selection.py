"""Source selection by recall: scores equal prdc's, the ranking prefers the source that covers the target's modes."""
from __future__ import annotations

import pytest
import torch

from fastgan import metrics as M
from fastgan.metrics import select_source


def _clusters(centres, n_each, seed, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(n_each, 8, generator=g, dtype=torch.float64) * spread + c for c in centres])


CENTRES = [torch.full((8,), v, dtype=torch.float64) for v in (0.0, 4.0, -4.0)]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_scores_are_prdc_with_the_target_as_real():
    target = _clusters(CENTRES, 40, 0)
    cand = _clusters(CENTRES[:2], 150, 1)
    (s,) = select_source(target, {"a": cand}, k=5, bootstrap=50)
    want = M.prdc(target, cand, k=5)
    assert (s.recall, s.precision, s.density, s.coverage) == pytest.approx(
        (want["recall"], want["precision"], want["density"], want["coverage"]), abs=1e-12)
    assert s.n_target == 120 and s.n_samples == 300 and s.as_dict()["name"] == "a"


def test_ranking_prefers_the_source_that_covers_every_mode():
    target = _clusters(CENTRES, 40, 2)
    cands = {
        "collapsed": _clusters(CENTRES[:1], 300, 3),   # one mode, precise
        "diverse": _clusters(CENTRES, 100, 4),         # every mode
        "far": _clusters([torch.full((8,), 20.0, dtype=torch.float64)], 300, 5),
    }
    ranked = select_source(target, cands, k=5, bootstrap=200, seed=1)
    assert [s.name for s in ranked] == ["diverse", "collapsed", "far"]
    diverse, collapsed, far = ranked
    assert diverse.recall > 0.9 and collapsed.recall == pytest.approx(1 / 3, abs=0.05) and far.recall == 0.0
    for s in ranked:
        assert 0.0 <= s.recall_low <= s.recall <= s.recall_high <= 1.0
    assert collapsed.recall_high - collapsed.recall_low > 0.05  # 120 target samples: a visible interval
    assert select_source(target, cands, k=5, bootstrap=200, seed=1) == ranked  # deterministic


def test_bad_input_is_named():
    target = _clusters(CENTRES, 10, 6)
    with pytest.raises(ValueError, match="at least one candidate"):
        select_source(target, {})
    with pytest.raises(ValueError, match="same number of samples"):
        select_source(target, {"a": _clusters(CENTRES, 10, 7), "b": _clusters(CENTRES, 11, 8)})
    with pytest.raises(ValueError, match="width 4, the target 8"):
        select_source(target, {"a": torch.randn(30, 4)})
    with pytest.raises(ValueError, match="at least 6 target samples, got 3"):
        select_source(target[:3], {"a": _clusters(CENTRES, 10, 7)})
    with pytest.raises(TypeError, match=r"candidates\['a'\] must be a tensor"):
        select_source(target, {"a": [[0.0] * 8]})
    with pytest.raises(ValueError, match="confidence"):
        select_source(target, {"a": _clusters(CENTRES, 10, 7)}, confidence=1.0)


# ---------------------------------------------------------------------------------------------------------------
# ∇D similarity (METHODS.md §4.3 on images)

from torch import nn  # noqa: E402

from fastgan.metrics import GradDSimilarity, grad_d_cosines, grad_d_similarity  # noqa: E402
from fastgan.nn import Discriminator, Generator  # noqa: E402

SHAPE = (3, 8, 8)
TARGET = torch.full((1, *SHAPE), 0.5)                       # one target image
U = torch.nn.functional.normalize(torch.randn(int(torch.tensor(SHAPE).prod()), generator=torch.Generator()
                                              .manual_seed(0)), dim=0)


class LinearD(nn.Module):
    """D(x) = <w, x>: its gradient is w everywhere."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x, c=None):
        return x.flatten(1) @ self.w[:, None]


class LineG(nn.Module):
    """Sample i = target - a_i * u with a_i > 0 from z: every sample sees its target image along +u."""
    z_dim, c_dim, img_channels, img_resolution = 4, 0, 3, 8

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, z, c=None, truncation_psi=1.0, noise_mode="const"):
        a = 0.1 + z[:, :1].abs()
        return (TARGET.flatten(1) - a * U + self.dummy).view(-1, *SHAPE)


def test_grad_d_similarity_sign_on_a_hand_built_case():
    # D rises along +u, towards the target: a G step (along -grad L_G = +sigmoid(-D) u) moves x to the target
    toward = grad_d_similarity(LineG(), LinearD(U), TARGET.view(1, *SHAPE), num=20, batch_size=8)
    assert isinstance(toward, GradDSimilarity) and (toward.num, toward.num_valid) == (20, 20)
    assert toward.update_direction == pytest.approx(1.0, abs=1e-9)
    assert toward.loss_gradient == pytest.approx(-1.0, abs=1e-9)     # the paper code's sign: the loss gradient
    away = grad_d_similarity(LineG(), LinearD(-U), TARGET, num=20, batch_size=8)
    assert away.update_direction == pytest.approx(-1.0, abs=1e-9) and away.loss_gradient == pytest.approx(1.0)
    assert toward.as_dict() == {"loss_gradient": toward.loss_gradient, "update_direction": toward.update_direction,
                                "num": 20, "num_valid": 20}


def test_grad_d_similarity_conventions_are_exact_negatives_on_real_networks():
    torch.manual_seed(1)
    G = Generator(z_dim=16, w_dim=16, img_resolution=8, channel_base=64, channel_max=16, mapping_layers=1).eval()
    D = Discriminator(img_resolution=8, channel_base=64, channel_max=16)
    target = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    r = grad_d_similarity(G, D, target, num=16, batch_size=8, seed=5)
    assert r.update_direction == -r.loss_gradient and -1.0 <= r.loss_gradient <= 1.0 and r.num_valid == 16
    assert grad_d_similarity(G, D, target, num=16, batch_size=8, seed=5) == r     # deterministic
    assert grad_d_similarity(G, D, target, num=16, batch_size=8, seed=6) != r     # the seed picks the latents
    assert not any(p.grad is not None for p in D.parameters())                   # D gets no gradient
    with pytest.raises(ValueError, match=r"multiple of the discriminator's minibatch-std group size \(4\)"):
        grad_d_similarity(G, D, target, num=10, batch_size=8)
    with pytest.raises(ValueError, match="target images are 3x16x16 .* source generates 3x8x8"):
        grad_d_similarity(G, D, torch.zeros(2, 3, 16, 16), num=8)
    with pytest.raises(ValueError, match="target images are 1x8x8 .* source generates 3x8x8"):
        grad_d_similarity(G, D, torch.zeros(2, 1, 8, 8), num=8)
    with pytest.raises(ValueError, match="num must be an int >= 1"):
        grad_d_similarity(G, D, target, num=0)


def test_grad_d_cosines_nearest_target_and_nans_ignored():
    t = torch.stack([torch.full(SHAPE, 0.5), torch.full(SHAPE, -0.5)])
    x = torch.stack([t[0] - 0.2 * U.view(SHAPE),     # nearest t[0], along +u
                     t[1] + 0.2 * U.view(SHAPE),     # nearest t[1], along -u
                     t[0].clone()])                  # on a target image: c(x) - x = 0, undefined
    cos = grad_d_cosines(LinearD(U), x, t)
    assert cos.dtype == torch.float64 and cos[:2].tolist() == pytest.approx([-1.0, 1.0]) and cos[2].isnan()
    flat = LinearD(torch.zeros_like(U))            # no gradient anywhere: every cosine undefined
    assert grad_d_cosines(flat, x, t).isnan().all()
    r = grad_d_similarity(LineG(), flat, TARGET, num=4)
    assert r.num_valid == 0 and r.loss_gradient != r.loss_gradient and r.update_direction != r.update_direction
    with pytest.raises(ValueError, match="the target images are 3x8x8 .* samples are 3x4x4"):
        grad_d_cosines(LinearD(U), torch.zeros(2, 3, 4, 4), t)
    with pytest.raises(ValueError, match=r"c must be \(3, c_dim\) labels"):
        grad_d_cosines(LinearD(U), x, t, c=torch.zeros(2, 2))
    with pytest.raises(TypeError, match="target must be a tensor"):
        grad_d_cosines(LinearD(U), x, [0.5])

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

"""fastgan.playground: batched nets equal the reference modules, batched Adam equals per-model Adam, randomness is per
model, W1 equals scipy's assignment, recall on constructed cases, the study is deterministic, --quick end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fastgan import cli
from fastgan.playground import diagnostics, models, plots, toy
from fastgan.playground.study import PlaygroundConfig, load_checkpoints, run_study, w1_outcomes
from fastgan.playground.trainer import BatchedGAN, ModelStreams, TrainParams, train
from fastgan.playground import w1 as w1_mod
from fastgan.playground.w1 import W1Pool, w1_exact, w1_lower_bound


pytestmark = pytest.mark.usefixtures("one_thread")


def _refs(m, seed=0):
    torch.manual_seed(seed)
    gs = [models.Generator() for _ in range(m)]
    ds = [models.Discriminator() for _ in range(m)]
    with torch.no_grad():  # non-trivial BatchNorm affine and statistics
        for g in gs:
            for mod in g.modules():
                if isinstance(mod, torch.nn.BatchNorm1d):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.2, 0.2)
                    mod.running_mean.uniform_(-0.1, 0.1)
                    mod.running_var.uniform_(0.5, 2.0)
    return gs, ds


# -- networks ------------------------------------------------------------------------------------------------------

def test_layout_matches_the_original_keys():
    g, d = models.Generator(), models.Discriminator()
    assert [k for k in g.state_dict() if k.endswith("weight")][:3] == ["module.0.weight", "module.1.weight",
                                                                       "module.3.weight"]
    assert g.module[15].out_features == 2 and g.module[0].in_features == 64
    assert [m.out_features for m in d.module if isinstance(m, torch.nn.Linear)] == [64, 128, 128, 64, 1]
    assert isinstance(d.module[-1], torch.nn.Sigmoid)
    assert models.parameter_keys("discriminator") == [k for k, _ in d.named_parameters()]
    assert models.parameter_keys("generator") == [k for k, _ in g.named_parameters()]


@pytest.mark.parametrize("training", [True, False])
def test_batched_generator_equals_reference_modules(training):
    gs, _ = _refs(3)
    state = models.stack_states([g.state_dict() for g in gs])
    z = torch.randn(3, 16, 64, requires_grad=True)
    for g in gs:
        g.train(training)
    want = torch.stack([g(z[m]) for m, g in enumerate(gs)])
    got = models.generator_forward(state, z, training=training)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for m, g in enumerate(gs):  # running statistics (moved only in training mode) and the counter
        ref = g.state_dict()
        for k, v in models.unstack_state(state, m).items():
            torch.testing.assert_close(v, ref[k], rtol=1e-6, atol=1e-6, msg=k)
    gw = torch.randn_like(want)
    g_want = torch.autograd.grad(want, z, gw)[0]
    g_got = torch.autograd.grad(got, z, gw)[0]
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-5)


def test_batched_discriminator_equals_reference_modules():
    _, ds = _refs(4)
    state = models.stack_states([d.state_dict() for d in ds])
    x = torch.randn(4, 10, 2) * 20
    want = torch.stack([d(x[m]).squeeze(-1) for m, d in enumerate(ds)])
    torch.testing.assert_close(torch.sigmoid(models.discriminator_logits(state, x)), want, rtol=1e-5, atol=1e-6)


def test_state_checks_name_the_problem():
    gs, ds = _refs(2)
    g = models.stack_states([x.state_dict() for x in gs])
    d = models.stack_states([x.state_dict() for x in ds])
    with pytest.raises(ValueError, match="d_state"):
        BatchedGAN(g, g)
    bad = dict(g)
    bad["module.0.weight"] = bad["module.0.weight"][:, :3]
    with pytest.raises(ValueError, match=r"module\.0\.weight"):
        BatchedGAN(bad, d)
    with pytest.raises(ValueError, match="holds 2 models but d_state 1"):
        BatchedGAN(g, models.select_models(d, [0]))


# -- training ------------------------------------------------------------------------------------------------------

def _reference_training(g, d, reals, zs_d, zs_g, params: TrainParams):
    """The original loop for one model: D step(s), G step, with torch.optim.Adam."""
    opt_g = torch.optim.Adam(g.parameters(), lr=params.lr, betas=params.betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=params.lr, betas=params.betas)
    g.train()
    di = 0
    for step in range(len(zs_g)):
        while di < params.disc_steps * step + 1:
            fake = g(zs_d[di])
            opt_d.zero_grad()
            loss = -torch.log(d(reals[di])).mean() - torch.log(1 - d(fake)).mean()
            loss.backward()
            opt_d.step()
            di += 1
        opt_g.zero_grad()
        loss = -torch.log(d(g(zs_g[step]))).mean()
        loss.backward()
        opt_g.step()


class _Recorder(ModelStreams):
    """ModelStreams that remember what they handed out (to replay them into the reference loop)."""

    def __init__(self, seeds):
        super().__init__(seeds)
        self.log = []

    def normal(self, *shape):
        out = super().normal(*shape)
        self.log.append(("z", out))
        return out

    def data(self, distributions, n):
        out = super().data(distributions, n)
        self.log.append(("x", out))
        return out


def test_batched_training_equals_per_model_reference_with_adam():
    params = TrainParams(batch_size=16)
    gs, ds = _refs(3, seed=1)
    gan = BatchedGAN(models.stack_states([g.state_dict() for g in gs]),
                     models.stack_states([d.state_dict() for d in ds]), params)
    streams = _Recorder([11, 12, 13])
    train(gan, streams, [toy.target()] * 3, 3)  # 3 G steps, 1 + 4 + 4 D steps
    reals = [v for t, v in streams.log if t == "x"]
    # the draws per G step are: (real, z) for each D step, then z for the G step
    seq, zd, zg = streams.log, [], []
    for i, (t, v) in enumerate(seq):
        if t == "z":
            (zd if i > 0 and seq[i - 1][0] == "x" else zg).append(v)
    assert len(reals) == len(zd) == 9 and len(zg) == 3
    states = gan.states()
    for m in range(3):
        _reference_training(gs[m], ds[m], [x[m] for x in reals], [z[m] for z in zd], [z[m] for z in zg], params)
        for part, ref in (("generator", gs[m]), ("discriminator", ds[m])):
            got = models.unstack_state(states[part], m)
            for k, v in ref.state_dict().items():
                # a Linear bias right before a BatchNorm has a zero gradient up to rounding noise, which Adam's
                # normalisation turns into steps of up to lr in either direction (in both implementations alike);
                # the BatchNorm's running mean follows that bias
                pre_bn = part == "generator" and (k.endswith("running_mean") or (
                    k.endswith(".bias") and int(k.split(".")[1]) % 3 == 0 and k != "module.15.bias"))
                atol = 2 * params.lr * 3 if pre_bn else 2e-6
                torch.testing.assert_close(got[k], v, rtol=1e-4, atol=atol, msg=lambda s: f"model {m} {part} {k}: {s}")


def test_stacked_adam_equals_torch_adam_per_model():
    torch.manual_seed(3)
    p = torch.randn(4, 5, 6, requires_grad=True)
    singles = [p[m].detach().clone().requires_grad_(True) for m in range(4)]
    opt = torch.optim.Adam([p], lr=2e-4, betas=(0.5, 0.999), fused=True)
    opts = [torch.optim.Adam([s], lr=2e-4, betas=(0.5, 0.999)) for s in singles]
    for _ in range(5):
        grad = torch.randn(4, 5, 6)
        p.grad = grad.clone()
        opt.step()
        for m, (s, o) in enumerate(zip(singles, opts)):
            s.grad = grad[m].clone()
            o.step()
    for m in range(4):
        torch.testing.assert_close(p[m].detach(), singles[m].detach(), rtol=1e-6, atol=1e-7)


def test_results_do_not_depend_on_the_models_trained_alongside():
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    g0, d0 = models.init_state("generator", gens), models.init_state("discriminator", gens)
    seeds = [101, 102, 103, 104]
    params = TrainParams(batch_size=32)
    full = BatchedGAN(g0, d0, params)
    train(full, ModelStreams(seeds), [toy.target()] * 4, 4)
    alone = BatchedGAN(models.select_models(g0, [2]), models.select_models(d0, [2]), params)
    train(alone, ModelStreams([seeds[2]]), [toy.target()], 4)
    pair = BatchedGAN(models.select_models(g0, [3, 2]), models.select_models(d0, [3, 2]), params)
    train(pair, ModelStreams([seeds[3], seeds[2]]), [toy.target()] * 2, 4)
    for part in ("generator", "discriminator"):
        want = models.unstack_state(full.states()[part], 2)
        for other, idx in ((alone, 0), (pair, 1)):
            got = models.unstack_state(other.states()[part], idx)
            for k in want:
                assert torch.equal(got[k], want[k]), (part, k)


def test_ema_blends_parameters_and_statistics():
    gens = [torch.Generator().manual_seed(0)]
    gan = BatchedGAN(models.init_state("generator", gens), models.init_state("discriminator", gens),
                     TrainParams(batch_size=8, ema=0.9))
    before = gan.states()["generator"]
    train(gan, ModelStreams([5]), [toy.source_1()], 1)
    st = gan.states()
    for k in ("module.0.weight", "module.1.running_mean"):
        torch.testing.assert_close(st["generator_ema"][k], 0.9 * before[k] + 0.1 * st["generator"][k])
    with pytest.raises(ValueError, match="ema"):
        TrainParams(ema=1.0)


# -- distributions -------------------------------------------------------------------------------------------------

def test_distributions():
    g = torch.Generator().manual_seed(0)
    c = toy.circle_centres()
    assert torch.allclose(c.norm(dim=1), torch.full((10,), 20.0))
    ring = toy.source_1().sample(4000, g)
    r = ring.norm(dim=1)
    assert abs(r.mean() - 20) < 0.3 and abs(r.std() - 4) < 0.3
    s2 = toy.source_2().sample(3000, g)
    angles = torch.rad2deg(torch.atan2(s2[:, 1], s2[:, 0])) % 360
    assert set(torch.round(angles / 36).long().unique().tolist()) == {4, 5, 6}  # 144, 180, 216 degrees
    t = toy.target().sample(5000, g)
    nearest = torch.cdist(t, c).argmin(1)
    assert nearest.bincount(minlength=10).min() > 400
    assert (t - c[nearest]).std() == pytest.approx(0.25, abs=0.02)
    with pytest.raises(ValueError, match="unknown distribution"):
        toy.get_distribution("source-3")


# -- W1 ------------------------------------------------------------------------------------------------------------

SOLVER_CASES = ["assignment", pytest.param("network-simplex", marks=pytest.mark.skipif(
    not w1_mod._have_pot(), reason="POT (pip install pot) is not installed"))]


@pytest.mark.parametrize("solver", SOLVER_CASES)
def test_w1_equals_scipy_assignment_and_bounds_hold(solver):
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(0)
    for n in (1, 7, 64):
        a, b = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) * 2 + 1
        cost = cdist(a, b)
        r, c = linear_sum_assignment(cost)
        assert w1_exact(a, b, solver) == pytest.approx(cost[r, c].mean(), abs=1e-12)
        assert w1_lower_bound(a, b, centres=np.zeros((1, 2))) <= w1_exact(a, b, solver) + 1e-12
    # a brute-force check over all permutations of a tiny set
    import itertools
    a, b = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    cost = cdist(a, b)
    brute = min(cost[range(5), list(p)].mean() for p in itertools.permutations(range(5)))
    assert w1_exact(torch.tensor(a), torch.tensor(b), solver) == pytest.approx(brute, abs=1e-12)
    # a translation by t moves every point by |t|, and that is optimal
    assert w1_exact(a, a + np.array([3.0, 4.0]), solver) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="same shape"):
        w1_exact(a, b[:4], solver)
    with pytest.raises(ValueError, match="fake holds NaN"):
        w1_exact(a, np.full((5, 2), np.nan), solver)


@pytest.mark.skipif(not w1_mod._have_pot(), reason="POT (pip install pot) is not installed")
def test_w1_solvers_agree_on_hard_cases():
    """The slow cases of the assignment solver (collapsed and few-mode samples against the 10-mode target, with
    duplicate points) give the same optimum with the network simplex."""
    g = torch.Generator().manual_seed(3)
    real = toy.target().sample(300, g).numpy()
    collapsed = np.repeat(np.array([[1.0, 2.0], [1.0, 2.0], [-3.0, 0.5]]), 100, axis=0)
    three = toy.get_distribution("source-2").sample(300, g).numpy()
    for fake in (collapsed, three, real[::-1].copy()):
        assert w1_exact(real, fake, "network-simplex") == pytest.approx(w1_exact(real, fake, "assignment"),
                                                                       rel=1e-12, abs=1e-12)
    assert w1_exact(real, real, "network-simplex") == 0.0


def test_w1_solver_choice_and_errors(monkeypatch):
    assert w1_mod.resolve_solver("assignment") == "assignment"
    with pytest.raises(ValueError, match="solver must be one of"):
        w1_exact(np.zeros((2, 2)), np.ones((2, 2)), "sinkhorn")
    with pytest.raises(ValueError, match="w1_solver must be one of"):
        PlaygroundConfig.quick(w1_solver="hungarian")
    monkeypatch.setattr(w1_mod, "_have_pot", lambda: False)
    assert w1_mod.resolve_solver("auto") == "assignment"
    assert W1Pool(0).solver == "assignment"
    with pytest.raises(ImportError, match="pip install pot"):
        w1_exact(np.zeros((2, 2)), np.ones((2, 2)), "network-simplex")


def test_w1_pool_in_processes_matches_inline():
    rng = np.random.default_rng(1)
    jobs = {i: (rng.normal(size=(50, 2)), rng.normal(size=(50, 2))) for i in range(3)}
    with W1Pool(0) as inline, W1Pool(1) as spawned:
        for k, (a, b) in jobs.items():
            inline.submit(k, a, b)
            spawned.submit(k, a, b)
        assert inline.results() == spawned.results()
        with pytest.raises(ValueError, match="already submitted"):
            inline.submit(0, *jobs[0])


def test_pruned_w1_minimum_equals_all_steps():
    g = torch.Generator().manual_seed(0)
    t = toy.target()
    evals = {}
    for s in (0, 1):
        for step, spread in ((0, 3.0), (5, 1.0), (10, 0.3), (15, 0.5)):
            real = t.sample(60, g)
            evals[("source-1", s, step)] = (real, t.sample(60, g) * (1 + 0.1 * spread) + spread * s)
    with W1Pool(0) as pool:
        pruned, bounds = w1_outcomes(evals, PlaygroundConfig.quick(), pool)
    with W1Pool(0) as pool:
        every, _ = w1_outcomes(evals, PlaygroundConfig.quick(w1_all_steps=True), pool)
    assert len(pruned) < len(every) == len(evals)
    for s in (0, 1):
        keys = [k for k in evals if k[1] == s]
        assert min(pruned[k] for k in keys if k in pruned) == min(every[k] for k in keys)
        for k in keys:
            assert bounds[k] <= every[k] + 1e-12 and (k not in pruned or pruned[k] == every[k])


# -- diagnostics ---------------------------------------------------------------------------------------------------

def test_recall_on_constructed_cases():
    g = torch.Generator().manual_seed(0)
    t = toy.target().sample(200, g)
    assert diagnostics.recall(t, t.clone(), k=5) == 1.0           # every target point is a sample: inside its ball
    far = t + 100.0
    assert diagnostics.recall(t, far, k=5) == 0.0
    half = toy.GaussianMixture(toy.circle_centres()[:5], 0.25).sample(400, g)   # covers modes 0-4 only
    r = diagnostics.recall(t, half, k=5)
    in_covered = (torch.cdist(t, toy.circle_centres()).argmin(1) < 5).double().mean().item()
    assert abs(r - in_covered) < 0.1
    # strict <: a target point exactly on a ball's boundary is outside. Samples at 0, 1, 2, ... on a line with k=1:
    # every radius is 1; a target point at distance exactly 1 from its nearest sample is not recalled.
    line = torch.stack([torch.arange(10.0), torch.zeros(10)], 1)
    on_edge = torch.tensor([[4.0, 1.0], [4.0, 0.5]])
    inside = torch.tensor([diagnostics.recall(on_edge[i:i + 1].repeat(2, 1), line, k=1) for i in range(2)])
    assert inside.tolist() == [0.0, 1.0]


def test_grad_similarity_signs():
    # A discriminator whose logits are the first coordinate: D grows along +x, so a G step (-grad L_G) moves samples
    # along +x.
    _, ds = _refs(1)
    state = models.stack_states([ds[0].state_dict()])
    with torch.no_grad():
        for k in state:
            state[k].zero_()
        state["module.0.weight"][0, 0, 0] = 1.0     # h = relu(x_1 + 100)
        state["module.0.bias"][0, 0] = 100.0
        for lin in (2, 4, 6):
            state[f"module.{lin}.weight"][0, 0, 0] = 1.0
        state["module.8.weight"][0, 0, 0] = 1.0
        state["module.8.bias"][0] = -100.0          # logits = x_1 (for x_1 > -100)
    centres = torch.tensor([[50.0, 0.0]])
    samples = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [-5.0, 0.0]]])
    s = diagnostics.grad_similarity(state, samples, centres)
    # G's update direction is +x, towards the centre: update-direction similarity +1, loss-gradient -1
    assert s.tolist() == pytest.approx([-1.0])
    samples_right = torch.tensor([[[60.0, 0.0], [70.0, 0.0]]])   # the centre is to the left now
    assert diagnostics.grad_similarity(state, samples_right, centres).tolist() == pytest.approx([1.0])


def test_pearson_and_bootstrap():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = -0.8 * x + 0.3 * rng.normal(size=60)
    from scipy import stats

    res = diagnostics.pearson(x, y)
    assert res["r"] == pytest.approx(stats.pearsonr(x, y).statistic) and res["n"] == 60
    ci = diagnostics.bootstrap_pearson(x, y, reps=500, seed=1)
    assert ci["low"] < res["r"] < ci["high"] < 0 and ci["valid"] == 500
    assert ci == diagnostics.bootstrap_pearson(x, y, reps=500, seed=1)
    assert math.isnan(diagnostics.pearson([1, 1, 1], [1, 2, 3])["r"])
    with pytest.raises(ValueError, match="reps"):
        diagnostics.bootstrap_pearson(x, y, reps=0)


def test_nice_ticks():
    from fastgan import plots as shared  # the playground draws with the shared Pillow charts

    assert plots.nice_ticks is shared.nice_ticks
    assert shared.nice_ticks(0.0, 1.0, 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert shared.nice_ticks(0.0, 10.0, 6) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert shared._fmt(0.25, 0.25) == "0.25" and shared._fmt(4.0, 2.0) == "4"
    t = shared.nice_ticks(-0.37, 0.91)
    assert t[0] <= -0.37 and t[-1] >= 0.91 and len(t) <= 9


# -- the study -----------------------------------------------------------------------------------------------------

TINY = dict(pretrain_steps=21, save_every=10, finetune_steps=11, eval_every=5, w1_points=64, metric_points=64,
            batch_size=16, bootstrap=50)


def test_study_is_deterministic_and_chunk_independent(tmp_path):
    cfg = PlaygroundConfig(**TINY)
    a = run_study(tmp_path / "a", cfg, seed=3, workers=0, plots=False, log=lambda s: None)
    b = run_study(tmp_path / "b", PlaygroundConfig(**TINY, chunk=2), seed=3, workers=0, plots=False,
                  log=lambda s: None)
    c = run_study(tmp_path / "c", cfg, seed=4, workers=0, plots=False, log=lambda s: None)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("timings", "protocol")}  # noqa: E731
    assert strip(a) == strip(b)
    assert a["checkpoints"] != c["checkpoints"]
    on_disk = json.loads((tmp_path / "a" / "results.json").read_text())
    assert strip(on_disk) == strip(a)
    assert len(a["checkpoints"]) == 6 and {r["step"] for r in a["checkpoints"]} == {0, 10, 20}
    for r in a["checkpoints"]:
        assert set(r["w1"]) == {"0", "5", "10"} and r["w1_min"] == min(v for v in r["w1"].values() if v is not None)
        assert r["grad_sim_update_direction"] == -r["grad_sim_loss_gradient"]
    ck = load_checkpoints(tmp_path / "a" / "checkpoints" / "source-2.pt")
    assert ck["steps"] == [0, 10, 20] and ck["generator"]["module.0.weight"].shape == (3, 64, 64)


def _check_outdir(out, n_checkpoints):
    res = json.loads((out / "results.json").read_text())
    assert res["format"] == "fastgan-playground/1" and len(res["checkpoints"]) == n_checkpoints
    assert set(res["correlations"]) == {"source-1", "source-2", "all"}
    assert res["environment"]["torch_threads"] == 1 and res["timings"]["total_s"] > 0
    from PIL import Image

    for name in ("recall_vs_w1.png", "gradsim_vs_w1.png", "samples.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300
    assert (out / "checkpoints" / "source-1.pt").is_file()
    return res


def test_cli_end_to_end_small(tmp_path, capsys):
    out = tmp_path / "small"
    args = ["playground", "--outdir", str(out), "--seed", "2", "--workers", "0", "--pretrain-steps", "31",
            "--save-every", "10", "--finetune-steps", "11", "--eval-every", "5", "--w1-points", "64",
            "--metric-points", "64", "--bootstrap", "50", "--w1-solver", "assignment"]
    torch.set_num_threads(2)  # the file's fixture restores its own value afterwards
    assert cli.main(args) == 0  # --threads 1 (default) holds for the study only: cli.main may run in-process
    assert torch.get_num_threads() == 2
    res = _check_outdir(out, 8)
    assert res["seed"] == 2 and res["protocol"]["w1_points"] == 64 and res["protocol"]["eval_steps"] == [0, 5, 10]
    assert res["protocol"]["w1_solver"] == "assignment" and "scipy" in res["conventions"]["w1"]
    assert "r(recall_vs_w1)" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_end_to_end_through_the_cli_is_deterministic(tmp_path, capsys):
    runs = []
    for name in ("q1", "q2"):
        out = tmp_path / name
        assert cli.main(["playground", "--quick", "--outdir", str(out), "--seed", "1", "--workers", "1"]) == 0
        runs.append(_check_outdir(out, 12))
    res = runs[0]
    assert res["seed"] == 1 and res["protocol"]["w1_points"] == 512
    assert res["protocol"]["checkpoint_steps"] == [0, 50, 100, 150, 200, 250]
    assert [{k: v for k, v in r.items() if k != "timings"} for r in runs[1:]] == \
        [{k: v for k, v in res.items() if k != "timings"}]
    assert "r(recall_vs_w1)" in capsys.readouterr().out


def test_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown family"):
        PlaygroundConfig(families=("source-3",))
    with pytest.raises(ValueError, match="w1_points"):
        PlaygroundConfig(w1_points=3)
    assert cli.main(["playground", "--outdir", str(tmp_path), "--families", "nope"]) == 2
    assert "unknown family" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        run_study(tmp_path / "file", PlaygroundConfig(**TINY), workers=0, log=lambda s: None)
    with pytest.raises(ValueError, match="not a playground checkpoint"):
        torch.save({"x": 1}, tmp_path / "bad.pt")
        load_checkpoints(tmp_path / "bad.pt")

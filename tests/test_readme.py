"""The README's Quick start: exactly two commands (install + demo, install + tests), and CI runs the second."""
from __future__ import annotations

import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _extractor():
    spec = importlib.util.spec_from_file_location("readme_command", ROOT / ".ci" / "readme_command.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_start_has_exactly_two_commands():
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quick start\n(.*?)^## ", text, re.S | re.M).group(1)
    assert len(re.findall(r"```", section)) == 4  # two fenced blocks
    mod = _extractor()
    demo, test = mod.command("demo", ROOT / "README.md"), mod.command("test", ROOT / "README.md")
    assert "pip install -e . --no-build-isolation --no-deps" in demo and "fastgan " in demo
    assert "pip install -e . --no-build-isolation --no-deps" in test and "pytest" in test and "tests" in test


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command.py test" in ci
    assert "check_cu.sh" in ci and '"$rc" -eq 5' in ci


def test_quick_start_installs_every_runtime_dependency():
    """The install uses --no-deps, so both commands must name every dependency in pyproject.toml themselves."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    mod = _extractor()
    names = [re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in project["dependencies"]]
    tests = [re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in project["optional-dependencies"]["test"]]
    for which, needed in (("demo", names), ("test", names + tests)):
        cmd = mod.command(which, ROOT / "README.md").lower()
        for name in needed:
            assert re.search(rf'(^|[\s"]){re.escape(name)}([\s"<>=]|$)', cmd), f"{which} command lacks {name}"


def test_readme_snippets_run_in_order(tmp_path, monkeypatch):
    """Every python block of the README, in order, in one namespace, in a scratch folder (the tour builds on
    itself: data, then a pretraining run, then transfer and MaGNET from its snapshot)."""
    import torch

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    threads = torch.get_num_threads()
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"README.md python block {i}", "exec"), scope)
    finally:
        torch.set_num_threads(threads)
    assert scope["fid"] > 0 and set(scope["pr"]) == {"precision", "recall", "density", "coverage"}
    assert abs(scope["fid_again"] - scope["fid"]) <= 1e-9 * scope["fid"]
    assert scope["res"].status == "finished" and scope["res_t"].status == "finished"
    assert [s.name for s in scope["ranking"]] == ["near", "far"]
    assert scope["log_sv"].shape == (32, 32) and len(set(scope["idx"].tolist())) == 8


def test_docs_ops_snippets_run():
    text = (ROOT / "docs" / "ops.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "docs/ops.md", "exec"), {})

"""A pruner from an out-of-tree package, found only through its `prunebench.pruners` entry point;
the worked example of docs/plugins.md is installed and run exactly as it is written there."""

import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import tomllib
import torch

ROOT = Path(__file__).resolve().parents[1]
README_SECTION = "# Adding a pruner from your own package"  # docs/plugins.md


def readme_example() -> tuple[str, str]:
    """(pyproject.toml, module source) of the worked plugin example in docs/plugins.md: the first toml and
    the first python code block of its section."""
    section = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert section.startswith(README_SECTION)
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    python = re.search(r"```python\n(.*?)```", section, re.S)
    assert toml and python, "docs/plugins.md lost its code blocks"
    return toml.group(1), python.group(1)

PLUGIN_SOURCE = '''
"""Layer-wise magnitude pruning: the same fraction of weights kept in every layer."""
import torch
from bench.api import Pruner, compressible_layers


class LayerwiseMagnitude(Pruner):
    name = "layerwise"

    def plan(self, model, ctx):
        weights = {n: l.weight.detach().abs() for n, l in compressible_layers(model).items()}

        def masks(keep):
            out = {}
            for name, w in weights.items():
                k = max(1, round(keep * w.numel()))
                threshold = torch.topk(w.flatten(), k).values.min()
                out[name] = w >= threshold
            return out

        return masks
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "prunebench-layerwise-demo"
version = "0.0.1"

[project.entry-points."prunebench.pruners"]
layerwise = "layerwise_demo:LayerwiseMagnitude"

[tool.setuptools]
py-modules = ["layerwise_demo"]
"""


def bench_executable() -> str:
    return str(Path(sys.executable).parent / "bench")


def install_plugin(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Install the layerwise demo plugin into its own site folder; returns (its module file, environment)."""
    site, env = install_package(tmp_path, PYPROJECT, {"layerwise_demo": PLUGIN_SOURCE})
    return site / "layerwise_demo.py", env


def install_package(tmp_path: Path, pyproject: str, modules: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """pip-install a package (pyproject + top-level modules) into its own site folder; returns
    (the site folder, an environment that finds it)."""
    package = tmp_path / "plugin"
    package.mkdir()
    (package / "pyproject.toml").write_text(textwrap.dedent(pyproject))
    for name, source in modules.items():
        (package / f"{name}.py").write_text(textwrap.dedent(source))
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(package)],
        check=True,
    )
    return site, {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_readme_plugin_with_options_and_reconstruct_runs_through_bench_run(tmp_path):
    pyproject, source = readme_example()
    modules = tomllib.loads(pyproject)["tool"]["setuptools"]["py-modules"]
    _, env = install_package(tmp_path, pyproject, {modules[0]: source})

    listing = subprocess.run([bench_executable(), "list"], env=env, capture_output=True, text=True, check=True)
    assert "refit" in listing.stdout.splitlines()[0]
    assert "  refit: valid options: refit: bool = True, ridge: float = 0.001" in listing.stdout.splitlines()

    out = tmp_path / "results"
    run = subprocess.run(
        [bench_executable(), "run", "--pruner", "refit:ridge=0.01", "--suite", "noise", "--severities", "1",
         "--ratios", "0.5,0.8", "--epochs", "3", "--retrain-epochs", "1", "--out", str(out), "--quiet"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    (result_file,) = out.glob("*.json")
    result = json.loads(result_file.read_text())
    assert result["config"]["pruners"] == ["refit:ridge=0.01"]
    assert result["provenance"]["packages"]["refit-pruner"] == "0.1.0"
    identity = result["provenance"]["pruners"]["refit:ridge=0.01"]
    assert (identity["name"], identity["options"], identity["display_name"]) == ("refit", {"ridge": 0.01},
                                                                                 "Magnitude + LS refit")
    ratios = [n["prune_ratio"] for n in result["networks"] if n["pruner"] == "refit:ridge=0.01"]
    assert [round(r, 2) for r in ratios] == [0.5, 0.8]
    assert "| refit:ridge=0.01 |" in run.stdout.replace("  ", " ")  # the leaderboard ranks it under its label

    bad = subprocess.run(
        [bench_executable(), "run", "--pruner", "wt,refit:ridge=-1", "--out", str(tmp_path / "bad")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("bench run: error: pruner 'refit': option ridge='-1': Input should be greater "
                                  "than or equal to 0; valid options: refit: bool = True, ridge: float = 0.001")


def load_readme_plugin() -> types.ModuleType:
    """The plugin module of docs/plugins.md, executed in this process."""
    module = types.ModuleType("refit_pruner")
    exec(compile(readme_example()[1], "docs/plugins.md (refit_pruner.py)", "exec"), module.__dict__)
    return module


@pytest.mark.slow
def test_readme_plugins_refit_reconstructs_the_unpruned_outputs_on_s(digits, digits_cnn):
    """The reconstruct hook runs after the size search: the output layer's outputs on S get closer to
    the unpruned ones than plain masking leaves them, only kept weights change, the ratio holds."""
    import copy

    from bench.pruning import PruneContext, compressible_layers, count_nonzero, last_layer_name, prune_to_ratio

    plugin = load_readme_plugin()
    ctx = PruneContext(calibration=digits.normalize(digits.val.images[:64]), labels=digits.val.labels[:64], seed=0,
                       last_layer=last_layer_name(digits_cnn))
    target = plugin.output_layer_io(digits_cnn, ctx)[1]
    parent_nonzero = count_nonzero(digits_cnn)
    errors, heads = {}, {}
    for refit in (False, True):
        model = copy.deepcopy(digits_cnn)
        outcome = prune_to_ratio(model, plugin.RefitMagnitude(refit=refit), 0.8, parent_nonzero, ctx)
        assert abs(outcome.prune_ratio - 0.8) < 0.01
        assert outcome.nonzero_params == count_nonzero(model)
        errors[refit] = float((plugin.output_layer_io(model, ctx)[1] - target).square().mean())
        heads[refit] = compressible_layers(model)[ctx.last_layer].weight.detach()
    assert errors[True] < 0.5 * errors[False]
    assert torch.equal(heads[True] != 0, heads[False] != 0)  # the same entries kept, other values
    assert not torch.equal(heads[True], heads[False])


@pytest.mark.slow
def test_unknown_pruner_is_a_clear_error(tmp_path):
    run = subprocess.run(
        [bench_executable(), "run", "--pruner", "wtt", "--out", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 2
    assert "no pruner named 'wtt' is installed. Did you mean wt?" in run.stderr


@pytest.mark.slow
def test_editing_a_plugin_recomputes_only_its_own_steps(tmp_path):
    source, env = install_plugin(tmp_path)
    out = tmp_path / "results"
    command = [bench_executable(), "run", "--pruner", "layerwise,wt", "--suite", "noise", "--severities", "1",
               "--ratios", "0.5,0.8", "--epochs", "2", "--retrain-epochs", "1", "--threads", "1", "--out", str(out),
               "--quiet"]

    def artifacts() -> dict[str, float]:
        return {p.name: p.stat().st_mtime_ns for p in (out / ".cache").rglob("*.json")}

    def identity() -> dict:
        (result_file,) = out.glob("*.json")
        return json.loads(result_file.read_text())["provenance"]["pruners"]

    subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=600)
    first, first_identity = artifacts(), identity()
    source.write_text(source.read_text().replace("k = max(1, round(keep * w.numel()))",
                                                 "k = max(1, int(keep * w.numel()))"))
    subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=600)
    second, second_identity = artifacts(), identity()

    new = set(second) - set(first)
    steps = {p.name: json.loads(p.read_text())["payload"] for p in (out / ".cache" / "steps").glob("*.json")}
    assert sorted(steps[name]["pruner"] for name in new if name in steps) == ["layerwise", "layerwise"]
    assert {steps[name]["pruner"] for name in new if name in steps} == {"layerwise"}
    assert all(second[name] == mtime for name, mtime in first.items()), "an unchanged artifact was rewritten"
    assert second_identity["wt"] == first_identity["wt"]
    assert second_identity["layerwise"]["source_sha256"] != first_identity["layerwise"]["source_sha256"]
    assert second_identity["layerwise"]["distribution"] == "prunebench-layerwise-demo"


def test_plugin_classes_are_checked_when_loaded(monkeypatch):
    from importlib.metadata import EntryPoint

    from bench.core import registry
    from bench.pruning import Pruner

    points = {
        "wt": EntryPoint(name="wt", value="pruners.ft:FilterThresholding", group=registry.PRUNER_GROUP),
        "schema": EntryPoint(name="schema", value="bench.results.schema:Strict", group=registry.PRUNER_GROUP),
        "ft": EntryPoint(name="ft", value="pruners.ft:FilterThresholding", group=registry.PRUNER_GROUP),
        "nameless": EntryPoint(name="nameless", value="bench.pruning:Pruner", group=registry.PRUNER_GROUP),
    }
    monkeypatch.setattr(registry, "_entry_points", lambda group: points)
    with pytest.raises(registry.RegistryError, match="names a class whose name is 'ft'"):
        registry.load_class(registry.PRUNER_GROUP, "wt", Pruner)
    with pytest.raises(registry.RegistryError, match="is not a subclass of bench.pruning.pruner.Pruner"):
        registry.load_class(registry.PRUNER_GROUP, "schema", Pruner)
    with pytest.raises(registry.RegistryError, match="names a class that declares no name: set name = 'nameless'"):
        registry.load_class(registry.PRUNER_GROUP, "nameless", Pruner)
    assert registry.load_class(registry.PRUNER_GROUP, "ft", Pruner).name == "ft"

"""A pruner from an out-of-tree package, found only through its `prunebench.pruners` entry point."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
    """Install the demo plugin into its own site folder; returns (its module file, environment)."""
    package = tmp_path / "plugin"
    package.mkdir()
    (package / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (package / "layerwise_demo.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(package)],
        check=True,
    )
    return site / "layerwise_demo.py", {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}


def test_installed_plugin_runs_through_bench_run(tmp_path):
    _, env = install_plugin(tmp_path)

    listing = subprocess.run([bench_executable(), "list"], env=env, capture_output=True, text=True, check=True)
    assert "layerwise" in listing.stdout.splitlines()[0]

    out = tmp_path / "results"
    run = subprocess.run(
        [bench_executable(), "run", "--pruner", "layerwise", "--suite", "noise", "--ratios", "0.5,0.8",
         "--epochs", "3", "--retrain-epochs", "1", "--out", str(out), "--quiet"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    (result_file,) = out.glob("*.json")
    result = json.loads(result_file.read_text())
    assert result["config"]["pruners"] == ["layerwise"]
    assert result["provenance"]["packages"]["prunebench-layerwise-demo"] == "0.0.1"
    ratios = [n["prune_ratio"] for n in result["networks"] if n["pruner"] == "layerwise"]
    assert [round(r, 2) for r in ratios] == [0.5, 0.8]
    assert "| 1      | layerwise" in run.stdout  # the leaderboard printed at the end ranks it


def test_unknown_pruner_is_a_clear_error(tmp_path):
    run = subprocess.run(
        [bench_executable(), "run", "--pruner", "wtt", "--out", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 2
    assert "no pruner named 'wtt' is installed. Did you mean wt?" in run.stderr


def test_editing_a_plugin_recomputes_only_its_own_steps(tmp_path):
    source, env = install_plugin(tmp_path)
    out = tmp_path / "results"
    command = [bench_executable(), "run", "--pruner", "layerwise,wt", "--suite", "noise", "--ratios", "0.5,0.8",
               "--epochs", "2", "--retrain-epochs", "1", "--threads", "1", "--out", str(out), "--quiet"]

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

    import pytest

    from bench import registry
    from bench.pruning import Pruner

    points = {
        "wt": EntryPoint(name="wt", value="pruners.ft:FilterThresholding", group=registry.PRUNER_GROUP),
        "schema": EntryPoint(name="schema", value="bench.schema:Strict", group=registry.PRUNER_GROUP),
        "ft": EntryPoint(name="ft", value="pruners.ft:FilterThresholding", group=registry.PRUNER_GROUP),
    }
    monkeypatch.setattr(registry, "_entry_points", lambda group: points)
    with pytest.raises(registry.RegistryError, match="names a class whose name is 'ft'"):
        registry.load_class(registry.PRUNER_GROUP, "wt", Pruner)
    with pytest.raises(registry.RegistryError, match="is not a subclass of bench.pruning.Pruner"):
        registry.load_class(registry.PRUNER_GROUP, "schema", Pruner)
    assert registry.load_class(registry.PRUNER_GROUP, "ft", Pruner).name == "ft"

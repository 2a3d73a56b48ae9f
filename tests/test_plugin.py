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
from bench.pruning import Pruner, compressible_layers


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


def test_installed_plugin_runs_through_bench_run(tmp_path):
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
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}

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

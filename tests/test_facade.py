"""The Python entry points (bench.facade): the README's bring-your-own script, in-memory evaluation
that writes nothing unless asked, the data to train with, and the model zoo of committed networks."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune

import bench
from bench.facade import _plain_state
from bench.models import create_model
from bench.pipeline.training import correct_predictions
from bench.results import find_result_files, load_result
from bench.results.schema import unpack_hits

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = [p for p in find_result_files(ROOT / "leaderboard" / "results") if p.name.startswith("digits-")]


def readme_script() -> str:
    text = (ROOT / "docs" / "your-networks.md").read_text()
    block = re.search(r"<!-- bring-your-own:start -->\n```python\n(.*?)```\n<!-- bring-your-own:end -->", text, re.S)
    assert block, "docs/your-networks.md's bring-your-own script is missing its markers"
    return block.group(1)


@pytest.mark.slow
def test_the_readmes_bring_your_own_script_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(readme_script(), "docs/your-networks.md", "exec"), namespace)
    result = namespace["result"]
    assert [(n.pruner, n.step) for n in result.networks] == [("parent", 0), ("global-l1", 1), ("global-l1", 2)]
    assert [round(n.prune_ratio, 2) for n in result.networks[1:]] == [0.5, 0.8]  # measured from the weights
    assert result.config.protocol == "external" and len(result.distributions) > 1
    assert re.fullmatch(r"nominal P \d\.\d\d, robust P mean \d\.\d\d\n", capsys.readouterr().out)
    assert list(tmp_path.iterdir()) == []  # nothing written unless asked


def test_a_network_pruned_in_place_is_evaluated_as_prune_remove_leaves_it():
    model = create_model("digits_cnn", num_classes=10)
    prune.l1_unstructured(model.fc, "weight", amount=0.6)
    prune.random_unstructured(model.features[0][0], "weight", amount=0.3)
    folded = _plain_state(model)
    removed = copy.deepcopy(create_model("digits_cnn", num_classes=10))
    removed.load_state_dict(folded)
    for module, name in ((model.fc, "weight"), (model.features[0][0], "weight")):
        prune.remove(module, name)
    assert folded.keys() == model.state_dict().keys()
    assert all(torch.equal(folded[k], v) for k, v in model.state_dict().items())


def test_evaluate_writes_its_result_only_where_asked_and_refuses_no_networks(tmp_path):
    data = bench.load_dataset("digits", seed=0)
    torch.manual_seed(0)
    parent = create_model("digits_cnn", num_classes=data.num_classes)
    with pytest.raises(ValueError, match="at least one pruned network"):
        bench.evaluate(parent, {}, dataset="digits")
    half = copy.deepcopy(parent)
    prune.l1_unstructured(half.fc, "weight", amount=0.5)
    result = bench.evaluate(parent, {"half": half}, dataset="digits", suites=["noise"], severities=(1,),
                            corruptions=("gaussian_noise",), out=tmp_path / "out", progress=False)
    (written,) = find_result_files(tmp_path / "out")
    assert load_result(written).integrity == result.integrity
    assert (tmp_path / "out" / written.name.replace(".json", ".networks")).is_dir()
    assert bench.potentials(result).keys() == {"half"}


@pytest.mark.parametrize("pruner, step", [("parent", None), ("wt", None), ("pfp", 2)])
def test_load_network_gives_the_committed_networks_with_their_recorded_accuracy(pruner, step):
    path = COMMITTED[0]
    result = load_result(path)
    network = bench.load_network(path, pruner, step)
    recorded = next(n for n in sorted(result.networks, key=lambda n: -n.step) if n.pruner == pruner
                    and (step is None or n.step == step))
    data = bench.load_dataset(result.config.dataset, result.config.seed)
    hits = correct_predictions(network, data, data.test).numpy()
    name = result.nominal.name
    assert (hits == unpack_hits(recorded.hits[name], hits.size)).all()  # every recorded hit, not only the mean


def test_load_network_names_what_exists():
    with pytest.raises(ValueError, match=r"no network of pruner 'nope' \(found: .*wt"):
        bench.load_network(COMMITTED[0], "nope")
    with pytest.raises(ValueError, match=r"pruner 'wt' has steps \[1, 2"):
        bench.load_network(COMMITTED[0], "wt", 99)


def test_importing_bench_stays_light():
    code = "import sys, bench; print('torch' in sys.modules, callable(bench.evaluate) and 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]  # torch comes when the façade first runs, not with `import bench`

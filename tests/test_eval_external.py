"""`bench eval`: a parent and pruned networks brought by the user, evaluated like a run's own.

From a tiny real run, the parent and a WT network are handed back as plain state dicts (safetensors
and torch.save) and an FT network as the physically compressed torch.export archive of `bench
compress --export-dir`; `bench eval` must reproduce the run's per-example hits on every test set.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bench.cli import main
from bench.results import check_consistency, load_result, networks_folder
from bench.results.checkpoints import read_state
from bench.results.metrics import derive
from bench.results.schema import EXTERNAL, RunResult, unpack_hits
from leaderboard.build import build_leaderboard

RUN = ["run", "--dataset", "digits", "--suite", "noise", "--pruner", "wt,ft", "--ratios", "0.5", "--epochs", "1",
       "--retrain-epochs", "1", "--calibration-size", "16", "--workers", "1", "--quiet"]


def hits(result: RunResult, pruner: str) -> dict[str, np.ndarray]:
    net = next(n for n in result.networks if n.pruner == pruner)
    sizes = {d.name: d.n_examples for d in result.distributions}
    return {name: unpack_hits(packed, sizes[name]) for name, packed in net.hits.items()}


@pytest.fixture(scope="module")
def brought(tmp_path_factory) -> tuple[Path, RunResult, dict[str, Path]]:
    """A finished run and its networks as a user would bring them: parent.safetensors, wt.pt, ft-1.pt2."""
    root = tmp_path_factory.mktemp("eval")
    assert main([*RUN, "--out", str(root / "run")]) == 0
    (run_path,) = (root / "run").glob("*.json")
    saved = networks_folder(run_path)
    files = {"parent": root / "parent.safetensors", "wt": root / "wt.pt"}
    save_file(read_state(saved / "parent-0.safetensors"), str(files["parent"]))
    torch.save(read_state(saved / "wt-1.safetensors"), files["wt"])
    assert main(["compress", str(run_path), "--pruner", "ft", "--repeats", "1", "--warmup", "0", "--batch", "8",
                 "--export-dir", str(root / "exported")]) == 0
    files["ft"] = root / "exported" / "ft-1.pt2"
    return root, load_result(run_path), files


@pytest.fixture(scope="module")
def evaluated(brought) -> tuple[Path, RunResult]:
    root, _, files = brought
    out = root / "board" / "eval"
    assert main(["eval", "--dataset", "digits", "--model", "digits_cnn", "--parent", str(files["parent"]),
                 "--network", f"ft={files['ft']}", "--network", f"wt={files['wt']}", "--suite", "noise",
                 "--workers", "1", "--quiet", "--out", str(out)]) == 0
    (path,) = out.glob("*.json")
    return path, load_result(path)


@pytest.mark.slow
def test_eval_reproduces_the_runs_hits(brought, evaluated):
    _, run, files = brought
    path, result = evaluated
    assert result.config.protocol == EXTERNAL and result.config.target_ratios == ()
    assert [(n.pruner, n.step) for n in result.networks] == [("parent", 0), ("ft", 1), ("wt", 1)]
    assert [d.name for d in result.distributions] == [d.name for d in run.distributions]
    assert result.provenance.distribution_checksums == run.provenance.distribution_checksums
    # the parent and the masked network: the same computation as the run's, so every hit is equal;
    # the compressed FT network differs from its masked form by float rounding only (logits within
    # 1e-5, checked by bench compress), which flips no prediction on these test sets
    for pruner in ("parent", "wt", "ft"):
        expected, got = hits(run, pruner), hits(result, pruner)
        assert expected.keys() == got.keys()
        for name in expected:
            assert np.array_equal(expected[name], got[name]), (pruner, name)

    # ratios measured from the networks: the masked one exactly as the run measured it; the exported
    # one from its parameter count: compression drops nonzero entries that nothing reads and keeps
    # zeros not worth a gather, so it is close to, not equal to, the masked network's ratio
    run_ratio = {n.pruner: n.prune_ratio for n in run.networks}
    ratio = {n.pruner: n.prune_ratio for n in result.networks}
    assert ratio["wt"] == run_ratio["wt"]
    assert abs(ratio["ft"] - run_ratio["ft"]) < 0.02
    assert result.parent.nonzero_params == run.parent.nonzero_params

    # the config records each file's sha256, never its path
    recorded = {n.method: n.sha256 for n in result.config.external_networks or ()}
    assert recorded["wt"] != recorded["ft"] and len(recorded["wt"]) == 64
    assert str(files["wt"].parent) not in path.read_text()

    # prune potential and excess error, from the cells as for any run
    metrics = {m.pruner: m for m in derive(result.distributions, result.networks, result.config.delta).pruners}
    run_metrics = {m.pruner: m for m in derive(run.distributions, run.networks, run.config.delta).pruners}
    assert metrics["wt"].potential_by_distribution == run_metrics["wt"].potential_by_distribution
    assert metrics["wt"].delta_excess_error == run_metrics["wt"].delta_excess_error


@pytest.mark.slow
def test_the_eval_is_ranked_in_its_own_table_and_verifies(brought, evaluated, capsys):
    root, run, _ = brought
    path, result = evaluated
    board = build_leaderboard(root)  # the run and the evaluation of its networks: two protocols, two tables
    protocols = [line for line in board.splitlines() if line.startswith("Protocol `")]
    assert len(protocols) == 2
    external = next(line for line in protocols if result.config.protocol_hash() in line)
    assert "external networks" in external and "ratios" not in external and "epochs" not in external

    assert main(["verify", str(path), "--quiet"]) == 0
    assert "verified: 3 networks" in capsys.readouterr().out
    report = json.loads(path.with_name(path.name.removesuffix(".json") + ".verify.json").read_text())
    assert report["passed"] and report["networks_checked"] == 3


@pytest.mark.slow
def test_an_external_result_must_agree_with_itself(evaluated):
    _, result = evaluated
    stored = result.config.model_dump(mode="json")
    assert check_consistency(result, stored) is None
    parent, ft, wt = result.networks
    renumbered = result.model_copy(update={"networks": [parent, ft, wt.model_copy(update={"step": 2})]})
    assert "method 'wt': steps [2], expected 1 to 1" in str(check_consistency(renumbered, stored))
    denser = result.model_copy(update={"networks": [parent, ft, wt.model_copy(update={"nonzero_params": 9})]})
    assert "disagrees with its 9 parameters" in str(check_consistency(denser, stored))


@pytest.mark.slow
def test_a_network_of_another_model_is_a_one_line_error(brought, tmp_path, capsys):
    _, _, files = brought
    wrong = tmp_path / "wrong.pt"
    state = torch.load(files["wt"], weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("head")} | {"extra": torch.zeros(1)}, wrong)
    code = main(["eval", "--parent", str(files["parent"]), "--network", f"m={wrong}", "--suite", "noise",
                 "--workers", "1", "--quiet", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wrong.pt: does not fit the model" in err[0]
    assert main(["eval", "--parent", str(files["parent"]), "--network", "no-equals-sign", "--quiet"]) == 2
    assert "use METHOD=PATH" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_refuses_an_archive_that_brings_code_and_runs_none(brought, tmp_path, monkeypatch, capsys):
    _, _, files = brought
    hostile = Path(__file__).parent / "fixtures" / "hostile" / "archives" / "pickled-weight.pt2"
    monkeypatch.chdir(tmp_path)
    code = main(["eval", "--dataset", "digits", "--model", "digits_cnn", "--parent", str(files["parent"]),
                 "--network", f"ft={hostile}", "--suite", "noise", "--workers", "1", "--quiet",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "is stored pickled" in err, err
    assert not list(tmp_path.glob("PWNED-*"))


@pytest.mark.slow
def test_eval_refuses_a_network_with_non_finite_weights_or_statistics(brought, tmp_path, capsys):
    _, _, files = brought
    for name in ("fc.weight", "features.0.1.running_var"):  # a weight, and a BatchNorm statistic
        state = torch.load(files["wt"])
        state[name] = state[name].clone()
        state[name].view(-1)[0] = float("nan")
        broken = tmp_path / f"broken-{name}.pt"
        torch.save(state, broken)
        code = main(["eval", "--dataset", "digits", "--model", "digits_cnn", "--parent", str(files["parent"]),
                     "--network", f"wt={broken}", "--suite", "noise", "--workers", "1", "--quiet",
                     "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1, err
        assert "non-finite weights (NaN or inf) in " + name in err


@pytest.mark.slow
def test_analyze_works_on_an_eval_result_and_says_in_one_line_when_its_cache_is_gone(evaluated, tmp_path, capsys):
    path, result = evaluated
    assert main(["analyze", "similarity", str(path), "--images", "8", "--draws", "2",
                 "--json", str(tmp_path / "similarity.json")]) == 0
    report = json.loads((tmp_path / "similarity.json").read_text())
    assert any(name.startswith("ft") for name in report["networks"]) and any(
        name.startswith("wt") for name in report["networks"]), report["networks"]
    capsys.readouterr()
    moved = tmp_path / "elsewhere.json"
    moved.write_bytes(path.read_bytes())  # a copy without the job cache its networks live in
    code = main(["analyze", "similarity", str(moved), "--images", "8", "--draws", "2",
                 "--json", str(tmp_path / "none.json")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err

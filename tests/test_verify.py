"""`bench verify`: saved networks are re-evaluated and every per-example hit compared; forged
numbers, swapped files and networks denser than claimed fail, naming what disagrees."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.data.recipes import DIGITS_TRAIN
from bench.pipeline.runner import run
from bench.pipeline.verify import verify_result
from bench.results import load_result, networks_folder, read_report, report_path, result_document, seal
from bench.results.schema import RunConfig, pack_hits, unpack_hits
from leaderboard import build_leaderboard


def small_config() -> RunConfig:
    recipe = DIGITS_TRAIN.model_copy(update={"epochs": 3})
    return RunConfig(
        dataset="digits", model="digits_cnn", pruners=("wt", "ft"), suites=("noise",), target_ratios=(0.5, 0.8),
        train=recipe, retrain=recipe.model_copy(update={"epochs": 1}), seed=0, calibration_size=64,
        corruptions=("gaussian_noise",),
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return run(small_config(), tmp_path_factory.mktemp("run"), progress=False)


@pytest.fixture
def result_copy(finished, tmp_path) -> Path:
    """A private copy of the finished run's result file and networks folder."""
    target = tmp_path / finished.name
    shutil.copy(finished, target)
    shutil.copytree(networks_folder(finished), networks_folder(target))
    return target


def rewrite(path: Path, change) -> None:
    """Edit a result file and recompute its integrity digest exactly as bench.results does."""
    raw = json.loads(path.read_text())
    change(raw)
    raw.pop("integrity")
    path.write_text(json.dumps(result_document(seal(load_result_from(raw)))))


def load_result_from(raw: dict):
    from bench.results.schema import RunResult

    return RunResult.model_validate(raw)


@pytest.mark.slow
def test_a_genuine_run_verifies_and_a_step_and_the_parent_reproduce_bitwise(finished, capsys):
    result = load_result(finished)
    assert all(n.file is not None and (networks_folder(finished) / n.file.name).is_file() for n in result.networks)
    assert main(["verify", str(finished), "--reproduce", "1", "--reproduce-parent", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"{finished.name}: verified: 5 networks") for line in out)
    assert f"{finished.name}: reproduced parent: bitwise identical" in out
    assert sum(line.endswith(": bitwise identical") for line in out) == 2  # the parent and one step
    report = read_report(finished)
    assert report is not None and report.passed and report.integrity == result.integrity
    assert report.hits_compared == 5 * sum(d.n_examples for d in result.distributions)


@pytest.mark.slow
def test_a_parent_recipe_it_was_not_trained_by_fails_reproduce_parent(result_copy, capsys):
    """--reproduce-parent re-trains the parent from its seed with the recorded recipe (the genuine
    file's parent reproduces bitwise: test_a_genuine_run_verifies_and_...)."""
    def claim_another_recipe(raw: dict) -> None:  # sealed anew, config hash too: only the recipe lies
        raw["config"]["train"]["epochs"] = 4
        raw["provenance"]["config_hash"] = RunConfig.model_validate(raw["config"]).config_hash()

    rewrite(result_copy, claim_another_recipe)
    assert main(["verify", str(result_copy), "--reproduce-parent", "--sample", "1", "--no-report", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "parent (reproduced): not bitwise identical to the saved network on the recording platform" in out

    def claim_another_cpu(raw: dict) -> None:  # the same platform string and threads, another CPU code path
        raw["provenance"]["device_name"] = "Another CPU (ATen AVX2)"

    rewrite(result_copy, claim_another_cpu)
    main(["verify", str(result_copy), "--reproduce-parent", "--sample", "1", "--no-report", "--quiet"])
    out = capsys.readouterr().out
    assert "recording platform" not in out  # judged by the cross-platform tolerance instead
    assert "parent: within tolerance (another platform" in out or "off-platform reproduction outside tolerance" in out

    def claim_a_checkpoint(raw: dict) -> None:
        raw["config"]["parent_checkpoint_sha256"] = "0" * 64
        raw["provenance"]["config_hash"] = RunConfig.model_validate(raw["config"]).config_hash()

    rewrite(result_copy, claim_a_checkpoint)
    assert main(["verify", str(result_copy), "--reproduce-parent", "--no-report", "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--reproduce-parent: its parent started from a user's checkpoint" in line


@pytest.mark.slow
def test_a_folder_verifies_every_result_file_in_it_without_writing_reports(result_copy, capsys):
    assert main(["verify", str(result_copy.parent), "--no-report", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{result_copy.name}: verified: 5 networks" in out
    assert read_report(result_copy) is None
    rewrite(result_copy, flip_first_hit)
    assert main(["verify", str(result_copy.parent), "--no-report", "--quiet"]) == 1
    assert read_report(result_copy) is None


@pytest.mark.slow
def test_workers_verify_files_side_by_side_with_the_same_verdicts(result_copy, capsys):
    twin = result_copy.with_name("twin-" + result_copy.name)
    shutil.copy(result_copy, twin)
    shutil.copytree(networks_folder(result_copy), networks_folder(twin))
    rewrite(twin, flip_first_hit)
    assert main(["verify", str(result_copy.parent), "--no-report", "--quiet", "--workers", "2"]) == 1
    lines = capsys.readouterr().out.splitlines()
    verdicts = [line for line in lines if ": verified: " in line or ": FAILED " in line]
    assert verdicts[0].startswith(f"{result_copy.name}: verified: 5 networks")  # in the order of the files
    assert verdicts[1].startswith(f"{twin.name}: FAILED (1 disagreements)")


def flip_first_hit(raw: dict) -> None:
    """Forge one per-example hit of the first pruned network (accuracy recomputed to match)."""
    net, dist = raw["networks"][1], raw["distributions"][0]
    hits = unpack_hits(net["hits"][dist["name"]], dist["n_examples"])
    hits[0] = not hits[0]
    net["hits"][dist["name"]], net["accuracy"][dist["name"]] = pack_hits(hits), float(hits.mean())


@pytest.mark.slow
def test_a_flipped_hit_with_a_recomputed_digest_passes_validate_but_fails_verify(result_copy, capsys):
    name = "noise/gaussian_noise/0.04"

    def flip(raw):
        net = next(n for n in raw["networks"] if (n["pruner"], n["step"]) == ("wt", 2))
        count = next(d["n_examples"] for d in raw["distributions"] if d["name"] == name)
        hits = unpack_hits(net["hits"][name], count)
        hits[7] = not hits[7]
        net["hits"][name], net["accuracy"][name] = pack_hits(hits), float(hits.mean())

    rewrite(result_copy, flip)
    assert main(["validate", str(result_copy)]) == 0
    assert main(["verify", str(result_copy), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"wt step 2 on {name}: 1 of 539 per-example hits differ (examples 7)" in out
    assert "FAILED (1 disagreements)" in out
    assert not read_report(result_copy).passed


@pytest.mark.slow
def test_a_swapped_network_file_fails_on_its_sha256(result_copy):
    folder = networks_folder(result_copy)
    shutil.copy(folder / "wt-2.safetensors", folder / "wt-1.safetensors")
    check = verify_result(result_copy, progress=False)
    assert not check.passed
    assert any(line.startswith("wt step 1: ") and "sha256 differs" in line for line in check.disagreements)


@pytest.mark.slow
def test_a_network_denser_than_its_claimed_ratio_fails(result_copy):
    """The parent's (dense) file passed off as step 2, with its file record updated to match."""
    folder = networks_folder(result_copy)
    shutil.copy(folder / "parent-0.safetensors", folder / "ft-2.safetensors")

    def claim_dense_file(raw):
        parent = next(n for n in raw["networks"] if n["pruner"] == "parent")
        step = next(n for n in raw["networks"] if (n["pruner"], n["step"]) == ("ft", 2))
        step["file"] = {**parent["file"], "name": "ft-2.safetensors"}

    claimed = next(n for n in load_result(result_copy).networks if (n.pruner, n.step) == ("ft", 2)).prune_ratio
    rewrite(result_copy, claim_dense_file)
    check = verify_result(result_copy, progress=False)
    assert any(line.startswith("ft step 2: ") and f"prune ratio 0.00 % measured, {100 * claimed:.2f} %" in line
               for line in check.disagreements), check.disagreements


@pytest.mark.slow
def test_a_missing_networks_folder_is_named(result_copy, tmp_path):
    shutil.rmtree(networks_folder(result_copy))
    check = verify_result(result_copy, progress=False, write_report=False)
    assert any("parent-0.safetensors: cannot read" in line for line in check.disagreements)
    assert not report_path(result_copy).exists()


@pytest.mark.slow
def test_bench_verify_without_the_networks_folder_is_one_line_naming_the_fix(result_copy, capsys):
    """Missing data, not "FAILED (2 disagreements)": exit 2, one line naming the folder and --networks."""
    shutil.rmtree(networks_folder(result_copy))
    assert main(["verify", str(result_copy), "--no-report", "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bench verify: error: ") and f"no networks folder {networks_folder(result_copy)}" in line
    assert "--networks FOLDER" in line


@pytest.mark.slow
def test_the_leaderboard_marks_verified_rows_and_can_show_only_them(result_copy, tmp_path):
    board = build_leaderboard(result_copy.parent, breakdown=False)
    assert "| verified" in board and "0/1" in board  # no report yet
    assert "No result files found" in build_leaderboard(result_copy.parent, verified_only=True)
    verify_result(result_copy, progress=False)
    assert "1/1" in build_leaderboard(result_copy.parent, breakdown=False)
    assert "| wt " in build_leaderboard(result_copy.parent, verified_only=True)

    rewrite(result_copy, lambda raw: raw["provenance"].update({"wall_time_s": 1.0}))  # other content: stale report
    assert "0/1" in build_leaderboard(result_copy.parent, breakdown=False)


@pytest.mark.slow
def test_verify_uses_another_networks_folder(result_copy, tmp_path):
    elsewhere = tmp_path / "submitted"
    shutil.move(networks_folder(result_copy), elsewhere)
    assert verify_result(result_copy, networks_dir=elsewhere, progress=False).passed


@pytest.mark.slow
def test_per_example_hits_of_each_network_match_a_fresh_evaluation(finished):
    """What verify compares is what run recorded: the parent's clean hits are reproducible."""
    from bench.data import load_digits
    from bench.pipeline.jobs import job_environment, new_model
    from bench.pipeline.training import correct_predictions
    from bench.results.checkpoints import load_state

    result = load_result(finished)
    data = load_digits(0)
    with job_environment(result.config):
        model = load_state(new_model(result.config, data), networks_folder(finished) / "parent-0.safetensors")
        hits = correct_predictions(model.eval(), data, data.test).numpy()
    assert np.array_equal(hits, unpack_hits(result.parent.hits["digits/clean"], len(hits)))


@pytest.mark.slow
def test_a_sample_compares_every_hit_of_k_drawn_pairs_and_finds_a_flip_it_draws(result_copy, capsys):
    result = load_result(result_copy)
    pairs = len(result.networks) * len(result.distributions)
    check = verify_result(result_copy, progress=False, write_report=True, sample=3, seed=1)
    assert check.passed and check.networks_checked == len(result.networks)
    assert check.hits_compared == 3 * 539 and 3 < pairs
    report = read_report(result_copy)
    assert report.sample == 3 and report.passed
    # a sample does not mark it verified; the board counts it apart, for exactly this content
    assert "| 0/1 + 1 sampled |" in build_leaderboard(result_copy.parent, breakdown=False)

    name = "noise/gaussian_noise/0.04"

    def flip(raw):  # one flipped hit of the parent on one test set: found by every sample holding that pair
        net = next(n for n in raw["networks"] if n["pruner"] == "parent")
        hits = unpack_hits(net["hits"][name], 539)
        hits[3] = not hits[3]
        net["hits"][name], net["accuracy"][name] = pack_hits(hits), float(hits.mean())

    rewrite(result_copy, flip)
    assert "+ 1 sampled" not in build_leaderboard(result_copy.parent, breakdown=False)  # the report is of other content
    assert main(["verify", str(result_copy), "--sample", str(pairs), "--quiet", "--no-report"]) == 1
    assert f"parent on {name}: 1 of 539 per-example hits differ (examples 3)" in capsys.readouterr().out
    missed = [seed for seed in range(20) if verify_result(result_copy, progress=False, write_report=False,
                                                          sample=1, seed=seed).passed]
    assert missed  # a sample of one pair rarely holds it: sampling trades coverage for time


@pytest.mark.slow
def test_relabelled_test_sets_fail_verify_naming_the_claim(result_copy, capsys):
    """The red team's relabelling: severities reversed and gaussian renamed uniform, hits untouched
    (so every hit still agrees); the labels themselves are rebuilt from the suite and compared."""
    def relabel(raw: dict) -> None:
        shifted = [d for d in raw["distributions"] if d["corruption"] is not None]
        severities = [d["severity"] for d in shifted]
        for dist, severity in zip(shifted, reversed(severities)):
            dist["severity"] = severity
            dist["corruption"] = "uniform_noise"

    rewrite(result_copy, relabel)
    assert main(["verify", str(result_copy), "--no-report", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "recorded as suite 'noise', corruption 'uniform_noise'" in out
    assert "rebuilt as suite 'noise', corruption 'gaussian_noise'" in out


@pytest.mark.slow
def test_a_report_counts_only_for_the_file_and_the_networks_it_was_written_for(result_copy):
    """The red team's hand-written `.verify.json`: a passing report copied beside a file whose
    networks are gone (or replaced) does not make the board mark it verified."""
    assert verify_result(result_copy, progress=False, write_report=True).passed
    assert "1/1" in build_leaderboard(result_copy.parent, breakdown=False)
    report = report_path(result_copy).read_text()

    folder = networks_folder(result_copy)
    moved = folder.with_name("elsewhere")
    folder.rename(moved)
    assert "0/1" in build_leaderboard(result_copy.parent, breakdown=False)  # the same report, no networks
    moved.rename(folder)
    assert "1/1" in build_leaderboard(result_copy.parent, breakdown=False)

    original = (folder / "wt-1.safetensors").read_bytes()
    (folder / "wt-1.safetensors").write_bytes((folder / "wt-2.safetensors").read_bytes())
    assert "0/1" in build_leaderboard(result_copy.parent, breakdown=False)  # a network swapped after verify
    (folder / "wt-1.safetensors").write_bytes(original)
    assert "1/1" in build_leaderboard(result_copy.parent, breakdown=False)

    forged = json.loads(report)
    forged["hits_compared"] = 1
    report_path(result_copy).write_text(json.dumps(forged))
    assert "0/1" in build_leaderboard(result_copy.parent, breakdown=False)


@pytest.mark.slow
def test_a_sample_rebuilds_only_the_test_sets_it_draws(result_copy, monkeypatch):
    import bench.data.suite

    built = []
    real = bench.data.suite.corrupt
    monkeypatch.setattr(bench.data.suite, "corrupt", lambda images, name, level, seed: built.append((name, level))
                        or real(images, name, level, seed))
    check = verify_result(result_copy, progress=False, write_report=False, sample=2, seed=3)
    assert check.passed and 1 <= len(built) <= 2  # of the 8 noise sets: at most the two drawn pairs' sets
    built.clear()
    assert verify_result(result_copy, progress=False, write_report=False).passed
    assert len(built) == len(load_result(result_copy).distributions) - 1  # all, the clean one aside


@pytest.mark.slow
def test_the_tie_rule_tells_float_noise_from_a_forged_hit(result_copy, monkeypatch, capsys):
    """A hit that differs on an example whose top two logits are within TIE_MARGIN (float64) is a
    tie, reported apart; a differing hit on a confident example stays a disagreement."""
    import torch

    import bench.pipeline.verify
    from bench.data import load_digits
    from bench.pipeline.jobs import job_environment, new_model
    from bench.results.checkpoints import load_state

    result = load_result(result_copy)
    data = load_digits(0)
    with job_environment(result.config):
        model = load_state(new_model(result.config, data), networks_folder(result_copy) / "parent-0.safetensors")
        with torch.no_grad():
            logits = model.eval().double()(data.normalize(data.test.images).double())
    top = logits.topk(2, dim=1).values
    margins = (top[:, 0] - top[:, 1]).numpy()
    close, confident = int(margins.argmin()), int(margins.argmax())
    monkeypatch.setattr(bench.pipeline.verify, "TIE_MARGIN", float(margins[close]) * 1.01)  # only `close` is within it

    def flip_two(raw: dict) -> None:
        net = next(n for n in raw["networks"] if n["pruner"] == "parent")
        hits = unpack_hits(net["hits"]["digits/clean"], 539)
        hits[[close, confident]] = ~hits[[close, confident]]
        net["hits"]["digits/clean"], net["accuracy"]["digits/clean"] = pack_hits(hits), float(hits.mean())

    rewrite(result_copy, flip_two)
    check = verify_result(result_copy, progress=False, write_report=False)
    assert check.disagreements == [f"parent on digits/clean: 1 of 539 per-example hits differ (examples {confident})"]
    assert len(check.ties) == 1 and f"(examples {close})" in check.ties[0]


@pytest.mark.slow
def test_reports_named_beside_the_results_are_skipped_as_a_glob_names_them(result_copy, capsys):
    assert verify_result(result_copy, progress=False, write_report=True).passed
    assert main(["verify", str(result_copy), str(report_path(result_copy)), "--no-report", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{result_copy.name}: verified" in out and ".verify.json" not in out

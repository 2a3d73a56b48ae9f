"""`bench run` end to end on the embedded digits data, through the real CLI entry point."""

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from bench.cli import main, parse_ratios
from bench.results import load_result
from bench.results.metrics import derive
from bench.results.schema import SCHEMA_VERSION


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished `bench run`: its folder (left as the run wrote it; a test that adds to it works
    on a copy), its arguments and the board it printed. The fixture runs it, so no test depends on
    another having run first (pytest-xdist may run them in any order, on any worker)."""
    out = tmp_path_factory.mktemp("results")
    args = ["run", "--suite", "noise,digits-c", "--severities", "3", "--pruner", "wt,pfp", "--ratios", "0.5,0.9",
            "--epochs", "5", "--retrain-epochs", "1", "--out", str(out), "--quiet"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    return out, args, printed.getvalue()


@pytest.mark.slow
def test_run_writes_a_valid_result_and_prints_its_leaderboard(finished_run):
    out, _, board = finished_run
    (path,) = out.glob("*.json")
    result = load_result(path)

    assert [d.name for d in result.distributions][0] == "digits/clean"
    # --severities 3: clean + level 3 of noise's 2 noises + digits-c's 11 corruptions at severity 3
    assert len(result.distributions) == 1 + 2 + 11
    assert {d.severity for d in result.distributions[1:]} == {3}
    assert [(n.pruner, n.step) for n in result.networks] == [("parent", 0), ("wt", 1), ("wt", 2), ("pfp", 1), ("pfp", 2)]
    for net in result.networks[1:]:
        assert abs(net.prune_ratio - net.target_ratio) < 0.01
    parent_clean = result.parent.accuracy["digits/clean"]
    assert parent_clean > 0.8, "the parent did not learn"
    assert result.provenance.seed == 0 and result.provenance.packages["torch"].startswith("2.14")
    assert set(result.provenance.distribution_checksums) == {d.name for d in result.distributions}
    # the S set: |S| = 178 by the reference's formula, capped at half of the 179 validation images,
    # a seeded random subset (not the first images), recorded with the pruners' identities
    s_set = result.provenance.calibration_indices
    assert len(s_set) == 90 and s_set == sorted(set(s_set)) and s_set[-1] < 179 and s_set != list(range(90))
    assert set(result.provenance.pruners) == {"wt", "pfp"}
    assert result.provenance.pruners["pfp"].distribution == "prunebench"
    assert len(result.provenance.pruners["pfp"].source_sha256) == 64

    # the printed numbers are the ones recomputed from the file's cells
    metrics = {m.pruner: m for m in derive(result.distributions, result.networks, result.config.delta).pruners}
    for pruner, m in metrics.items():
        row = next(line for line in board.splitlines() if f"| {pruner} " in line)
        assert f"{100 * m.nominal_potential:.1f}" in row
        assert f"{100 * m.robust_potential_mean:.1f}" in row


@pytest.mark.slow
def test_second_run_reuses_the_cached_parent(finished_run, tmp_path):
    finished, args, _ = finished_run
    out = tmp_path / "results"
    shutil.copytree(finished, out)
    args = [str(out) if a == str(finished) else a for a in args]
    (cached,) = (out / ".cache" / "parents").glob("*.safetensors")
    stamp = cached.stat().st_mtime_ns
    seed1 = [a if a != "wt,pfp" else "wt" for a in args]
    assert main(seed1) == 0
    assert cached.stat().st_mtime_ns == stamp
    first, second = (load_result(p) for p in sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime))
    assert second.parent.accuracy == first.parent.accuracy
    # same seed, same data, same config of wt: identical cells
    assert [n.accuracy for n in second.networks if n.pruner == "wt"] == [n.accuracy for n in first.networks if n.pruner == "wt"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "field, value, message",
    [
        (("networks", 1, "accuracy", "digits/clean"), 0.123, "accuracy on 'digits/clean' is 0.123 but its per-example hits give"),
        (("provenance", "platform"), "edited", "integrity check failed"),
    ],
)
def test_leaderboard_command_rejects_an_edited_file(finished_run, capsys, tmp_path, field, value, message):
    out, _, _ = finished_run
    path = next(out.glob("*.json"))
    raw = json.loads(path.read_text())
    target = raw
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    (tmp_path / "edited.json").write_text(json.dumps(raw))
    (tmp_path / path.name).write_bytes(path.read_bytes())  # an honest file beside it: there is a board to print
    assert main(["leaderboard", str(tmp_path)]) == 0  # reported and skipped: one bad file never breaks the board
    err = capsys.readouterr().err
    assert "edited.json" in err and message in err
    assert main(["leaderboard", "--strict", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "edited.json" in err and message in err


def test_list_shows_builtins(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for name in ("wt", "ft", "sipp", "pfp", "random", "noise", "digits-c", "resnet20_cifar", "digits_cnn"):
        assert name in text


def test_ratio_grids():
    assert parse_ratios("0.3,0.5") == (0.3, 0.5)
    geom = parse_ratios("geom:0.3:0.95:6")
    assert geom[0] == 0.3 and geom[-1] == 0.95 and len(geom) == 6
    assert list(geom) == sorted(geom)
    with pytest.raises(Exception, match="bad ratio grid"):
        parse_ratios("geom:0.9:0.3:4")


def test_bad_suite_for_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--suite", "nosie", "--out", str(tmp_path), "--quiet"]) == 2
    assert "no suite named 'nosie' is installed. Did you mean noise?" in capsys.readouterr().err


@pytest.mark.slow
def test_validate_and_plot_commands(finished_run, capsys, tmp_path):
    out, _, _ = finished_run
    good = next(out.glob("*.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(good.read_text().replace(f'"schema_version": {SCHEMA_VERSION}', '"schema_version": 7'))
    assert main(["validate", str(good)]) == 0
    assert main(["validate", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert "1 of 2 result files valid" in captured.out and "schema_version 7 is not supported" in captured.err

    assert main(["plot", str(out), "-o", str(tmp_path / "plots")]) == 0
    written = capsys.readouterr().out.split()
    assert any(p.endswith("potential.png") for p in written) and any(p.endswith(".pdf") for p in written)
    assert all((tmp_path / "plots" / Path(p).name).stat().st_size > 1000 for p in written)


@pytest.mark.slow
def test_rerunning_a_finished_command_gives_the_same_result_and_a_byte_identical_leaderboard(tmp_path, capsys):
    from bench.results import parse_result, save_result

    args = ["run", "--suite", "noise", "--pruner", "wt,random", "--ratios", "0.5", "--epochs", "1",
            "--retrain-epochs", "1", "--threads", "1", "--out", str(tmp_path / "results"), "--quiet"]
    texts, boards = [], []
    for _ in range(2):
        assert main(args) == 0
        (path,) = (tmp_path / "results").glob("*.json")  # the second run rewrites the same file
        texts.append(path.read_text())
        capsys.readouterr()
        assert main(["leaderboard", str(tmp_path / "results")]) == 0
        boards.append(capsys.readouterr().out)
    assert "p = " in boards[0]  # the bootstrap ran: intervals and p-values are part of the comparison
    assert boards[0] == boards[1]

    # the files differ in their provenance timestamps (and the integrity digest over them) only
    first, second = (json.loads(text) for text in texts)
    stamps = ("created_at", "wall_time_s")
    assert first["provenance"]["created_at"] != second["provenance"]["created_at"]
    for raw in (first, second):
        for key in stamps:
            del raw["provenance"][key]
        del raw["integrity"]
    assert first == second
    # byte for byte: the second file with the first file's timestamps is the first file
    earlier = parse_result(texts[0]).provenance
    result = parse_result(texts[1])
    restamped = result.model_copy(update={"provenance": result.provenance.model_copy(
        update={key: getattr(earlier, key) for key in stamps})})
    assert save_result(restamped, tmp_path / "restamped.json").read_text() == texts[0]


def subcommand_paths(parser, prefix=()):
    """Every command path of the CLI, e.g. ("analyze", "features")."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*prefix, name)
                yield from subcommand_paths(child, (*prefix, name))


def test_every_help_page_renders_and_shows_defaults(capsys):
    from bench.cli import build_parser

    paths = list(subcommand_paths(build_parser()))
    assert ("analyze", "features") in paths and ("data", "make-c") in paths
    for path in [(), *paths]:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0, path
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0)" in text and "(default: wt,ft,sipp,pfp)" in text and "(default: None)" not in text


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"prunebench {version('prunebench')}"


def test_the_cli_and_the_python_api_share_the_dataset_defaults():
    from bench.cli import build_parser, run_config
    from bench.data import DATASETS
    from bench.pipeline.config import default_config

    assert run_config(build_parser().parse_args(["run"])) == default_config()
    assert run_config(build_parser().parse_args(["run", "--seed", "2", "--pruner", "pfp"])) == default_config(
        seed=2, pruners=("pfp",))
    for name, spec in DATASETS.items():
        config = default_config(dataset=name, train_corruptions=("fog",))
        assert (config.model, config.suites, config.train.epochs) == (spec.default_model, spec.default_suites,
                                                                      spec.train.epochs)
        assert config.retrain.corruption_table == spec.mix_table
    implied = default_config(suites=("cifar10c",))  # a suite that needs a dataset implies it
    assert (implied.dataset, implied.model) == ("cifar10", "resnet20_cifar")
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        default_config(dataset="mnist")


def test_workers_default_to_one_per_core_or_the_environment(monkeypatch, capsys):
    from bench.cli import build_parser

    monkeypatch.delenv("PRUNEBENCH_WORKERS", raising=False)
    assert build_parser().parse_args(["run"]).workers == (os.cpu_count() or 1)
    monkeypatch.setenv("PRUNEBENCH_WORKERS", "3")
    assert build_parser().parse_args(["run"]).workers == 3
    monkeypatch.setenv("PRUNEBENCH_WORKERS", "none")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run"])
    assert "argument --workers: 'none' is not an integer" in capsys.readouterr().err


@pytest.mark.parametrize("ratios, phrase", [("0.5,1.2", "must lie strictly between 0 and 1, got 1.2"),
                                            ("0.5,0.3", "must be strictly increasing")])
def test_a_bad_flag_value_is_one_line_naming_the_flag(ratios, phrase, capsys):
    """Not the usage block and not the whole config dict: `bench run: error: argument --ratios: ...`."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--ratios", ratios])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bench run: error: argument --ratios: ") and phrase in line
    assert line.endswith("(see `bench run --help`)")


def test_switches_do_not_claim_a_default_in_their_help(capsys):
    for command in ("eval", "verify", "run"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: True)" not in text and "(default: False)" not in text


def test_a_folder_without_one_valid_result_is_bad_input(tmp_path, capsys):
    (tmp_path / "broken.json").write_text("{")
    assert main(["leaderboard", str(tmp_path), "-o", str(tmp_path / "BOARD.md")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'broken.json'}: not valid JSON" in err and "none of its 1 result files is valid" in err
    assert not (tmp_path / "BOARD.md").exists()

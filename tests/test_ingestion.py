"""Leaderboard ingestion against hostile or broken result files: each is reported on one line
naming it and left out (`bench leaderboard --strict` fails instead), and never breaks the board."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_results import make_result
from test_uncertainty import GAP, NO_GAP, make_run

from bench.cli import main
from bench.results import (
    MAX_RESULT_BYTES,
    TARGET_RATIO_TOLERANCE,
    check_duplicates,
    check_test_sets,
    content_digest,
    find_result_files,
    load_result,
    load_results,
    save_result,
    uncertainty,
)
from bench.results.schema import RunResult
from bench.results.uncertainty import replicate_key
from leaderboard.build import compile_leaderboard, render_leaderboard

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = find_result_files(ROOT / "leaderboard" / "results")
V1 = sorted((ROOT / "tests" / "fixtures" / "results" / "v1").glob("*.json"))
PRUNERS = {"wt": NO_GAP["wt"], "ft": GAP["wt"]}
INTERVAL = "["  # bootstrap intervals render as "x [low, high]"


def forge(path: Path, change) -> Path:
    """Edit a saved result with `change(raw)` and re-seal it: the integrity digest is no obstacle."""
    raw = json.loads(path.read_text())
    change(raw)
    raw["integrity"] = content_digest(raw)
    path.write_text(json.dumps(raw))
    return path


def the_line(errors: list[str], path: Path) -> str:
    """The one error, on one line, of the form `<path>: <what is wrong>`."""
    assert len(errors) == 1, errors
    (line,) = errors
    assert "\n" not in line and line.startswith(f"{path}: "), line
    return line


def skipped(folder: Path, **kwargs) -> tuple[str, list[str]]:
    board = compile_leaderboard(folder, **kwargs)
    return board.markdown, list(board.skipped)


# 1. only regular files, at most MAX_RESULT_BYTES


def test_only_regular_files_of_bounded_size_are_read(tmp_path):
    save_result(make_run(PRUNERS), tmp_path / "good.json")
    hostile = {
        "zero.json": "not a regular file",
        "fifo.json": "a FIFO",
        "folder.json": "a directory",
        "huge.json": f"larger than the {MAX_RESULT_BYTES // 2**20} MiB",
    }
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.json")  # reading it would block forever
    (tmp_path / "folder.json").mkdir()
    with open(tmp_path / "huge.json", "wb") as handle:
        handle.truncate(MAX_RESULT_BYTES + 1)  # sparse

    board, errors = skipped(tmp_path)
    assert len(errors) == len(hostile) and "| wt " in board and "4 invalid result files skipped" in board
    for name, message in hostile.items():
        assert message in the_line([e for e in errors if e.startswith(f"{tmp_path / name}:")], tmp_path / name)


# 2. the files of a protocol group share their test sets


def test_a_file_whose_test_sets_differ_from_its_group_is_skipped(tmp_path):
    for seed in range(3):
        save_result(make_run(PRUNERS, seed=seed), tmp_path / f"s{seed}.json")
    odd = save_result(make_run({"sipp": GAP["wt"]}, shifted=[("noise/gaussian_noise/1", "gaussian_noise", 1)]),
                      tmp_path / "odd.json")

    board, errors = skipped(tmp_path)  # crashed with KeyError: 'noise/gaussian_noise/2' naming no file
    line = the_line(errors, odd)
    assert "differ from those of the 3 of 4 files" in line and "lacks 'noise/gaussian_noise/2'" in line
    assert "sipp" not in board and "| wt " in board


def test_checksums_must_agree_within_a_seed_and_a_tie_is_decided_by_content(tmp_path):
    first = save_result(make_run({"wt": GAP["wt"]}), tmp_path / "a.json")
    other = save_result(make_run({"ft": GAP["wt"]}), tmp_path / "b.json")  # same seed, other test images
    forge(other, lambda raw: raw["provenance"]["distribution_checksums"].update({"digits/clean": "f" * 64}))
    third = save_result(make_run({"sipp": GAP["wt"]}), tmp_path / "c.json")

    _, errors, _ = load_results([other, first, third])  # two files against one: the majority stays
    line = the_line(errors, other)
    assert "the 2 of 3 seed-0 files" in line and f"(e.g. {first})" in line and "another checksum of 'digits/clean'" in line

    # one against one: no file name decides; a verified file does, else neither is ranked
    _, errors, _ = load_results([other, first])
    assert len(errors) == 2 and all("none of them is ranked" in e for e in errors)
    loaded = [(first, load_result(first)), (other, load_result(other))]
    rejected = check_test_sets(replicate_key(loaded[0][1]), loaded, vouched=lambda path, _: path == other)
    assert set(rejected) == {first}
    # seeds draw their own test images: other checksums on another seed are fine
    save_result(make_run({"ft": GAP["wt"]}, seed=1), tmp_path / "d.json")
    forge(tmp_path / "d.json", lambda raw: raw["provenance"]["distribution_checksums"].update({"digits/clean": "e"}))
    assert load_results([first, tmp_path / "d.json"])[1] == []


# 3. n_examples is bounded by the dataset's test set; the bootstrap's memory regardless


def test_n_examples_beyond_the_datasets_test_set_is_refused(tmp_path):
    save_result(make_run(PRUNERS), tmp_path / "good.json")
    big = save_result(make_run({"sipp": GAP["wt"]}, n=1000, parent_correct=900, seed=1), tmp_path / "big.json")
    line = the_line(skipped(tmp_path, test_set_sizes={"digits": 539})[1], big)
    assert "'digits/clean' claims 1000 examples, more than the 539 of any digits test set" in line

    errors = skipped(tmp_path, test_set_sizes={"cifar10": 10_000})[1]
    assert "unknown dataset 'digits' (known: cifar10)" in the_line(errors[:1], big)
    assert len(errors) == 2 and "unknown dataset" in the_line(errors[1:], tmp_path / "good.json")


def test_the_cli_bounds_n_examples_by_the_data_layers_sizes(tmp_path, capsys):
    big = save_result(make_run(PRUNERS, n=540, parent_correct=500), tmp_path / "big.json")
    save_result(make_run(PRUNERS, seed=1), tmp_path / "honest.json")  # a board to print beside the skipped file
    assert main(["leaderboard", str(tmp_path)]) == 0
    assert the_line(capsys.readouterr().err.splitlines(), big).endswith("more than the 539 of any digits test set")
    (tmp_path / "honest.json").unlink()  # alone, the folder has nothing valid to rank: bad input
    assert main(["leaderboard", str(tmp_path)]) == 2


def test_the_digits_bound_is_its_real_test_split():
    from bench.data import DATASETS, load_digits

    assert DATASETS["digits"].max_test_examples == len(load_digits(0).test) == 539


def test_the_bootstrap_resamples_in_chunks_with_unchanged_numbers(monkeypatch):
    run = make_run(PRUNERS, n=97)
    whole = uncertainty.resampled_accuracy(run, run.networks, 50, seed=3)
    monkeypatch.setattr(uncertainty, "CHUNK_DRAWS", 3 * 97)  # 3 resamples at a time, the last chunk shorter
    chunked = uncertainty.resampled_accuracy(run, run.networks, 50, seed=3)
    monkeypatch.setattr(uncertainty, "CHUNK_HITS", 97 * len(run.networks))  # and one test set's hits at a time
    grouped = uncertainty.resampled_accuracy(run, run.networks, 50, seed=3)
    assert whole.keys() == chunked.keys() == grouped.keys() and len(whole) > 2
    for name in whole:
        assert np.array_equal(whole[name], chunked[name]) and np.array_equal(whole[name], grouped[name])


def test_the_bootstraps_memory_does_not_grow_with_the_resamples(monkeypatch):
    import tracemalloc

    run = make_run(PRUNERS, n=100_000, parent_correct=90_000)
    monkeypatch.setattr(uncertainty, "CHUNK_DRAWS", 2**20)
    tracemalloc.start()
    try:
        uncertainty.resampled_accuracy(run, run.networks, 200, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # drawing all 200 x 100,000 indices at once takes 160 MB for the indices alone


# 4. one file per (pruner, seed, protocol)


def test_conflicting_files_for_a_pruner_and_seed_are_decided_by_content_not_by_name(tmp_path):
    """The red team's sabotage: a file with the same pruner and seed but other results, named to sort
    first. Neither verified: neither is ranked, both named; the verified one stays whatever the names."""
    real = save_result(make_run(PRUNERS), tmp_path / "b-real.json")
    sabotage = save_result(make_run({"wt": GAP["wt"]}, created=5), tmp_path / "a-sabotage.json")
    protocol = make_run(PRUNERS).config.protocol_hash()

    _, errors, _ = load_results([real, sabotage])
    assert len(errors) == 2
    for path in (real, sabotage):
        line = the_line([e for e in errors if e.startswith(f"{path}:")], path)
        assert f"pruner 'wt' with seed 0 of protocol {protocol} is also in another file with other results" in line
        assert str(real) in line and str(sabotage) in line and "none is ranked" in line

    loaded = [(real, load_result(real)), (sabotage, load_result(sabotage))]
    for verified in (real, sabotage):  # the verified one stays, whichever name sorts first
        rejected = check_duplicates(replicate_key(loaded[0][1]), loaded,
                                    vouched=lambda path, _, v=verified: path == v).rejected
        assert set(rejected) == {real, sabotage} - {verified}
        assert f"the verified {verified} is ranked" in next(iter(rejected.values()))


def test_files_with_the_same_results_for_a_pruner_are_one_result_whatever_their_names(tmp_path):
    """A file whose every run another file holds with the same results is redundant: left out with a
    note, not an error, and the board is that of the one file."""
    whole = save_result(make_run(PRUNERS), tmp_path / "z-whole.json")
    again = forge(save_result(make_run(PRUNERS), tmp_path / "a-again.json"),
                  lambda raw: raw["provenance"].update({"wall_time_s": 2.0}))  # other bytes, same results
    compiled = compile_leaderboard(tmp_path)
    kept = min((whole, again), key=lambda path: load_result(path).integrity)
    other = again if kept == whole else whole
    assert compiled.skipped == ()
    assert len(compiled.notes) == 2  # wt and ft
    assert all(f"{other} holds the same results as {kept}: one run, counted once" in note for note in compiled.notes)
    assert compiled.markdown == render_leaderboard([load_result(kept)], breakdown=True, verified=set(), skipped=0)


def test_a_second_run_sharing_a_pruner_with_the_first_puts_every_row_on_the_board(tmp_path):
    """The README's sequence: the default run, then `bench run --pruner wt,pfp:...,tp-taylor` into the
    same folder. wt is one run (same results in both files, counted once, a note); the second file's
    other pruners are ranked beside the first file's."""
    first = save_result(make_run(PRUNERS), tmp_path / "first.json")
    second = save_result(make_run({"wt": NO_GAP["wt"], "sipp": GAP["wt"]}, created=6), tmp_path / "second.json")
    compiled = compile_leaderboard(tmp_path)
    assert compiled.skipped == ()
    (note,) = compiled.notes
    assert note.startswith("pruner 'wt' with seed 0 of protocol") and str(second) in note and str(first) in note
    rows = {row.pruner: row for section in compiled.board.protocols for row in section.rows}
    assert sorted(rows) == ["ft", "sipp", "wt"]
    assert rows["wt"].seeds == [0]  # counted once
    alone = compile_leaderboard(_copy(first, tmp_path / "alone"))
    wt_alone = next(r for p in alone.board.protocols for r in p.rows if r.pruner == "wt")
    assert rows["wt"].nominal_p == wt_alone.nominal_p


def _copy(path: Path, folder: Path) -> Path:
    folder.mkdir()
    (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.mark.slow
def test_bench_plot_and_validate_share_the_boards_ingestion(tmp_path, capsys):
    """One ingestion: `bench plot` skips what the board skips (a truncated file, named on one line)
    instead of aborting, and `bench validate` prints the board's notes."""
    from bench.cli import main

    first = save_result(make_run(PRUNERS), tmp_path / "first.json")
    second = save_result(make_run({"wt": NO_GAP["wt"], "sipp": GAP["wt"]}, created=6), tmp_path / "second.json")
    truncated = tmp_path / "truncated.json"
    truncated.write_text(first.read_text()[:200])
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "plots")]) == 0
    err = capsys.readouterr().err
    assert f"{truncated}: " in err and "not valid JSON" in err
    assert main(["validate", str(first), str(second)]) == 0
    captured = capsys.readouterr()
    assert "note: pruner 'wt' with seed 0" in captured.err and "2 of 2 result files valid" in captured.out


# 5. a file without per-example hits costs only its own rows their intervals


def test_a_file_without_hits_loses_only_its_own_rows_intervals(tmp_path):
    for seed in range(2):
        save_result(make_run({"wt": NO_GAP["wt"]}, seed=seed), tmp_path / f"wt{seed}.json")
    bare = make_run({"ft": GAP["wt"]})
    bare = bare.model_copy(update={"networks": [n.model_copy(update={"hits": {}}) for n in bare.networks]})
    save_result(RunResult.model_validate(bare.model_dump()), tmp_path / "ft-bare.json")

    board, errors = skipped(tmp_path)
    assert errors == []
    rows = {line.split("|")[2].strip(): line for line in board.splitlines() if line.startswith("| 1 ")
            or line.startswith("| 2 ")}
    assert INTERVAL in rows["wt"] and "p = " in rows["wt"]
    assert INTERVAL not in rows["ft"] and "p = " not in rows["ft"]
    assert "Rows without brackets: mean ± std over seeds" in board


# 6. prune ratio, nonzero count, parent and target agree


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda nets: nets[2].update({"prune_ratio": 0.999}),
         "network 'wt' step 2: prune ratio 0.999 disagrees with its 200 nonzero parameters of the parent's 1000"),
        (lambda nets: nets[2].update({"prune_ratio": 0.999, "nonzero_params": 1}),  # consistent, off the grid
         f"network 'wt' step 2: prune ratio 0.999 is more than {TARGET_RATIO_TOLERANCE} away from its target 0.8"),
        (lambda nets: nets[2].update({"prune_ratio": 0.9, "nonzero_params": 100}),
         f"network 'wt' step 2: prune ratio 0.9 is more than {TARGET_RATIO_TOLERANCE} away from its target 0.8"),
        (lambda nets: nets[1].update({"prune_ratio": 0.45, "nonzero_params": 550}), f"more than {TARGET_RATIO_TOLERANCE} away"),
        (lambda nets: nets[1].update({"target_ratio": 0.8}), "target ratio 0.8, but the config's grid has 0.5"),
        (lambda nets: nets[0].update({"prune_ratio": 0.5}), "the parent must be step 0 with prune and target ratio 0"),
        (lambda nets: nets[0].update({"nonzero_params": 0}), "the parent has 0 nonzero parameters"),
        (lambda nets: nets[2].update({"step": 3}), "step 3: the grid has steps 1 to 2"),
        (lambda nets: nets.pop(1), "network 'wt': steps [2], expected each of 1 to 2 once"),
    ],
)
def test_prune_ratios_must_agree_with_nonzero_counts_and_targets(tmp_path, change, message):
    path = forge(save_result(make_result(), tmp_path / "run.json"), lambda raw: change(raw["networks"]))
    assert message in the_line(load_results([path])[1], path)


def test_a_real_result_claiming_a_tiny_network_is_skipped(tmp_path):
    """The observed attack on a real file: its last wt step claims 99.9 % pruned, 1 nonzero parameter."""
    real = tmp_path / COMMITTED[0].name
    real.write_bytes(COMMITTED[0].read_bytes())
    last = max(i for i, n in enumerate(json.loads(real.read_text())["networks"]) if n["pruner"] == "wt")
    forge(real, lambda raw: raw["networks"][last].update({"prune_ratio": 0.999, "nonzero_params": 1}))
    board, errors = skipped(tmp_path)
    assert "prune ratio 0.999 disagrees with its 1 nonzero parameters" in the_line(errors, real)
    assert "No valid result files." in board


def test_the_committed_results_lie_well_within_the_target_tolerance():
    gaps = [abs(n["prune_ratio"] - n["target_ratio"]) for path in [*COMMITTED, *V1]
            for n in json.loads(path.read_text())["networks"]]
    print(f"max |prune_ratio - target_ratio| over the committed results: {max(gaps):.4f}")
    assert 0 < max(gaps) < TARGET_RATIO_TOLERANCE / 3


# 7. the config hash is the canonical sha256 of the config as stored


def test_a_config_hash_that_does_not_match_the_config_is_refused(tmp_path):
    path = forge(save_result(make_result(), tmp_path / "run.json"), lambda raw: raw["config"].update({"delta": 0.5}))
    assert "provenance.config_hash" in the_line(load_results([path])[1], path)


def test_the_config_hash_is_over_the_config_as_stored(tmp_path, monkeypatch):
    from bench.results import files as results_module
    from bench.results.schema import RunConfig

    path = save_result(make_result(), tmp_path / "run.json")
    before = uncertainty.content_key(load_result(path))

    class GrownConfig(RunConfig):
        accelerator: str | None = None  # a field a later prunebench might add, with a default

    class GrownResult(RunResult):
        config: GrownConfig

    monkeypatch.setattr(results_module, "RunResult", GrownResult)
    grown = load_result(path)
    assert grown.config.config_hash() != grown.provenance.config_hash  # a re-dump would not match any more
    assert uncertainty.content_key(grown) == before  # nor would the bootstrap's draws


def test_committed_and_version_1_files_pass_every_check():
    assert COMMITTED and V1
    from bench.cli import dataset_test_sizes

    kept, errors, _ = load_results(COMMITTED, dataset_test_sizes())  # the bounds `bench leaderboard` applies
    assert errors == [] and len(kept) == len(COMMITTED)
    assert load_results(V1, {"digits": 539})[1] == []


# 8. a bad file is reported and skipped; --strict fails


def test_a_bad_file_is_skipped_and_strict_fails(tmp_path, capsys):
    save_result(make_run(PRUNERS), tmp_path / "good.json")
    bad = tmp_path / "bad\nname.json"  # a hostile name cannot break the one-line report
    bad.write_text('{"schema_version": 2, "networks": [[[[')
    escaped = Path(str(bad).replace("\n", "\\n"))

    assert main(["leaderboard", str(tmp_path), "-o", str(tmp_path / "board.md")]) == 0
    out, err = capsys.readouterr()
    assert "not valid JSON" in the_line(err.splitlines(), escaped)
    assert "| wt " in out and (tmp_path / "board.md").read_text() == out
    assert out.endswith("\n1 invalid result file skipped (`bench leaderboard --strict` lists them).\n")

    assert main(["leaderboard", "--strict", str(tmp_path), "-o", str(tmp_path / "strict.md")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and not (tmp_path / "strict.md").exists()
    lines = err.splitlines()
    assert "not valid JSON" in the_line(lines[:1], escaped) and "1 invalid result files (--strict)" in lines[1]


def test_deep_nesting_and_hostile_names_stay_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert "not valid JSON" in the_line(load_results([deep])[1], deep)
    path = forge(save_result(make_result(pruner="evil\n# x\x1b[31m"), tmp_path / "evil.json"),
                 lambda raw: raw["networks"][1].update({"target_ratio": 0.8}))
    line = the_line(load_results([path])[1], path)
    assert "network 'evil\\n# x\\x1b[31m' step 1" in line


def test_validate_applies_the_leaderboards_bounds(tmp_path, capsys):
    big = save_result(make_run({"sipp": GAP["wt"]}, n=1000, parent_correct=900), tmp_path / "big.json")
    assert main(["validate", str(big)]) == 2
    assert "claims 1000 examples, more than the 539 of any digits test set" in capsys.readouterr().err


def test_the_work_per_file_is_bounded_before_the_board_computes_anything(tmp_path, monkeypatch):
    import bench.results.files

    run = save_result(make_run(PRUNERS), tmp_path / "run.json")
    cells = len(load_result(run).networks) * len(load_result(run).distributions)
    monkeypatch.setattr(bench.results.files, "MAX_CELLS_PER_FILE", cells - 1)
    board, errors = skipped(tmp_path)
    assert f"= {cells:,} cells, more than the {cells - 1:,} the board evaluates per file" in the_line(errors, run)


def test_the_board_after_a_run_shows_that_runs_section_first(tmp_path):
    """`bench run` prints its folder's board with the run's own protocol first, not ~100 lines down."""
    from leaderboard.build import build_leaderboard

    older = save_result(make_run(PRUNERS), tmp_path / "a-older.json")
    newer = save_result(make_run({"sipp": GAP["wt"]}, ratios=(0.4, 0.6)), tmp_path / "b-newer.json")
    protocols = {path: load_result(path).config.protocol_hash() for path in (older, newer)}
    for written in (older, newer):
        board = build_leaderboard(tmp_path, first=written)
        first_other = min(board.index(protocols[p]) for p in protocols if p != written)
        assert board.index(protocols[written]) < first_other

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bench.results import ResultFileError, load_result, parse_result, result_document, save_result, seal
from bench.results.metrics import derive
from bench.results.schema import (
    PARENT,
    SCHEMA_VERSION,
    Distribution,
    NetworkResult,
    Provenance,
    Recipe,
    RunConfig,
    RunResult,
)
from leaderboard import render_leaderboard

RECIPE = Recipe(epochs=1, batch_size=8, lr=0.1)


def make_result(pruner: str = "wt", model: str = "digits_cnn") -> RunResult:
    config = RunConfig(
        dataset="digits", model=model, pruners=(pruner,), suites=("noise",), target_ratios=(0.5, 0.8),
        train=RECIPE, retrain=RECIPE, seed=0, calibration_size=4,
    )
    dists = [
        Distribution(name="digits/clean", suite="nominal", n_examples=100),
        Distribution(name="noise/gaussian_noise/0.1", suite="noise", corruption="gaussian_noise", severity=1, level=0.1, n_examples=100),
    ]
    nets = [
        NetworkResult(pruner=PARENT, step=0, target_ratio=0, prune_ratio=0, nonzero_params=1000, structured=False,
                      accuracy={"digits/clean": 0.95, "noise/gaussian_noise/0.1": 0.90}),
        NetworkResult(pruner=pruner, step=1, target_ratio=0.5, prune_ratio=0.5, nonzero_params=500, structured=False,
                      accuracy={"digits/clean": 0.95, "noise/gaussian_noise/0.1": 0.897}),
        NetworkResult(pruner=pruner, step=2, target_ratio=0.8, prune_ratio=0.8, nonzero_params=200, structured=False,
                      accuracy={"digits/clean": 0.95, "noise/gaussian_noise/0.1": 0.80}),
    ]
    return RunResult(
        config=config,
        provenance=Provenance(
            config_hash=config.config_hash(), seed=0, packages={"torch": "x"}, data_checksum="abc",
            distribution_checksums={d.name: "0" for d in dists}, platform="test",
            created_at=datetime(2026, 1, 1, tzinfo=timezone.utc), wall_time_s=1.0,
        ),
        distributions=dists,
        networks=nets,
    )


def test_round_trip(tmp_path):
    original = make_result()
    path = save_result(original, tmp_path / "run.json")
    loaded = load_result(path)
    assert loaded.model_dump(exclude={"integrity"}) == original.model_dump(exclude={"integrity"})
    derived = derive(loaded.distributions, loaded.networks, loaded.config.delta)
    assert derived.pruners[0].nominal_potential == 0.8
    assert derived.pruners[0].robust_potential_mean == 0.5
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def edit(path, change):
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def test_hand_edited_accuracy_is_rejected(tmp_path):
    path = save_result(make_result(), tmp_path / "run.json")
    edit(path, lambda raw: raw["networks"][2]["accuracy"].update({"noise/gaussian_noise/0.1": 0.95}))
    with pytest.raises(ResultFileError, match="integrity check failed"):
        load_result(path)


def test_a_recomputed_seal_passes_the_format_check(tmp_path):
    """The digest is a corruption check, not a proof: anyone can recompute it (see bench verify)."""
    result = make_result()
    cells = [n.model_copy(update={"accuracy": {**n.accuracy, "noise/gaussian_noise/0.1": 0.95}}) for n in result.networks]
    forged = seal(result.model_copy(update={"networks": cells}))
    assert parse_result(json.dumps(result_document(forged)), "forged.json").networks[2].accuracy == cells[2].accuracy


FIXTURES = Path(__file__).parent / "fixtures" / "results"


def test_a_version_1_file_reads_with_the_numbers_it_was_written_with():
    """Version 1 stored its derived metrics: the reader recomputes the very same numbers."""
    (path,) = (FIXTURES / "v1").glob("*.json")
    stored = json.loads(path.read_text())
    assert stored["schema_version"] == 1
    result = load_result(path)
    assert result.schema_version == SCHEMA_VERSION and all(n.file is None for n in result.networks)
    recomputed = derive(result.distributions, result.networks, result.config.delta).model_dump(mode="json")
    assert recomputed == stored["derived"]
    assert "nominal P" in render_leaderboard([result])


def test_a_field_added_to_the_schema_later_leaves_existing_files_valid(tmp_path, monkeypatch):
    from bench.results import files as results_module

    path = save_result(make_result(), tmp_path / "run.json")

    class GrownProvenance(Provenance):
        accelerator: str | None = None  # a field a later prunebench might add, with a default

    class GrownResult(RunResult):
        provenance: GrownProvenance

    monkeypatch.setattr(results_module, "RunResult", GrownResult)
    loaded = load_result(path)
    assert isinstance(loaded, GrownResult) and loaded.provenance.accelerator is None
    assert loaded.integrity == json.loads(path.read_text())["integrity"]


@pytest.mark.parametrize("version", [1.0, True, "2", None, 2.0])
def test_schema_version_must_be_the_exact_integer(tmp_path, version):
    path = save_result(make_result(), tmp_path / "run.json")
    edit(path, lambda raw: raw.update({"schema_version": version}))
    with pytest.raises(ResultFileError, match="schema_version .* is not supported"):
        load_result(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda raw: raw["networks"][1]["accuracy"].update({"digits/clean": 1.7}), r"networks\.1.*\[0, 1\]"),
        (lambda raw: raw["networks"][1].pop("prune_ratio"), r"networks\.1\.prune_ratio: Field required"),
        (lambda raw: raw.update({"schema_version": 99}), "schema_version 99 is not supported"),
        (lambda raw: raw["config"].update({"target_ratios": [0.8, 0.5]}), "strictly increasing"),
        (lambda raw: raw.update({"surprise": 1}), "surprise: Extra inputs are not permitted"),
    ],
)
def test_malformed_files_fail_with_a_readable_message(tmp_path, change, message):
    path = save_result(make_result(), tmp_path / "run.json")
    edit(path, change)
    with pytest.raises(ResultFileError, match=message) as info:
        load_result(path)
    assert str(path) in str(info.value)


def test_truncated_json_is_rejected(tmp_path):
    path = save_result(make_result(), tmp_path / "run.json")
    path.write_text(path.read_text()[:200])
    with pytest.raises(ResultFileError, match="not valid JSON"):
        load_result(path)


def test_leaderboard_escapes_hostile_names():
    board = render_leaderboard([make_result(pruner="evil|name\n# header", model="m|x")])
    pruner_rows = [line for line in board.splitlines() if "evil" in line]
    assert pruner_rows and all(r"evil\|name \# header" in row for row in pruner_rows)
    # every row of every table keeps its header's column count: the name broke no cell
    for table in markdown_tables(board):
        separators = {row.count("|") - row.count(r"\|") for row in table}
        assert len(separators) == 1, table
    assert "## digits · m\\|x" in board


def markdown_tables(text: str) -> list[list[str]]:
    """Runs of consecutive lines that start with '|'."""
    tables: list[list[str]] = []
    previous = False
    for line in text.splitlines():
        current = line.startswith("|")
        if current and not previous:
            tables.append([])
        if current:
            tables[-1].append(line)
        previous = current
    return tables


def test_per_example_hits_round_trip_and_must_agree_with_accuracy(tmp_path):
    import numpy as np

    from bench.results.schema import pack_hits, unpack_hits

    hits = np.arange(100) % 20 != 0  # 95 of 100 correct
    assert np.array_equal(unpack_hits(pack_hits(hits), 100), hits)
    result = make_result()
    parent = result.networks[0].model_copy(update={"hits": {"digits/clean": pack_hits(hits)}})
    with_hits = result.model_copy(update={"networks": [parent, *result.networks[1:]]})
    loaded = load_result(save_result(RunResult.model_validate(with_hits.model_dump()), tmp_path / "run.json"))
    assert np.array_equal(unpack_hits(loaded.networks[0].hits["digits/clean"], 100), hits)

    wrong = with_hits.model_dump()
    wrong["networks"][0]["hits"]["digits/clean"] = pack_hits(np.arange(100) % 2 == 0)  # 50 %
    with pytest.raises(ValueError, match="per-example hits give 0.5"):
        RunResult.model_validate(wrong)

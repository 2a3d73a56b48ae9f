"""The committed hostile result files (tests/fixtures/hostile/, made by its make_fixtures.py) are
each reported on one line naming the file and skipped; the honest files still rank, and
`bench leaderboard --strict` fails on the folder."""

import shutil
from pathlib import Path

from bench.cli import main
from leaderboard.build import compile_leaderboard

HOSTILE = Path(__file__).parent / "fixtures" / "hostile"
EXPECTED = dict(line.split("\t") for line in (HOSTILE / "expected.tsv").read_text().splitlines())


def test_every_hostile_fixture_is_skipped_with_its_one_line_reason(tmp_path):
    folder = tmp_path / "results"
    shutil.copytree(HOSTILE, folder)
    board = compile_leaderboard(folder, test_set_sizes={"digits": 539})
    reasons = {Path(line.split(": ", 1)[0]).name: line for line in board.skipped}
    # a copy of an honest file's results is one run, counted once: left out with a note, not an error
    reasons |= {name: note for name in EXPECTED for note in board.notes if f"{name} holds" in note}
    assert set(reasons) == set(EXPECTED)
    for name, phrase in EXPECTED.items():
        assert phrase in reasons[name] and "\n" not in reasons[name], reasons[name]
    assert "| wt " in board.markdown and "| ft " in board.markdown and "seeds [0, 1, 2]" in board.markdown


def test_strict_fails_listing_them(tmp_path, capsys):
    folder = tmp_path / "results"
    shutil.copytree(HOSTILE, folder)
    assert main(["leaderboard", str(folder), "--strict"]) == 1
    err = capsys.readouterr().err
    assert all(name in err for name in EXPECTED)

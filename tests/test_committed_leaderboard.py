"""CI checks the committed leaderboard: its board is regenerated from the committed result files,
and every committed result is verified against its committed networks (bench verify)."""

from pathlib import Path

import pytest

from bench.results import find_result_files, load_result, read_report
from bench.verify import verify_result
from leaderboard import build_leaderboard

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "leaderboard" / "results"


def test_committed_leaderboard_matches_the_committed_results():
    regenerated = build_leaderboard(RESULTS)
    committed = (ROOT / "LEADERBOARD.md").read_text(encoding="utf-8")
    assert committed == regenerated, (
        "LEADERBOARD.md differs from the committed result files; regenerate it with "
        "`bench leaderboard leaderboard/results -o LEADERBOARD.md`"
    )


@pytest.mark.parametrize("path", find_result_files(RESULTS), ids=lambda p: p.name)
def test_committed_result_verifies_against_its_committed_networks(path):
    check = verify_result(path, progress=False, write_report=False)
    assert check.passed, "\n".join(check.disagreements[:10])
    assert check.networks_checked == len(check.result.networks)
    report = read_report(path)
    assert report is not None and report.passed, f"no passed verification report beside {path.name}"
    assert report.integrity == load_result(path).integrity, f"{path.name}'s verification report is for other content"

"""CI regenerates the leaderboard from the committed result files and fails on any difference."""

from pathlib import Path

from leaderboard import build_leaderboard

ROOT = Path(__file__).resolve().parents[1]


def test_committed_leaderboard_matches_the_committed_results():
    regenerated = build_leaderboard(ROOT / "leaderboard" / "results")
    committed = (ROOT / "LEADERBOARD.md").read_text(encoding="utf-8")
    assert committed == regenerated, (
        "LEADERBOARD.md differs from the committed result files; regenerate it with "
        "`bench leaderboard leaderboard/results -o LEADERBOARD.md`"
    )

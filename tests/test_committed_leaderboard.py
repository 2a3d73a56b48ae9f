"""The committed leaderboard: its board (markdown, JSON, HTML) is regenerated from the committed result files, and every
committed result carries a passed verification report for exactly its content.

Re-evaluating the committed networks (`bench verify leaderboard/results --no-report`, ~1 min per
file) is its own step of the README's test command, after pytest, not a test here."""

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.results import find_result_files, load_result, read_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "leaderboard" / "results"


@pytest.mark.slow
def test_committed_leaderboard_matches_the_committed_results(monkeypatch, capsys):
    """LEADERBOARD.md, leaderboard/leaderboard.json and leaderboard/index.html, exactly as CI checks them."""
    monkeypatch.chdir(ROOT)
    code = main(["leaderboard", "leaderboard/results", "--check"])
    assert code == 0, capsys.readouterr().err  # names each stale file and the command that regenerates it


@pytest.mark.parametrize("path", find_result_files(RESULTS), ids=lambda p: p.name)
def test_committed_result_has_a_passed_verification_report(path):
    report = read_report(path)
    assert report is not None and report.passed, f"no passed verification report beside {path.name}"
    assert report.integrity == load_result(path).integrity, f"{path.name}'s verification report is for other content"


def _estimates(node: object) -> list[dict]:
    """Every Estimate-shaped object (value, low, high) anywhere in the board's JSON."""
    if isinstance(node, dict):
        found = [node] if {"value", "low", "high"} <= node.keys() else []
        return found + [e for child in node.values() for e in _estimates(child)]
    if isinstance(node, list):
        return [e for child in node for e in _estimates(child)]
    return []


def test_every_interval_of_the_committed_board_contains_its_point():
    """Issue 23: the bias-corrected intervals of every committed row hold their point estimate."""
    board = json.loads((ROOT / "leaderboard" / "leaderboard.json").read_text())
    with_intervals = [e for e in _estimates(board) if e["low"] is not None]
    assert len(with_intervals) >= 36  # nominal, robust mean and gap of 12 rows at least
    for estimate in with_intervals:
        assert estimate["low"] <= estimate["value"] <= estimate["high"], estimate


def test_the_readmes_pictures_are_drawn_from_the_committed_results():
    """docs/make_figures.py --check, as CI checks LEADERBOARD.md: each picture's inputs (result
    digests and plotting code; the HTML page) are those it was drawn from."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    assert spec is not None and spec.loader is not None
    make_figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_figures)
    assert make_figures.stale() == [], f"regenerate: {make_figures.COMMAND}"

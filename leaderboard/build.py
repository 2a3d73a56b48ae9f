"""Compile validated result files into the leaderboard and render it as markdown.

Every number is recomputed from the per-(network, distribution) accuracies and per-example bits
of the files (leaderboard.rows builds the row model; stored aggregates are never read). Runs are
ranked only against runs of the same protocol (dataset, model, ratio grid, training and
retraining recipes, delta) and the same suites. The output is a pure function of the files (fixed
bootstrap seed, sorted keys), so a committed LEADERBOARD.md can be compared byte for byte with a
regenerated one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.reports.markdown import escape, table
from bench.results import find_result_files, load_results, read_report, report_vouches_for, sample_vouched_for
from bench.results.schema import RunResult
from bench.results.uncertainty import replicate_key
from leaderboard.rows import (
    BOOTSTRAP_SAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    Board,
    Protocol,
    PrunerInfo,
    SuiteBreakdown,
    build_board,
    http_url,
)
from leaderboard.text import (
    columns,
    definitions,
    interval_note,
    pct,
    severity_label,
)

log = logging.getLogger(__name__)


def main_table(section: Protocol, verified_column: bool) -> str:
    """One row per pruner, in rank order (leaderboard.text.columns)."""
    shown = columns(verified_column)
    rows = [[escape(c.text(row)) if c.untrusted else c.text(row) for c in shown] for row in section.rows]
    return table(rows, [c.header for c in shown])


def _link(label: str, target: str | None) -> str:
    """A markdown link if `target` is a plain http(s) URL, else the escaped text (– if absent)."""
    if target is None:
        return "–"
    url = http_url(target)
    return f"[{label}]({url})" if url else escape(target)


def pruner_table(pruners: list[PrunerInfo]) -> str:
    """Each pruner's metadata as recorded in the result files (bench.results.schema.PrunerIdentity)."""
    rows = [
        [escape(p.name), escape(p.display_name) if p.display_name else "–", _link("paper", p.paper),
         _link("code", p.code_url), escape(", ".join(p.versions)) or "–",
         escape(json.dumps(p.options, sort_keys=True)) if p.options else "–"]
        for p in pruners
    ]
    return table(rows, ["pruner", "name", "paper", "code", "version", "options"])


def suite_tables(breakdown: SuiteBreakdown) -> list[str]:
    """P per corruption (mean over severities) and per severity (mean over corruptions), one row per pruner."""
    suite = escape(breakdown.suite)
    parts = [
        "",
        f"### Suite {suite}: P per corruption (%, mean over severities and seeds)",
        "",
        table([[escape(r.pruner), *map(pct, r.by_corruption), pct(r.mean)] for r in breakdown.rows],
              ["pruner", *(escape(c) for c in breakdown.corruptions), "mean"]),
    ]
    if len(breakdown.severities) > 1:
        parts += [
            "",
            f"### Suite {suite}: P per severity (%, mean over corruptions and seeds)",
            "",
            table([[escape(r.pruner), *map(pct, r.by_severity), pct(r.mean)] for r in breakdown.rows],
                  ["pruner", *(f"severity {severity_label(s)}" for s in breakdown.severities), "mean"]),
        ]
    return parts


def protocol_section(board: Board, section: Protocol, breakdown: bool) -> list[str]:
    parts = [
        "",
        f"## {escape(section.dataset)} · {escape(section.model)} · suites: {escape(', '.join(section.suites) or 'none')}",
        "",
        f"Protocol `{section.protocol}`: {escape(section.description)}; seeds {section.seeds}.",
        "",
        main_table(section, board.verified_column),
        "",
        interval_note(board, section),
        "",
        "Pruners (as recorded in the result files):",
        "",
        pruner_table(section.pruners),
    ]
    if breakdown:
        for suite in section.breakdowns:
            parts += suite_tables(suite)
        if any(len(s.severities) > 1 for s in section.breakdowns):
            parts += ["", "P per (corruption, severity): the heatmaps of the HTML board and the cells of the JSON "
                      "document (`bench leaderboard --html`, `--json`)."]
    return parts


def render_markdown(board: Board, *, breakdown: bool = True) -> str:
    """The board as markdown: one section per protocol; with `breakdown`, P per corruption and per
    severity for every suite."""
    note = (f"\n{board.skipped} invalid result file{'s' * (board.skipped != 1)} skipped (`bench leaderboard "
            "--strict` lists them).\n") if board.skipped else ""
    if not board.protocols:
        found = "No valid result files." if board.skipped else "No result files found."
        return f"# prunebench leaderboard\n\n{found}\n" + note
    parts = ["# prunebench leaderboard", "",
             *(f"* **{term}**: {meaning}" for term, meaning in definitions(board.verified_column))]
    for section in board.protocols:
        parts += protocol_section(board, section, breakdown)
    return "\n".join(parts) + "\n" + note


def render_leaderboard(
    results: Sequence[RunResult],
    *,
    breakdown: bool = False,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
    verified: set[str] | None = None,
    skipped: int = 0,
) -> str:
    """Markdown of `results` (leaderboard.rows.build_board, then render_markdown). `verified`: the
    integrity digests of files that passed `bench verify`; given, a "verified" column shows per row
    how many of its seeds' files passed (k/n). `skipped`: invalid result files left out (noted)."""
    board = build_board(results, verified=verified, skipped=skipped, samples=samples, seed=seed,
                        confidence=confidence)
    return render_markdown(board, breakdown=breakdown)


def verification_marks(paths: Sequence[Path], results: Sequence[RunResult]) -> tuple[set[str], set[str]]:
    """The integrity digests of the results whose `bench verify` report beside them passed for exactly
    their content and networks (bench.results.report_vouches_for), and those of the results whose
    report is a passing `--sample K` one instead (bench.results.sample_vouched_for)."""
    verified: set[str] = set()
    sampled: set[str] = set()
    for path, result in zip(paths, results):
        report = read_report(path)
        if report_vouches_for(path, result, report):
            verified.add(result.integrity)
        elif sample_vouched_for(path, result, report) is not None:
            sampled.add(result.integrity)
    return verified, sampled


@dataclass(frozen=True)
class Leaderboard:
    board: Board
    markdown: str
    skipped: tuple[str, ...]  # one line `<file>: <what is wrong>` per result file left out
    notes: tuple[str, ...] = ()  # one line per run that several files hold, counted once


def compile_leaderboard(
    folder: Path, *, breakdown: bool = True, verified_only: bool = False,
    test_set_sizes: Mapping[str, int] | None = None, first: Path | None = None,
) -> Leaderboard:
    """Validate every result file under `folder` (bench.results.load_results; `test_set_sizes`
    bounds n_examples per dataset) and build the board of the valid ones; the invalid ones are left
    out and listed, so one bad file never breaks the board. `first`: a result file whose protocol's
    section comes first (the run just finished)."""
    kept, errors, notes = load_results(find_result_files(folder), test_set_sizes)
    verified, sampled = verification_marks([path for path, _ in kept], [result for _, result in kept])
    if verified_only:
        kept = [(path, result) for path, result in kept if result.integrity in verified]
    board = build_board([result for _, result in kept], files=[path.relative_to(folder).as_posix() for path, _ in kept],
                        verified=verified, sampled=sampled, skipped=len(errors))
    own = next((replicate_key(result) for path, result in kept if first is not None and path == Path(first)), None)
    if own is not None:
        def is_own(section: Protocol) -> bool:
            return (section.dataset, section.model, tuple(section.suites), section.protocol) == (
                own.dataset, own.model, tuple(own.suites), own.protocol)

        board = board.model_copy(update={"protocols": sorted(board.protocols, key=lambda s: not is_own(s))})
    return Leaderboard(board, render_markdown(board, breakdown=breakdown), tuple(errors), tuple(notes))


def build_leaderboard(
    folder: Path, *, breakdown: bool = True, verified_only: bool = False,
    test_set_sizes: Mapping[str, int] | None = None, first: Path | None = None,
) -> str:
    """The markdown of compile_leaderboard; each file left out is logged as a warning (one line)."""
    board = compile_leaderboard(folder, breakdown=breakdown, verified_only=verified_only, test_set_sizes=test_set_sizes,
                                first=first)
    for line in board.skipped:
        log.warning(line)
    return board.markdown

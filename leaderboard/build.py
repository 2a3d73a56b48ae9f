"""Compile validated result files into a ranked markdown leaderboard.

Every number is recomputed from the per-(network, distribution) accuracies and per-example bits
of the files; stored aggregates are never read. Runs are ranked only against runs of the same
protocol (dataset, model, ratio grid, training and retraining recipes, delta) and the same suites.
The output is a pure function of the files (fixed bootstrap seed, sorted keys), so a committed
LEADERBOARD.md can be compared byte for byte with a regenerated one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, pstdev

from bench.markdown import escape, table
from bench.results import find_result_files, load_results, read_report
from bench.schema import PARENT, PrunerMetrics, RunResult
from bench.uncertainty import (
    Interval,
    PotentialIntervals,
    ReplicateKey,
    bootstrap_pruners,
    group_replicates,
    has_hits,
    replicate_metrics,
)

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95

log = logging.getLogger(__name__)


def pct(value: float) -> str:
    """A fraction as a percentage with one decimal; never "-0.0" from float noise."""
    return f"{round(100 * value, 1) + 0.0:.1f}"


def percent(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    mean = fmean(present)
    return pct(mean) if len(present) == 1 else f"{pct(mean)} ± {pct(pstdev(present))}"


def with_interval(interval: Interval | None) -> str:
    if interval is None:
        return "–"
    return f"{pct(interval.estimate)} [{pct(interval.low)}, {pct(interval.high)}]"


def _metrics(results: Sequence[RunResult]) -> dict[str, list[PrunerMetrics]]:
    """Pruner -> its recomputed metrics in each of its replicates (one file per seed)."""
    pruners = sorted({n.pruner for r in results for n in r.networks if n.pruner != PARENT})
    return {p: [m for _, m in replicate_metrics(results, p)] for p in pruners}


def _verified_counts(results: Sequence[RunResult], verified: set[str]) -> dict[str, str]:
    """Pruner -> "k/n": how many of its n replicate files passed `bench verify`."""
    pruners = sorted({n.pruner for r in results for n in r.networks if n.pruner != PARENT})
    counts = {}
    for pruner in pruners:
        files = [r for r, _ in replicate_metrics(results, pruner)]
        counts[pruner] = f"{sum(r.integrity in verified for r in files)}/{len(files)}"
    return counts


def _ranked(metrics: dict[str, list[PrunerMetrics]]) -> list[str]:
    """Pruners by robust P mean, then nominal P (point estimates), then name."""

    def key(pruner: str) -> tuple[float, float, str]:
        robust = [m.robust_potential_mean for m in metrics[pruner] if m.robust_potential_mean is not None]
        return (-(fmean(robust) if robust else -1.0), -fmean(m.nominal_potential for m in metrics[pruner]), pruner)

    return sorted(metrics, key=key)


def _gap_cell(values: list[PrunerMetrics], intervals: PotentialIntervals | None) -> str:
    if intervals is None or intervals.gap is None:
        return percent([m.nominal_potential - m.robust_potential_mean if m.robust_potential_mean is not None else None
                        for m in values])
    return f"{with_interval(intervals.gap)}, p = {intervals.gap_p_value:.3f}"


def group_table(
    ranked: list[str], metrics: dict[str, list[PrunerMetrics]], intervals: dict[str, PotentialIntervals] | None,
    verified: dict[str, str] | None = None,
) -> str:
    rows = []
    for rank, pruner in enumerate(ranked, start=1):
        values = metrics[pruner]
        found = intervals.get(pruner) if intervals else None
        rows.append([
            str(rank),
            escape(pruner),
            str(len(values)),
            with_interval(found.nominal) if found else percent([m.nominal_potential for m in values]),
            with_interval(found.robust_mean) if found else percent([m.robust_potential_mean for m in values]),
            percent([m.robust_potential_min for m in values]),
            _gap_cell(values, found),
            *([verified[pruner]] if verified is not None else []),
        ])
    headers = ["rank", "pruner", "seeds", "nominal P (%)", "robust P mean (%)", "robust P min (%)", "gap (pp)",
               *(["verified"] if verified is not None else [])]
    return table(rows, headers)


def interval_note(
    intervals: dict[str, PotentialIntervals] | None, samples: int, seed: int, confidence: float, rows: int | None = None
) -> str:
    """The note below a group's table; `rows`: how many rows it has (some may lack intervals)."""
    if not intervals:
        return ("Cells are mean ± std over seeds; no bootstrap intervals because some result files of this "
                "protocol carry no per-example hits.")
    partial = rows is not None and len(intervals) < rows
    return (
        f"Brackets: {100 * confidence:g} % bootstrap percentile intervals over {samples} resamples of the test "
        "images (paired: every network of a run is scored on the same resampled images) and of the seeds "
        f"(bootstrap seed {seed}). p: two-sided bootstrap p-value of gap = 0 (at least {2 / (samples + 1):.3f} with "
        f"{samples} resamples). Robust P min: mean ± std over seeds."
        + (" Rows without brackets: mean ± std over seeds, because some of their result files carry no "
           "per-example hits." if partial else "")
    )


def _severity_label(severity: int | None) -> str:
    return "–" if severity is None else str(severity)


def suite_tables(suite: str, ranked: list[str], metrics: dict[str, list[PrunerMetrics]], result: RunResult) -> list[str]:
    """P per corruption (mean over severities), then per (corruption, severity); %, mean over seeds."""
    dists = [d for d in result.distributions if d.suite == suite and not d.nominal]
    corruptions = list(dict.fromkeys(d.corruption or d.name for d in dists))
    severities = sorted({d.severity for d in dists}, key=lambda s: (s is None, s or 0))
    cells = {
        (p, d.corruption or d.name, d.severity): fmean(m.potential_by_distribution[d.name] for m in metrics[p])
        for p in ranked
        for d in dists
    }

    def mean_over(pruner: str, corruption: str | None) -> str:
        values = [v for (p, c, _), v in cells.items() if p == pruner and corruption in (None, c)]
        return pct(fmean(values))

    means = [[escape(p), *(mean_over(p, c) for c in corruptions), mean_over(p, None)] for p in ranked]
    parts = [
        "",
        f"### Suite {escape(suite)}: P per corruption (%, mean over severities and seeds)",
        "",
        table(means, ["pruner", *(escape(c) for c in corruptions), "mean"]),
    ]
    if len(severities) > 1:
        rows = [
            [escape(p), _severity_label(s),
             *(pct(cells[(p, c, s)]) if (p, c, s) in cells else "–" for c in corruptions)]
            for p in ranked
            for s in severities
        ]
        parts += [
            "",
            f"### Suite {escape(suite)}: P per corruption and severity (%, mean over seeds)",
            "",
            table(rows, ["pruner", "severity", *(escape(c) for c in corruptions)]),
        ]
    return parts


def protocol_line(result: RunResult) -> str:
    cfg = result.config
    ratios = ", ".join(f"{r:.3f}" for r in cfg.target_ratios)
    return (
        f"ratios [{ratios}]; parent {cfg.train.epochs} epochs, retrain {cfg.retrain.epochs} epochs per step; "
        f"delta = {100 * cfg.delta:g} %; {len(result.distributions) - 1} shifted test sets"
        + ("; error = 1 - mIoU (dataset-level)" if result.metric == "miou" else "")
    )


def group_section(
    key: ReplicateKey, members: list[RunResult], breakdown: bool, samples: int, seed: int, confidence: float,
    verified: set[str] | None = None,
) -> list[str]:
    metrics = _metrics(members)
    ranked = _ranked(metrics)
    # a pruner gets intervals when every file of its row carries per-example hits, whatever the other rows' do
    with_hits = [p for p in ranked if all(has_hits(r, p) for r, _ in replicate_metrics(members, p))]
    intervals = bootstrap_pruners(members, samples, confidence, seed, with_hits) if with_hits else None
    seeds = sorted({r.config.seed for r in members})
    parts = [
        "",
        f"## {escape(key.dataset)} · {escape(key.model)} · suites: {escape(', '.join(key.suites) or 'none')}",
        "",
        f"Protocol `{key.protocol}`: {escape(protocol_line(members[0]))}; seeds {seeds}.",
        "",
        group_table(ranked, metrics, intervals, None if verified is None else _verified_counts(members, verified)),
        "",
        interval_note(intervals, samples, seed, confidence, len(ranked)),
    ]
    if breakdown:
        suites = dict.fromkeys(d.suite for d in members[0].distributions if not d.nominal)
        for suite in suites:
            parts += suite_tables(suite, ranked, metrics, members[0])
    return parts


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
    """Markdown: one section per (dataset, model, suites, protocol), aggregates with bootstrap
    intervals and, with `breakdown`, P per (corruption, severity) for every suite. `verified`: the
    integrity digests of files that passed `bench verify`; given, a "verified" column shows per row
    how many of its seeds' files passed (k/n). `skipped`: invalid result files left out (noted)."""
    note = (f"\n{skipped} invalid result file{'s' * (skipped != 1)} skipped (`bench leaderboard --strict` lists "
            "them).\n") if skipped else ""
    if not results:
        return "# prunebench leaderboard\n\nNo result files found.\n" + note
    parts = [
        "# prunebench leaderboard",
        "",
        "P(δ, D): largest measured prune ratio with error on D within δ of the unpruned parent's error on D. "
        "Nominal P uses the clean test set; robust P is the mean (and min) of P over the shifted test sets. "
        "Gap = nominal P − robust P mean. Rows are ranked by robust P mean, only within one protocol. "
        "Seeds count distinct seeds (one result file per pruner and seed)."
        + (" Verified: how many of a row's result files passed `bench verify` (every saved network re-evaluated, "
           "every per-example hit compared) for exactly their content." if verified is not None else ""),
    ]
    for key, members in group_replicates(results).items():
        parts += group_section(key, members, breakdown, samples, seed, confidence, verified)
    return "\n".join(parts) + "\n" + note


def validate_files(paths: Sequence[Path], test_set_sizes: Mapping[str, int] | None = None) -> list[str]:
    """One line `<file>: <what is wrong>` per invalid result file (unreadable, not a regular file, too
    large, not JSON, off-schema, edited, inconsistent, or at odds with its replicate group:
    bench.results.load_results); [] if all pass."""
    return load_results(paths, test_set_sizes)[1]


def verified_digests(paths: Sequence[Path], results: Sequence[RunResult]) -> set[str]:
    """Integrity digests of the results whose `bench verify` report beside them passed for exactly
    their content (bench.verify.report_path)."""
    verified = set()
    for path, result in zip(paths, results):
        report = read_report(path)
        if report is not None and report.passed and report.integrity == result.integrity:
            verified.add(result.integrity)
    return verified


@dataclass(frozen=True)
class Leaderboard:
    markdown: str
    skipped: tuple[str, ...]  # one line `<file>: <what is wrong>` per result file left out


def compile_leaderboard(
    folder: Path, *, breakdown: bool = True, verified_only: bool = False,
    test_set_sizes: Mapping[str, int] | None = None,
) -> Leaderboard:
    """Validate every result file under `folder` (bench.results.load_results; `test_set_sizes`
    bounds n_examples per dataset) and render the leaderboard of the valid ones; the invalid ones
    are left out and listed, so one bad file never breaks the board."""
    kept, errors = load_results(find_result_files(folder), test_set_sizes)
    paths, results = [path for path, _ in kept], [result for _, result in kept]
    verified = verified_digests(paths, results)
    if verified_only:
        results = [r for r in results if r.integrity in verified]
    markdown = render_leaderboard(results, breakdown=breakdown, verified=verified, skipped=len(errors))
    return Leaderboard(markdown, tuple(errors))


def build_leaderboard(
    folder: Path, *, breakdown: bool = True, verified_only: bool = False,
    test_set_sizes: Mapping[str, int] | None = None,
) -> str:
    """The markdown of compile_leaderboard; each file left out is logged as a warning (one line)."""
    board = compile_leaderboard(folder, breakdown=breakdown, verified_only=verified_only, test_set_sizes=test_set_sizes)
    for line in board.skipped:
        log.warning(line)
    return board.markdown

"""The leaderboard's row model: every number of the board, computed once from validated result files.

The markdown (leaderboard.build), the JSON document (this model, dumped) and the HTML page
(leaderboard.html) are all rendered from one `Board`, so they cannot disagree. Fractions stay
fractions here (0.5 = 50 %); renderers format them. The model is versioned (`schema_version`) and
strict (unknown fields are errors), so `load_board` validates a JSON document against it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean, pstdev
from typing import Any, Final, Literal

from bench.results.metrics import prune_potential
from bench.results.schema import EXTERNAL, PARENT, PrunerMetrics, RunResult, Strict
from bench.results.uncertainty import (
    BOOTSTRAP_SAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    INTERVAL_METHOD,
    Interval,
    PotentialIntervals,
    ReplicateKey,
    bootstrap_pruners,
    group_replicates,
    has_hits,
    pruner_steps,
    replicate_metrics,
)

BOARD_FORMAT: Final = "prunebench-leaderboard"
BOARD_SCHEMA_VERSION: Final = 1


class Estimate(Strict):
    """A fraction: the point estimate (mean over seeds) with a bootstrap interval, or else the
    standard deviation over seeds (when there are several), or neither."""

    value: float
    low: float | None = None
    high: float | None = None
    std: float | None = None


class FirstFailure(Strict):
    """One seed's first failing prune ratio (None: no step of the cascade fails) and the shifted
    test sets that fail there."""

    seed: int
    ratio: float | None
    distributions: list[str]


class PrunerInfo(Strict):
    """What the result files record about a pruner (bench.results.schema.PrunerIdentity); None where the
    pruner declares nothing."""

    name: str
    display_name: str | None = None
    paper: str | None = None
    code_url: str | None = None
    versions: list[str]  # "<distribution> <version>", one per distinct version among the row's files
    options: dict[str, Any] = {}


class Row(Strict):
    rank: int
    pruner: str
    seeds: list[int]
    files: list[str]  # the row's result files, relative to the board's results folder ([] if unknown)
    verified: int | None  # how many of `files` passed `bench verify`; None when not checked
    sampled: int = 0  # how many of the others passed `bench verify --sample K` (K drawn pairs, every hit of each)
    parent_clean_accuracy: Estimate
    parent_shifted_accuracy: Estimate | None  # mean over the shifted test sets
    nominal_p: Estimate
    robust_p: Estimate | None  # mean of P over the shifted test sets
    gap: Estimate | None  # nominal P - robust P
    gap_p_value: float | None
    first_failure: Estimate | None  # over the seeds that fail at all; None if none fails
    first_failure_by_seed: list[FirstFailure]


class SuiteRow(Strict):
    pruner: str
    cells: list[list[float | None]]  # [corruption][severity]: P, mean over seeds
    by_corruption: list[float]  # mean over severities
    by_severity: list[float]  # mean over corruptions
    mean: float


class SuiteBreakdown(Strict):
    suite: str
    corruptions: list[str]
    severities: list[int | None]
    rows: list[SuiteRow]  # in rank order


class Protocol(Strict):
    dataset: str
    model: str
    suites: list[str]
    protocol: str  # RunConfig.protocol_hash
    description: str
    seeds: list[int]
    metric: Literal["top1", "miou"]
    intervals: Literal["all", "partial", "none"]  # which rows carry bootstrap intervals
    rows: list[Row]
    pruners: list[PrunerInfo]  # in rank order
    breakdowns: list[SuiteBreakdown]


class Bootstrap(Strict):
    samples: int
    seed: int
    confidence: float
    method: str = INTERVAL_METHOD  # bench.results.uncertainty.bias_corrected_interval


class Board(Strict):
    """The whole leaderboard: one `Protocol` per (dataset, model, suites, protocol hash)."""

    format: Literal["prunebench-leaderboard"] = BOARD_FORMAT
    schema_version: Literal[1] = BOARD_SCHEMA_VERSION
    bootstrap: Bootstrap
    verified_column: bool
    skipped: int  # invalid result files left out
    protocols: list[Protocol]


def load_board(path: Path) -> Board:
    """Read and validate a leaderboard JSON document (raises pydantic.ValidationError if off-schema)."""
    return Board.model_validate_json(path.read_text(encoding="utf-8"))


_HTTP_URL = re.compile(r"https?://[^\s()<>\[\]`'\"\\|]+")


def http_url(text: str) -> str | None:
    """`text` if it is a plain http(s) URL that is safe inside a markdown link or an href, else None
    (a citation, or a hostile string: then rendered as escaped text, never as a link)."""
    return text if _HTTP_URL.fullmatch(text) else None


def estimate(values: Sequence[float], interval: Interval | None = None) -> Estimate:
    """Mean of per-seed values with the bootstrap interval if given, else their std (several seeds)."""
    if interval is not None:
        return Estimate(value=interval.estimate, low=interval.low, high=interval.high)
    return Estimate(value=fmean(values), std=pstdev(values) if len(values) > 1 else None)


def first_failure(result: RunResult, pruner: str) -> FirstFailure:
    """The smallest measured prune ratio of the cascade at which some shifted test set D fails the
    prune-potential test (error on D > the parent's error on D + δ), and which sets fail there.

    A set's first failing step is the one after its monotone-rule P(δ, D) (bench.results.metrics), so the
    pass test is the metric's own.
    """
    steps = pruner_steps(result, pruner)
    ratios = [n.prune_ratio for n in steps]
    failing: dict[str, float] = {}
    for dist in (d for d in result.distributions if not d.nominal):
        errors = [1.0 - n.accuracy[dist.name] for n in steps]
        potential = prune_potential(ratios, errors, 1.0 - result.parent.accuracy[dist.name], result.config.delta,
                                    "monotone")
        later = [r for r in ratios if r > potential]
        if later:
            failing[dist.name] = min(later)
    first = min(failing.values(), default=None)
    return FirstFailure(seed=result.config.seed, ratio=first,
                        distributions=sorted(name for name, ratio in failing.items() if ratio == first))


def _ranked(metrics: dict[str, list[PrunerMetrics]]) -> list[str]:
    """Pruners by robust P mean, then nominal P (point estimates), then name."""

    def key(pruner: str) -> tuple[float, float, str]:
        robust = [m.robust_potential_mean for m in metrics[pruner] if m.robust_potential_mean is not None]
        return (-(fmean(robust) if robust else -1.0), -fmean(m.nominal_potential for m in metrics[pruner]), pruner)

    return sorted(metrics, key=key)


def _row(
    rank: int, pruner: str, pairs: list[tuple[RunResult, PrunerMetrics]], found: PotentialIntervals | None,
    names: dict[int, str], verified: set[str] | None, sampled: set[str],
) -> Row:
    results, metrics = [r for r, _ in pairs], [m for _, m in pairs]
    shifted = [[d.name for d in r.distributions if not d.nominal] for r in results]
    robust = [m.robust_potential_mean for m in metrics if m.robust_potential_mean is not None]
    failures = [first_failure(r, pruner) for r in results]
    failed = [f.ratio for f in failures if f.ratio is not None]
    return Row(
        rank=rank,
        pruner=pruner,
        seeds=[r.config.seed for r in results],
        files=[names[id(r)] for r in results if id(r) in names],
        verified=None if verified is None else sum(r.integrity in verified for r in results),
        sampled=sum(r.integrity in sampled and r.integrity not in (verified or ()) for r in results),
        parent_clean_accuracy=estimate([r.parent.accuracy[r.nominal.name] for r in results]),
        parent_shifted_accuracy=estimate([fmean(r.parent.accuracy[d] for d in s) for r, s in zip(results, shifted)])
        if all(shifted) else None,
        nominal_p=estimate([m.nominal_potential for m in metrics], found.nominal if found else None),
        robust_p=estimate(robust, found.robust_mean if found else None) if robust else None,
        gap=estimate([m.nominal_potential - r for m, r in zip(metrics, robust)], found.gap if found else None)
        if robust else None,
        gap_p_value=found.gap_p_value if found else None,
        first_failure=estimate(failed) if failed else None,
        first_failure_by_seed=failures,
    )


def _pruner_info(pruner: str, results: list[RunResult]) -> PrunerInfo:
    identities = [r.provenance.pruners[pruner] for r in results if pruner in r.provenance.pruners]
    if not identities:
        return PrunerInfo(name=pruner, versions=[])
    newest = identities[-1]
    return PrunerInfo(
        name=pruner, display_name=newest.display_name, paper=newest.paper, code_url=newest.code_url,
        versions=sorted({f"{i.distribution} {i.version}" for i in identities}), options=newest.options,
    )


def _mean_potential(metrics: list[PrunerMetrics], distribution: str | None) -> float | None:
    """P on `distribution`, mean over seeds; None for a (corruption, severity) the suite lacks."""
    return None if distribution is None else fmean(m.potential_by_distribution[distribution] for m in metrics)


def _present_mean(values: Sequence[float | None]) -> float:
    return fmean([v for v in values if v is not None])


def _breakdown(suite: str, ranked: list[str], metrics: dict[str, list[PrunerMetrics]], result: RunResult) -> SuiteBreakdown:
    dists = [d for d in result.distributions if d.suite == suite and not d.nominal]
    corruptions = list(dict.fromkeys(d.corruption or d.name for d in dists))
    severities = sorted({d.severity for d in dists}, key=lambda s: (s is None, s or 0))
    where = {(d.corruption or d.name, d.severity): d.name for d in dists}
    rows = []
    for pruner in ranked:
        cells = [[_mean_potential(metrics[pruner], where.get((c, s))) for s in severities] for c in corruptions]
        by_severity = [[line[i] for line in cells] for i in range(len(severities))]
        rows.append(SuiteRow(
            pruner=pruner, cells=cells, by_corruption=[_present_mean(line) for line in cells],
            by_severity=[_present_mean(column) for column in by_severity],
            mean=_present_mean([v for line in cells for v in line]),
        ))
    return SuiteBreakdown(suite=suite, corruptions=corruptions, severities=severities, rows=rows)


def protocol_line(result: RunResult) -> str:
    cfg = result.config
    ratios = ", ".join(f"{r:.3f}" for r in cfg.target_ratios)
    networks = (f"external networks (bench eval; parent {cfg.parent_checkpoint_sha256[:12]})"  # no grid, no training
                if cfg.protocol == EXTERNAL and cfg.parent_checkpoint_sha256 else
                f"ratios [{ratios}]; parent {cfg.train.epochs} epochs, retrain {cfg.retrain.epochs} epochs per step"
                + ("; propagation until nothing changes (fixpoint)" if cfg.propagation == "fixpoint" else ""))
    return (
        f"{networks}; "
        f"delta = {100 * cfg.delta:g} %; {len(result.distributions) - 1} shifted test sets"
        + ("; error = 1 - mIoU (dataset-level)" if result.metric == "miou" else "")
    )


def _protocol(
    key: ReplicateKey, members: list[RunResult], names: dict[int, str], verified: set[str] | None,
    sampled: set[str], settings: Bootstrap,
) -> Protocol:
    pruners = sorted({n.pruner for r in members for n in r.networks if n.pruner != PARENT})
    pairs = {p: replicate_metrics(members, p) for p in pruners}
    metrics = {p: [m for _, m in pairs[p]] for p in pruners}
    ranked = _ranked(metrics)
    # a pruner gets intervals when every file of its row carries per-example hits, whatever the other rows' do
    with_hits = [p for p in ranked if all(has_hits(r, p) for r, _ in pairs[p])]
    intervals = (bootstrap_pruners(members, settings.samples, settings.confidence, settings.seed, with_hits)
                 if with_hits else {})
    suites = dict.fromkeys(d.suite for d in members[0].distributions if not d.nominal)
    return Protocol(
        dataset=key.dataset, model=key.model, suites=list(key.suites), protocol=key.protocol,
        description=protocol_line(members[0]), seeds=sorted({r.config.seed for r in members}),
        metric=members[0].metric,
        intervals="all" if len(with_hits) == len(ranked) else "partial" if with_hits else "none",
        rows=[_row(rank, p, pairs[p], intervals.get(p), names, verified, sampled)
              for rank, p in enumerate(ranked, start=1)],
        pruners=[_pruner_info(p, [r for r, _ in pairs[p]]) for p in ranked],
        breakdowns=[_breakdown(suite, ranked, metrics, members[0]) for suite in suites],
    )


def build_board(
    results: Sequence[RunResult],
    *,
    files: Sequence[str] | None = None,
    verified: set[str] | None = None,
    sampled: set[str] | None = None,
    skipped: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> Board:
    """The board of validated results. `files`: each result's path relative to the results folder
    (for the rows' links); `verified`: integrity digests of the files that passed `bench verify`
    (None: no "verified" column); `sampled`: integrity digests of the files that passed `bench
    verify --sample K` (counted beside the verified ones); `skipped`: how many invalid files were left out."""
    names = {id(r): f for r, f in zip(results, files or ())}
    settings = Bootstrap(samples=samples, seed=seed, confidence=confidence)
    return Board(
        bootstrap=settings, verified_column=verified is not None, skipped=skipped,
        protocols=[_protocol(key, members, names, verified, sampled or set(), settings)
                   for key, members in group_replicates(results).items()],
    )

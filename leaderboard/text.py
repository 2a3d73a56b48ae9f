"""The board's plain text, shared by the markdown and HTML renderers: cell formats and notes.

Cells are plain text (never escaped here): each renderer escapes for its own format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import fmean

from leaderboard.rows import Board, Estimate, Protocol, Row


def definitions(verified_column: bool) -> list[tuple[str, str]]:
    """(term, meaning) of every column: the legend above the board."""
    return [
        ("P(δ, D)", "the largest measured prune ratio with error on D within δ of the unpruned parent's error on D. "
         "Nominal P uses the clean test set; robust P mean is the mean of P over the shifted test sets; "
         "gap = nominal P − robust P mean. Rows are ranked by robust P mean, only within one protocol."),
        ("Parent clean / shifted acc", "the unpruned parent's accuracy on the clean test set and its mean accuracy "
         "over the shifted test sets."),
        ("First failure", "the smallest measured prune ratio of a pruner's cascade at which the error on at least one "
         "shifted test set D exceeds the parent's error on D by more than δ (the test of P(δ, D)), mean ± std over "
         "the seeds, then how many shifted sets fail there (mean over those seeds, rounded); \"none\" when no step "
         "fails on any shifted set, \"(k/n seeds)\" when only k of n seeds fail."),
        ("Seeds", "distinct seeds (one result file per pruner and seed)."),
        *([("Verified", "how many of a row's result files passed `bench verify` (every saved network re-evaluated, "
            "every per-example hit compared) for exactly their content; \"+ k sampled\": k more passed "
            "`bench verify --sample K` (K (network, test set) pairs drawn, every hit of each compared, every "
            "network's size checked).")] if verified_column else []),
    ]


def pct(value: float) -> str:
    """A fraction as a percentage with one decimal; never "-0.0" from float noise."""
    return f"{round(100 * value, 1) + 0.0:.1f}"


def cell(value: Estimate | None) -> str:
    """`mean [low, high]` with a bootstrap interval, `mean ± std` over seeds, or the bare mean; – if absent."""
    if value is None:
        return "–"
    if value.low is not None and value.high is not None:
        return f"{pct(value.value)} [{pct(value.low)}, {pct(value.high)}]"
    return pct(value.value) if value.std is None else f"{pct(value.value)} ± {pct(value.std)}"


def gap_cell(row: Row) -> str:
    return cell(row.gap) + ("" if row.gap_p_value is None else f", p = {row.gap_p_value:.3f}")


def first_failure_cell(row: Row) -> str:
    if row.first_failure is None:
        return "none"
    failing = [f for f in row.first_failure_by_seed if f.ratio is not None]
    seeds = len(row.first_failure_by_seed)
    sets = round(fmean(len(f.distributions) for f in failing))
    return (cell(row.first_failure) + ("" if len(failing) == seeds else f" ({len(failing)}/{seeds} seeds)")
            + f", {sets} set{'s' * (sets != 1)}")


def first_failure_detail(row: Row) -> str:
    """Per seed: the first failing ratio and the shifted test sets failing there."""
    return "; ".join(
        f"seed {f.seed}: " + ("no failure" if f.ratio is None else f"{pct(f.ratio)} % ({', '.join(f.distributions)})")
        for f in row.first_failure_by_seed
    )


def verified_cell(row: Row) -> str:
    return f"{row.verified}/{len(row.seeds)}" + (f" + {row.sampled} sampled" if row.sampled else "")


def verified_sort_value(row: Row) -> float | None:
    """Files verified in full first, then by how many passed a sample."""
    return None if row.verified is None else row.verified + row.sampled / 1000


def severity_label(severity: int | None) -> str:
    return "–" if severity is None else str(severity)


def interval_note(board: Board, section: Protocol) -> str:
    """The note below a protocol's table: what its brackets and ± mean."""
    if section.intervals == "none":
        return ("Cells are mean ± std over seeds; no bootstrap intervals because some result files of this "
                "protocol carry no per-example hits.")
    samples, seed = board.bootstrap.samples, board.bootstrap.seed
    return (
        f"Brackets: {100 * board.bootstrap.confidence:g} % {board.bootstrap.method} bootstrap intervals (Efron 1981; "
        f"they always contain their point) over {samples} resamples "
        "of the test images (paired: every network of a run is scored on the same resampled images) and of the seeds "
        f"(bootstrap seed {seed}). p: two-sided bootstrap p-value of gap = 0 (at least {2 / (samples + 1):.3f} with "
        f"{samples} resamples). Parent accuracies and first failure: mean ± std over seeds."
        + (" Rows without brackets: mean ± std over seeds, because some of their result files carry no "
           "per-example hits." if section.intervals == "partial" else "")
    )


def _value(estimate: Estimate | None) -> float | None:
    return None if estimate is None else estimate.value


@dataclass(frozen=True)
class Column:
    """A column of a protocol's main table: its header, its cell text and the value it sorts by."""

    header: str
    text: Callable[[Row], str]
    sort_value: Callable[[Row], float | str | None]
    untrusted: bool = False  # text comes from a result file: renderers escape it
    detail: Callable[[Row], str] | None = None  # the full story behind the cell (the HTML page's tooltip)


def columns(verified_column: bool) -> list[Column]:
    """The main table's columns, in order; the same for every renderer."""
    return [
        Column("rank", lambda r: str(r.rank), lambda r: r.rank),
        Column("pruner", lambda r: r.pruner, lambda r: r.pruner, untrusted=True),
        Column("seeds", lambda r: str(len(r.seeds)), lambda r: len(r.seeds)),
        Column("parent clean acc (%)", lambda r: cell(r.parent_clean_accuracy),
               lambda r: r.parent_clean_accuracy.value),
        Column("parent shifted acc (%)", lambda r: cell(r.parent_shifted_accuracy),
               lambda r: _value(r.parent_shifted_accuracy)),
        Column("nominal P (%)", lambda r: cell(r.nominal_p), lambda r: r.nominal_p.value),
        Column("robust P mean (%)", lambda r: cell(r.robust_p), lambda r: _value(r.robust_p)),
        Column("gap (pp)", gap_cell, lambda r: _value(r.gap)),
        Column("first failure (%), sets failing", first_failure_cell, lambda r: _value(r.first_failure),
               detail=first_failure_detail),
        *([Column("verified", verified_cell, verified_sort_value)] if verified_column else []),
    ]

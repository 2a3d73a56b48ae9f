"""Compile validated result files into a ranked markdown leaderboard.

Every number is recomputed from the per-(network, distribution) accuracies of the files;
stored aggregates are never read. Runs are ranked only against runs of the same protocol
(dataset, model, ratio grid, training and retraining recipes, delta) and the same suites.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, pstdev

from tabulate import tabulate

from bench.metrics import derive
from bench.results import ResultFileError, find_result_files, load_result
from bench.schema import RunResult

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def escape(text: str) -> str:
    """Render an untrusted string inert inside a markdown table cell."""
    flat = " ".join(str(text).split())  # newlines would end the row
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


@dataclass(frozen=True)
class GroupKey:
    dataset: str
    model: str
    suites: tuple[str, ...]
    protocol: str


def group_key(result: RunResult) -> GroupKey:
    return GroupKey(result.config.dataset, result.config.model, result.config.suites, result.config.protocol_hash())


def percent(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    mean = 100 * fmean(present)
    return f"{mean:.1f}" if len(present) == 1 else f"{mean:.1f} ± {100 * pstdev(present):.1f}"


def group_table(results: list[RunResult]) -> str:
    rows: dict[str, list[tuple[float, float | None, float | None]]] = defaultdict(list)
    for result in results:
        for m in derive(result.distributions, result.networks, result.config.delta).pruners:
            rows[m.pruner].append((m.nominal_potential, m.robust_potential_mean, m.robust_potential_min))

    def ranking(item: tuple[str, list[tuple[float, float | None, float | None]]]) -> tuple[float, float]:
        robust = [r for _, r, _ in item[1] if r is not None]
        return (-(fmean(robust) if robust else -1.0), -fmean(n for n, _, _ in item[1]))

    table = []
    for rank, (pruner, values) in enumerate(sorted(rows.items(), key=ranking), start=1):
        nominal = [n for n, _, _ in values]
        robust_mean = [r for _, r, _ in values]
        gaps = [n - r if r is not None else None for n, r, _ in values]
        table.append(
            [rank, escape(pruner), len(values), percent(nominal), percent(robust_mean),
             percent([m for _, _, m in values]), percent(gaps)]
        )
    headers = ["rank", "pruner", "seeds", "nominal P (%)", "robust P mean (%)", "robust P min (%)", "gap (pp)"]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def protocol_line(result: RunResult) -> str:
    cfg = result.config
    ratios = ", ".join(f"{r:.3f}" for r in cfg.target_ratios)
    return (
        f"ratios [{ratios}]; parent {cfg.train.epochs} epochs, retrain {cfg.retrain.epochs} epochs per step; "
        f"delta = {100 * cfg.delta:g} %; {len(result.distributions) - 1} shifted test sets"
    )


def render_leaderboard(results: Sequence[RunResult]) -> str:
    if not results:
        return "# prunebench leaderboard\n\nNo result files found.\n"
    groups: dict[GroupKey, list[RunResult]] = defaultdict(list)
    for result in results:
        groups[group_key(result)].append(result)
    parts = [
        "# prunebench leaderboard",
        "",
        "P(δ, D): largest measured prune ratio with error on D within δ of the unpruned parent's error on D. "
        "Nominal P uses the clean test set; robust P is the mean (and min) of P over the shifted test sets. "
        "Gap = nominal P − robust P mean. Rows are ranked by robust P mean, only within one protocol.",
    ]
    for key in sorted(groups, key=lambda k: (k.dataset, k.model, k.suites, k.protocol)):
        members = groups[key]
        seeds = sorted({r.config.seed for r in members})
        parts += [
            "",
            f"## {escape(key.dataset)} · {escape(key.model)} · suites: {escape(', '.join(key.suites) or 'none')}",
            "",
            f"Protocol `{key.protocol}`: {escape(protocol_line(members[0]))}; seeds {seeds}.",
            "",
            group_table(members),
        ]
    return "\n".join(parts) + "\n"


def build_leaderboard(folder: Path) -> str:
    """Validate every result file under `folder` and render the leaderboard."""
    results, errors = [], []
    for path in find_result_files(folder):
        try:
            results.append(load_result(path))
        except ResultFileError as exc:
            errors.append(str(exc))
    if errors:
        raise ResultFileError("invalid result files:\n" + "\n".join(errors))
    return render_leaderboard(results)

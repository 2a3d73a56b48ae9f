"""Figures from result files alone: accuracy vs prune ratio, prune potential per distribution,
Δ excess error vs prune ratio with a regression through the origin; and from `bench analyze`
report files: similarity to the parent vs noise level ε, and the informative-features matrix.

Uses matplotlib's object API with the Agg canvas (no pyplot), so it never touches the caller's
global backend or figure registry. Every figure is written as PNG and PDF.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.figures import save_figure, text
from bench.schema import PARENT, Distribution, PrunerMetrics, RunResult
from bench.uncertainty import (
    ReplicateKey,
    group_replicates,
    pruner_steps,
    replicate_metrics,
    replicates,
)

if TYPE_CHECKING:
    from bench.analysis import Report

MAX_SIZE_IN = 40.0


def regression_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y = a·x (no intercept): sum(xy) / sum(xx)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape:
        raise ValueError(f"{xs.size} x values but {ys.size} y values")
    denominator = float(np.dot(xs, xs))
    if denominator == 0.0:
        raise ValueError("the slope through the origin needs at least one nonzero x")
    return float(np.dot(xs, ys)) / denominator


def _pruners(results: Sequence[RunResult]) -> list[str]:
    """Sorted, so that every figure gives a pruner the same color whatever the file order."""
    return sorted({n.pruner for r in results for n in r.networks if n.pruner != PARENT})


def default_panels(result: RunResult) -> list[str]:
    """The clean test set and, per corruption, its most severe level (each plain test set as is)."""
    worst: dict[tuple[str, str], Distribution] = {}
    for dist in result.distributions:
        if dist.nominal:
            continue
        key = (dist.suite, dist.corruption or dist.name)
        if key not in worst or (dist.severity or 0) >= (worst[key].severity or 0):
            worst[key] = dist
    return [result.nominal.name, *(d.name for d in worst.values())]


def _curve(results: Sequence[RunResult], pruner: str, dist: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cascade step, over the files that ran `pruner`: mean measured ratio, mean and std accuracy."""
    runs = [pruner_steps(r, pruner) for r in replicates(results, pruner)]
    depth = min(len(steps) for steps in runs)
    ratios = np.array([[steps[i].prune_ratio for i in range(depth)] for steps in runs])
    accuracy = np.array([[steps[i].accuracy[dist] for i in range(depth)] for steps in runs])
    return ratios.mean(axis=0), accuracy.mean(axis=0), accuracy.std(axis=0)


def accuracy_figure(results: Sequence[RunResult], distributions: Sequence[str] | None = None) -> Figure:
    """One panel per distribution: accuracy vs measured prune ratio per pruner, parent and parent − δ
    as horizontal lines (a step above the dotted line counts for P)."""
    names = list(distributions) if distributions is not None else default_panels(results[0])
    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    fig = Figure(figsize=(4 * columns, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    delta = results[0].config.delta
    for ax, name in zip(axes, names):
        parent = fmean({r.config.seed: r.parent.accuracy[name] for r in results}.values())
        ax.axhline(100 * parent, color="black", linestyle="--", linewidth=1, label="parent")
        ax.axhline(100 * (parent - delta), color="black", linestyle=":", linewidth=1, label="parent − δ")
        for pruner in _pruners(results):
            ratio, mean, std = _curve(results, pruner, name)
            ax.errorbar(100 * ratio, 100 * mean, yerr=100 * std if len(results) > 1 else None,
                        marker="o", markersize=3, capsize=2, label=text(pruner))
        ax.set_title(text(name), fontsize=9)
        ax.set_xlabel("prune ratio (%)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(6, len(labels)))
    return fig


def potential_figure(results: Sequence[RunResult]) -> Figure:
    """Prune potential per distribution as horizontal bars (a benchmark has dozens of test sets):
    one bar group per distribution, nominal and robust mean on top, one color per pruner; mean
    over seeds, error bars from the lowest to the highest seed."""
    shifted = [d.name for d in results[0].distributions if not d.nominal]
    groups = ["nominal", *(["robust mean"] if shifted else []), *shifted]
    pruners = _pruners(results)
    height = 0.8 / len(pruners)
    fig = Figure(figsize=(8, min(MAX_SIZE_IN, 1.5 + 0.05 * len(groups) * (len(pruners) + 1))), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, pruner in enumerate(pruners):
        values = np.array([_potentials(m, results[0].nominal.name, shifted) for _, m in replicate_metrics(results, pruner)])
        mean = values.mean(axis=0)
        spread = 100 * np.stack([mean - values.min(axis=0), values.max(axis=0) - mean]) if len(values) > 1 else None
        position = np.arange(len(groups)) - 0.4 + (i + 0.5) * height
        ax.barh(position, 100 * mean, height, xerr=spread, capsize=1, error_kw={"elinewidth": 0.8, "ecolor": "0.3"},
                label=text(pruner))
    if shifted:
        ax.axhline(1.5, color="gray", linewidth=0.8)
    ax.set_yticks(np.arange(len(groups)), [text(g) for g in groups], fontsize=7)
    ax.set_ylim(len(groups) - 0.4, -0.6)  # first group on top
    ax.set_xlim(0, 100)
    ax.set_xlabel("prune potential P (%)")
    ax.set_title(f"P(δ = {100 * results[0].config.delta:g} %, D) per test distribution")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncols=min(6, len(pruners)))
    return fig


def _potentials(m: PrunerMetrics, nominal: str, shifted: Sequence[str]) -> list[float]:
    robust: list[float] = []
    if shifted:
        assert m.robust_potential_mean is not None  # set wherever there are shifted distributions
        robust = [m.robust_potential_mean]
    return [m.potential_by_distribution[nominal], *robust, *(m.potential_by_distribution[d] for d in shifted)]


def excess_error_figure(results: Sequence[RunResult]) -> Figure:
    """Δ excess error of every pruned network (all steps, all seeds) vs its measured prune ratio,
    with each pruner's least-squares line through the origin; slopes in the legend."""
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for pruner in _pruners(results):
        x, y = [], []
        for result, m in replicate_metrics(results, pruner):
            x += [n.prune_ratio for n in pruner_steps(result, pruner)]
            y += m.delta_excess_error
        slope = regression_slope(x, y) if any(x) else 0.0
        (points,) = ax.plot(100 * np.array(x), 100 * np.array(y), "o", markersize=4, alpha=0.7)
        line = np.array([0.0, max(x)])
        ax.plot(100 * line, 100 * slope * line, color=points.get_color(), label=f"{text(pruner)} (slope {slope:.3f})")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("prune ratio (%)")
    ax.set_ylabel("Δ excess error (pp)")
    ax.set_title("excess error of pruned network − parent's")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _slug(key: ReplicateKey) -> str:
    name = f"{key.dataset}-{key.model}-{'+'.join(key.suites) or 'nominal'}"
    return f"{re.sub(r'[^A-Za-z0-9.+-]+', '_', name)[:80]}-{key.protocol}"


FIGURES: dict[str, Callable[[Sequence[RunResult]], Figure]] = {
    "accuracy": accuracy_figure,
    "potential": potential_figure,
    "excess-error": excess_error_figure,
}


def make_plots(results: Sequence[RunResult], out_dir: Path, reports: Mapping[str, Report] | None = None) -> list[Path]:
    """Every figure for every replicate group (protocol and suites) of `results`, and one figure per
    analysis report (`bench.analysis.load_reports`: name -> report); returns the files.

    Result figures are named `<dataset>-<model>-<suites>-<protocol>-<figure>.{png,pdf}`, report
    figures after the report, e.g. `<result stem>.similarity.{png,pdf}` (similarity to the parent
    vs ε) and `<result stem>.features.{png,pdf}` (informative-features matrix).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    used: set[str] = set()

    def unique(base: str) -> str:  # names that only differ in characters the slug replaced
        slug = base
        while slug in used:
            slug = f"{base}-{len(used)}"
        used.add(slug)
        return slug

    for key, members in group_replicates(results).items():
        slug = unique(_slug(key))
        for name, build in FIGURES.items():
            paths += save_figure(build(members), out_dir / f"{slug}-{name}")
    if reports:
        from bench.analysis import report_figure  # bench.analysis imports this module

        for name, report in sorted(reports.items()):
            stem = unique(re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip(".")[-120:] or "report")
            paths += save_figure(report_figure(report), out_dir / stem)
    return paths

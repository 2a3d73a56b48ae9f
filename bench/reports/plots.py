"""Figures from result files alone, for a paper: accuracy vs prune ratio per corruption family
with bootstrap bands, prune potential as a pruner x distribution heatmap, Δ excess error vs prune
ratio with a regression through the origin. `make_plots` also saves the figures of `bench analyze`
reports (similarity to the parent vs noise level ε, the informative-features matrix), drawn by
bench.analysis.report_figure, which `bench plot` hands it (analysis is a higher layer).

Every number is recomputed from the accuracies and per-example hits of validated result files
(bench.results.metrics, bench.results.uncertainty: the leaderboard's numbers and intervals). Style, palette and
saving come from bench.reports.figures; every figure is written as PNG and PDF.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.core.io import seed_for
from bench.corruptions import FAMILIES
from bench.reports.figures import (
    PARENT_STYLE,
    PrunerStyle,
    counted,
    figure_legend,
    new_figure,
    pruner_styles,
    save_figure,
    styled,
    text,
)
from bench.results.schema import PARENT, Distribution, NetworkResult, RunResult
from bench.results.uncertainty import (
    BOOTSTRAP_SAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    INTERVAL_METHOD,
    ReplicateKey,
    bias_corrected_interval,
    bootstrap_pruners,
    group_replicates,
    has_hits,
    pruner_steps,
    replicate_metrics,
    replicates,
    resampled_accuracy,
)

OTHER_FAMILY = "other"  # shifted test sets that are no known corruption (e.g. CIFAR-10.1)

# Δ excess error is plotted only for networks whose nominal accuracy is at most this many
# percentage points below their parent's: near chance every error is ~90 %, so excess error
# shrinks to 0 and a collapsed network would look robust
ACCURACY_FLOOR_PP = 5.0

# the bootstrap of bench.results.uncertainty.bootstrap_pruners with its defaults, as on the leaderboard
BAND_LABEL = f"{100 * CONFIDENCE:g} % bootstrap band"
INTERVAL_NOTE = (f"{100 * CONFIDENCE:g} % {INTERVAL_METHOD} bootstrap intervals over test images and seeds "
                 f"({BOOTSTRAP_SAMPLES} resamples)")


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
    return sorted({n.pruner for r in results for n in r.networks if n.pruner != PARENT})


def _styles(results: Sequence[RunResult], styles: Mapping[str, PrunerStyle] | None) -> Mapping[str, PrunerStyle]:
    return styles if styles is not None else pruner_styles(_pruners(results))


def family(dist: Distribution) -> str:
    """The corruption family of a shifted test set: noise, blur, weather, digital or other."""
    return FAMILIES.get(dist.corruption or "", OTHER_FAMILY)


@dataclass(frozen=True)
class Panel:
    """Shifted test sets of one suite, family and severity, whose accuracies a panel averages."""

    suite: str
    severity: int | None
    names: tuple[str, ...]
    corruptions: tuple[str, ...]

    @property
    def title(self) -> str:
        level = "" if self.severity is None else f", severity {self.severity}"
        return text(f"{self.suite}{level} ({counted(len(self.names), 'test set')})")


def family_panels(result: RunResult, severity: int | None = None) -> dict[str, list[Panel]]:
    """Family -> its panels (one per suite and severity, or only `severity`), families and panels sorted."""
    grouped: dict[str, dict[tuple[str, int | None], list[Distribution]]] = defaultdict(lambda: defaultdict(list))
    for dist in result.distributions:
        if not dist.nominal and (severity is None or dist.severity == severity):
            grouped[family(dist)][(dist.suite, dist.severity)].append(dist)
    return {
        fam: [
            Panel(suite, sev, tuple(d.name for d in dists), tuple(dict.fromkeys(d.corruption or d.name for d in dists)))
            for (suite, sev), dists in sorted(panels.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))
        ]
        for fam, panels in sorted(grouped.items())
    }


@dataclass(frozen=True)
class Curve:
    """Mean over seeds of a cascade's measured ratios and accuracies (parent first, at ratio 0),
    with bias-corrected percentile bootstrap bounds (None without per-example hits)."""

    ratio: np.ndarray
    accuracy: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None


Draws = Mapping[int, Mapping[str, np.ndarray]]  # id(result) -> distribution -> (networks, samples)


def resample_all(results: Sequence[RunResult], samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> Draws | None:
    """Every network's accuracies on resampled test images, per file (bench.results.uncertainty's image
    resamples, so the draws are the leaderboard's); None unless every file has per-example hits."""
    if not all(has_hits(r) for r in results):
        return None
    return {id(r): resampled_accuracy(r, r.networks, samples, seed) for r in results}


def _position(result: RunResult, network: NetworkResult) -> int:
    """Index of `network` in result.networks (the rows of its resampled accuracies)."""
    return next(i for i, n in enumerate(result.networks) if n is network)


def accuracy_curve(results: Sequence[RunResult], pruner: str, names: Sequence[str], draws: Draws | None = None,
                   seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> Curve:
    """Accuracy averaged over the test sets `names` along `pruner`'s cascade (only the parent for
    PARENT), mean over the seeds that ran it. Bounds: each resample draws the seeds with
    replacement (as bench.results.uncertainty does) and averages their image-resampled accuracies."""
    runs = replicates(results, pruner)
    depth = min(len(pruner_steps(r, pruner)) for r in runs) if pruner != PARENT else 0
    rows = [[_position(r, n) for n in [r.parent, *pruner_steps(r, pruner)[:depth]]] for r in runs]
    ratio = np.mean([[r.networks[i].prune_ratio for i in idx] for r, idx in zip(runs, rows)], axis=0)
    accuracy = np.mean([[fmean(r.networks[i].accuracy[n] for n in names) for i in idx] for r, idx in zip(runs, rows)],
                       axis=0)
    if draws is None:
        return Curve(ratio, accuracy, None, None)
    stacked = np.stack([np.mean([draws[id(r)][n][idx] for n in names], axis=0) for r, idx in zip(runs, rows)])
    samples = stacked.shape[-1]
    # keyed by the seeds drawn from, not the pruner: curves over the same files share their seed draws (paired)
    seeds = tuple(r.config.seed for r in runs)
    picks = np.random.default_rng(seed_for(seed, "seeds", seeds)).integers(0, len(runs), size=(samples, len(runs)))
    averaged = stacked[picks, :, np.arange(samples)[:, None]].mean(axis=1)  # (samples, networks)
    low, high = bias_corrected_interval(accuracy, averaged, confidence)
    return Curve(ratio, accuracy, low, high)


def _draw_curve(ax: Axes, curve: Curve, style: PrunerStyle, label: str) -> None:
    order = np.argsort(curve.ratio, kind="stable")  # cascades are sorted already; external networks may not be
    ax.plot(100 * curve.ratio[order], 100 * curve.accuracy[order], color=style.color, marker=style.marker, label=label)
    if curve.low is not None and curve.high is not None:
        ax.fill_between(100 * curve.ratio[order], 100 * curve.low[order], 100 * curve.high[order], color=style.color,
                        alpha=0.2, linewidth=0)


def _draw_parent(ax: Axes, parent: Curve) -> None:
    yerr = None
    if parent.low is not None and parent.high is not None:
        yerr = 100 * np.array([parent.accuracy - parent.low, parent.high - parent.accuracy])
    ax.errorbar(100 * parent.ratio, 100 * parent.accuracy, yerr=yerr, color=PARENT_STYLE.color,
                marker=PARENT_STYLE.marker, markersize=5, capsize=2, linestyle="none", label="parent", zorder=3)


def _caption(results: Sequence[RunResult], draws: Draws | None, what: str) -> str:
    seeds = len({r.config.seed for r in results})
    bands = (f"Bands: {INTERVAL_NOTE}." if draws is not None else "No bands: some result files lack per-example hits.")
    return f"{what}, mean over {counted(seeds, 'seed')}. {bands}"


@styled
def accuracy_figure(results: Sequence[RunResult], fam: str, panels: Sequence[Panel], draws: Draws | None = None,
                    styles: Mapping[str, PrunerStyle] | None = None, severity: int | None = None) -> Figure:
    """Accuracy vs measured prune ratio on one corruption family: one panel per suite and severity,
    one line per pruner from the parent (black, at ratio 0), bootstrap bands around each line."""
    colours = _styles(results, styles)
    columns = min(5, len(panels))
    rows = -(-len(panels) // columns)
    fig = new_figure(2.6 * columns, 2.2 * rows + 0.8)
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    for ax, panel in zip(axes, panels):
        parent = accuracy_curve(results, PARENT, panel.names, draws)
        for pruner in _pruners(results):
            _draw_curve(ax, accuracy_curve(results, pruner, panel.names, draws), colours[pruner], text(pruner))
        _draw_parent(ax, parent)
        ax.set_title(panel.title)
        ax.set_xlabel("prune ratio (%)")
        ax.set_xlim(left=-3)
    for ax in axes[::columns]:
        ax.set_ylabel("accuracy (%)")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    levels = "every severity" if severity is None else f"severity {severity}"
    fig.suptitle(text(f"Accuracy vs prune ratio: {fam} corruptions, {levels}"))
    handles, labels = axes[0].get_legend_handles_labels()
    if draws is not None:
        handles.append(Patch(color="0.5", alpha=0.3))
        labels.append(BAND_LABEL)
    corruptions = ", ".join(dict.fromkeys(c for p in panels for c in p.corruptions))
    figure_legend(fig, handles, labels, loc="outside lower center",
                  title=text(_caption(results, draws, f"Accuracy averaged over {corruptions}")), title_fontsize=6)
    return fig


def potential_columns(result: RunResult) -> dict[str, list[str]]:
    """Heatmap columns: nominal, then one per corruption of each suite (its severities averaged)."""
    suites = {d.suite for d in result.distributions if not d.nominal}
    columns: dict[str, list[str]] = {"nominal": [result.nominal.name]}
    for dist in result.distributions:
        if not dist.nominal:
            label = dist.corruption or dist.name
            columns.setdefault(f"{dist.suite}: {label}" if len(suites) > 1 else label, []).append(dist.name)
    return columns


def potential_table(results: Sequence[RunResult], pruners: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Column labels and a (pruners, columns) matrix of P: nominal, robust mean (when there are
    shifted test sets), then per corruption the mean over its severities; means over seeds."""
    columns = potential_columns(results[0])
    labels = [*columns][:1] + (["robust mean"] if len(columns) > 1 else []) + [*columns][1:]
    rows = []
    for pruner in pruners:
        found = [m for _, m in replicate_metrics(results, pruner)]
        per_column = {c: fmean(fmean(m.potential_by_distribution[n] for n in names) for m in found)
                      for c, names in columns.items()}
        if len(columns) > 1:
            per_column["robust mean"] = fmean(m.robust_potential_mean or 0.0 for m in found)
        rows.append([per_column[c] for c in labels])
    return labels, np.array(rows)


@styled
def potential_figure(results: Sequence[RunResult]) -> Figure:
    """Nominal and robust prune potential as a pruner x distribution heatmap, values printed in
    the cells; nominal and robust mean with the leaderboard's bootstrap intervals."""
    pruners = _pruners(results)
    labels, values = potential_table(results, pruners)
    with_hits = [p for p in pruners if all(has_hits(r, p) for r in replicates(results, p))]
    intervals = bootstrap_pruners(results, pruners=with_hits) if with_hits else {}
    fig = new_figure(max(4.0, 1.6 + 0.55 * len(labels)), 1.9 + 0.45 * len(pruners))
    ax = fig.add_subplot()
    image = ax.imshow(100 * values, cmap="cividis", vmin=0, vmax=100, aspect="auto")
    ax.grid(False)
    for i, pruner in enumerate(pruners):
        for j, label in enumerate(labels):
            cell = f"{100 * values[i, j]:.0f}"
            found = intervals.get(pruner)
            interval = {"nominal": found.nominal if found else None,
                        "robust mean": found.robust_mean if found else None}.get(label)
            if interval is not None:
                cell += f"\n[{100 * interval.low:.0f}, {100 * interval.high:.0f}]"
            ax.text(j, i, cell, ha="center", va="center", fontsize=6,
                    color="black" if values[i, j] > 0.55 else "white")
    ax.set_xticks(range(len(labels)), [text(c) for c in labels], rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(pruners)), [text(p) for p in pruners])
    if len(labels) > 1:
        ax.axvline(1.5, color="white", linewidth=2)  # summaries | per corruption
    fig.colorbar(image, ax=ax, label="prune potential P (%)", shrink=0.9)
    seeds = len({r.config.seed for r in results})
    ax.set_title(text(f"P(δ = {100 * results[0].config.delta:g} %, D) per pruner and test distribution"))
    note = f"\nBrackets: {INTERVAL_NOTE}, as on the leaderboard." if intervals else ""
    ax.set_xlabel(f"test distribution (corruptions: mean over severities; every cell: mean over {seeds} "
                  f"seed{'s' * (seeds != 1)}){note}")
    return fig


@dataclass(frozen=True)
class ExcessPoints:
    """One pruner's networks above the accuracy floor: measured ratios and Δ excess errors."""

    ratio: list[float]
    delta_excess: list[float]
    total: int  # networks before the floor


def excess_points(results: Sequence[RunResult], pruner: str, floor_pp: float = ACCURACY_FLOOR_PP) -> ExcessPoints:
    """Every network of `pruner` (all steps, all seeds) whose nominal accuracy is at most
    `floor_pp` percentage points below its own parent's."""
    x: list[float] = []
    y: list[float] = []
    total = 0
    for result, m in replicate_metrics(results, pruner):
        floor = result.parent.accuracy[result.nominal.name] - floor_pp / 100
        for net, delta_excess in zip(pruner_steps(result, pruner), m.delta_excess_error):
            total += 1
            if net.accuracy[result.nominal.name] >= floor:
                x.append(net.prune_ratio)
                y.append(delta_excess)
    return ExcessPoints(x, y, total)


@styled
def excess_error_figure(results: Sequence[RunResult], styles: Mapping[str, PrunerStyle] | None = None,
                        floor_pp: float = ACCURACY_FLOOR_PP) -> Figure:
    """Δ excess error vs measured prune ratio of the networks above the accuracy floor, with each
    pruner's least-squares line through the origin; slopes and kept counts in the legend."""
    colours = _styles(results, styles)
    fig = new_figure(4.8, 3.8)
    ax = fig.add_subplot()
    for pruner in _pruners(results):
        points = excess_points(results, pruner, floor_pp)
        style = colours[pruner]
        kept = f"{len(points.ratio)} of {counted(points.total, 'network')}"
        if not any(points.ratio):
            ax.plot([], [], color=style.color, marker=style.marker, label=text(f"{pruner} ({kept}, no slope)"))
            continue
        slope = regression_slope(points.ratio, points.delta_excess)
        ax.plot(100 * np.array(points.ratio), 100 * np.array(points.delta_excess), linestyle="none",
                color=style.color, marker=style.marker, alpha=0.8)
        line = np.array([0.0, max(points.ratio)])
        ax.plot(100 * line, 100 * slope * line, color=style.color, marker="none",
                label=text(f"{pruner} (slope {slope:.3f}, {kept})"))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("prune ratio (%)")
    ax.set_ylabel("Δ excess error (pp)")
    ax.set_title(f"Excess error of pruned network − parent's\nnetworks within {floor_pp:g} pp of their parent's "
                 "nominal accuracy")
    ax.legend(handles=[*ax.get_legend_handles_labels()[0],
                       Line2D([], [], color="0.4", label="least squares through the origin")])
    return fig


def _slug(key: ReplicateKey) -> str:
    name = f"{key.dataset}-{key.model}-{'+'.join(key.suites) or 'nominal'}"
    return f"{re.sub(r'[^A-Za-z0-9.+-]+', '_', name)[:80]}-{key.protocol}"


def result_figures(results: Sequence[RunResult], styles: Mapping[str, PrunerStyle] | None = None,
                   severity: int | None = None, floor_pp: float = ACCURACY_FLOOR_PP) -> dict[str, Figure]:
    """The figures of one replicate group by name: `accuracy-<family>` per corruption family,
    `potential` (heatmap) and `excess-error`."""
    draws = resample_all(results)
    figures = {
        f"accuracy-{fam}": accuracy_figure(results, fam, panels, draws, styles, severity)
        for fam, panels in family_panels(results[0], severity).items()
    }
    figures["potential"] = potential_figure(results)
    figures["excess-error"] = excess_error_figure(results, styles, floor_pp)
    return figures


def make_plots(results: Sequence[RunResult], out_dir: Path,
               report_figures: Mapping[str, Callable[[], Figure]] | None = None,
               severity: int | None = None, floor_pp: float = ACCURACY_FLOOR_PP) -> list[Path]:
    """Every figure for every replicate group (protocol and suites) of `results`, and the figure each
    of `report_figures` draws (name -> a function drawing it: analysis reports, see
    `bench.analysis.report_figure`); returns the files.

    Result figures are named `<dataset>-<model>-<suites>-<protocol>-<figure>.{png,pdf}` (figures:
    see result_figures), report figures after the report, e.g. `<result stem>.similarity.{png,pdf}`
    (similarity to the parent vs ε) and `<result stem>.features.{png,pdf}` (informative-features
    matrix). A pruner has the same colour in every figure of one call.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    used: set[str] = set()
    styles = pruner_styles(_pruners(results))

    def unique(base: str) -> str:  # names that only differ in characters the slug replaced
        slug = base
        while slug in used:
            slug = f"{base}-{len(used)}"
        used.add(slug)
        return slug

    for key, members in group_replicates(results).items():
        slug = unique(_slug(key))
        for name, fig in result_figures(members, styles, severity, floor_pp).items():
            paths += save_figure(fig, out_dir / f"{slug}-{name}")
    for name, draw in sorted((report_figures or {}).items()):
        stem = unique(re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip(".")[-120:] or "report")
        paths += save_figure(draw(), out_dir / stem)
    return paths

"""The analyses' figures: similarity to the parent against ε (`similarity_figure`) and the
informative-features matrix (`features_figure`), each saved as PNG + PDF by bench.reports.figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.analysis.networks import CONTROL
from bench.analysis.reports import FeatureReport, Report, SimilarityReport
from bench.reports.figures import save_figure, styled, text
from bench.results.schema import PARENT

__all__ = [
    "features_figure",
    "report_figure",
    "save_features_plot",
    "save_similarity_plot",
    "similarity_figure",
]


def _network_styles(labels: Sequence[str], pruners: Sequence[str]) -> list[dict[str, object]]:
    """Parent black, control grey, each pruner one colour map, darker with more pruning."""
    maps = ["Blues", "Oranges", "Greens", "Purples", "Reds", "YlOrBr", "PuRd", "Greys"]
    order = list(dict.fromkeys(p for p in pruners if p not in (PARENT, CONTROL)))
    counts = {p: pruners.count(p) for p in order}
    seen: dict[str, int] = {}
    styles: list[dict[str, object]] = []
    for label, pruner in zip(labels, pruners):
        if pruner == PARENT:
            styles.append({"color": "black", "linestyle": "--", "label": text(label)})
        elif pruner == CONTROL:
            styles.append({"color": "0.5", "linestyle": ":", "label": text(label)})
        else:
            seen[pruner] = seen.get(pruner, 0) + 1
            shade = 0.35 + 0.6 * seen[pruner] / counts[pruner]
            styles.append({"color": colormaps[maps[order.index(pruner) % len(maps)]](shade), "label": text(label)})
    return styles


@styled
def similarity_figure(report: SimilarityReport) -> Figure:
    """Agreement, softmax ℓ2 distance and noise prune potential against ε."""
    fig = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    eps = np.array(report.epsilons)
    pruners = [next(c.pruner for c in report.cells if c.network == n) for n in report.networks]
    for name, style in zip(report.networks, _network_styles(report.networks, pruners)):
        cells = [report.cell(name, e) for e in report.epsilons]
        axes[0].plot(eps, [100 * c.agreement for c in cells], marker="o", markersize=3, **style)
        axes[1].plot(eps, [c.softmax_l2 for c in cells], marker="o", markersize=3, **style)
    for pruner in dict.fromkeys(p.pruner for p in report.potentials):
        values = [100 * p.potential for p in report.potentials if p.pruner == pruner]
        axes[2].plot(eps, values, marker="o", markersize=3, label=text(pruner))
    titles = ("label agreement with parent (%)", "softmax ℓ2 distance to parent",
              f"noise P (δ = {100 * report.delta:g} %)")
    for ax, title in zip(axes, titles):
        ax.set_xlabel("ε (pixel scale [0, 1])")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[2].set_ylim(0, 100)
    axes[0].legend(fontsize=6, ncols=2)
    if report.potentials:
        axes[2].legend(fontsize=7)
    return fig


def save_similarity_plot(report: SimilarityReport, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf."""
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(similarity_figure(report), Path(stem))

@styled
def features_figure(report: FeatureReport) -> Figure:
    """Heatmap of the confidence matrix (rows: pixel source, columns: evaluated network)."""
    n = len(report.networks)
    size = min(20.0, 2.5 + 0.45 * n)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = 100 * np.array(report.matrix)
    image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    if n <= 30:
        for (row, col), value in np.ndenumerate(values):
            ax.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 60 else "white")
    labels = [text(name) for name in report.networks]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("evaluated network")
    ax.set_ylabel(f"pixels kept ({100 * report.keep_fraction:g} % of the row network's)")
    ax.set_title("true-class confidence (%)", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def save_features_plot(report: FeatureReport, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf."""
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(features_figure(report), Path(stem))


def report_figure(report: Report) -> Figure:
    """The figure of either kind of report (what `bench plot` draws for it)."""
    return similarity_figure(report) if isinstance(report, SimilarityReport) else features_figure(report)

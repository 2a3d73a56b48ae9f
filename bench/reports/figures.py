"""Figure helpers shared by every plot (result plots and analysis figures): one style, one
colour-blind-safe palette with one colour per pruner, safe labels, PNG + PDF."""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text
from matplotlib.typing import RcKeyType

__all__ = [
    "FORMATS",
    "OKABE_ITO",
    "PARENT_STYLE",
    "PNG_DPI",
    "STYLE",
    "PrunerStyle",
    "counted",
    "figure_legend",
    "fit_text",
    "new_figure",
    "pruner_styles",
    "save_figure",
    "styled",
    "text",
]

FORMATS = ("png", "pdf")
PNG_DPI = 200

# Okabe & Ito (2008), distinguishable under the common colour-vision deficiencies; black is kept
# for the parent network
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")

STYLE: dict[RcKeyType, Any] = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
}


@dataclass(frozen=True)
class PrunerStyle:
    """How one pruner is drawn in every figure."""

    color: str
    marker: str


PARENT_STYLE = PrunerStyle(color="black", marker="o")

P = ParamSpec("P")
R = TypeVar("R")


def styled(build: Callable[P, R]) -> Callable[P, R]:
    """Run a figure builder under STYLE (matplotlib reads rcParams when it creates each artist),
    and fit the text of the figure it returns to its page (fit_text)."""

    @functools.wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(STYLE):
            built = build(*args, **kwargs)
            if isinstance(built, Figure):
                fit_text(built)
            return built

    return wrapper


_SLACK = 0.96  # share of the figure's width a line of text may take


def _texts(fig: Figure) -> list[tuple[Text, float]]:
    """The text artists that may be wrapped, each with the width in pixels it may take: the
    suptitle, figure texts and legends the figure's, an axes' title and labels that axes' (a title
    wider than its panel runs into its neighbour or off the page)."""
    page = fig.bbox.width * _SLACK
    suptitle = getattr(fig, "_suptitle", None)  # matplotlib keeps the artist private
    found = [(t, page) for t in (suptitle, *fig.texts) if t is not None]
    legends = list(fig.legends)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        panel = max(ax.bbox.width, 0.1 * page)
        titles = (ax.title, getattr(ax, "_left_title", None), getattr(ax, "_right_title", None))
        found += [(t, panel) for t in (*titles, ax.xaxis.label) if t is not None]
        found.append((ax.yaxis.label, max(ax.bbox.height, 0.1 * page)))  # vertical: measured along its height
        legend = ax.get_legend()
        if legend is not None:
            legends.append(legend)
    for legend in legends:
        found += [(t, page) for t in (legend.get_title(), *legend.get_texts())]
    return [(t, limit) for t, limit in found if t.get_visible() and t.get_text()]


def _overflows(fig: Figure, renderer: Any) -> bool:
    box, width, height = fig.get_tightbbox(renderer), *fig.get_size_inches()
    return box.x0 < -1e-3 or box.y0 < -1e-3 or box.x1 > width + 1e-3 or box.y1 > height + 1e-3


def _wrap(artist: Text, renderer: Any, limit: float) -> bool:
    """Wrap `artist`'s lines at word boundaries to at most `limit` pixels along their direction
    (a vertical label's height); whether it changed."""
    box = artist.get_window_extent(renderer)
    extent = box.height if artist.get_rotation() % 180 == 90 else box.width
    if extent <= limit:
        return False
    lines = artist.get_text().split("\n")
    per_line = max(12, int(max(map(len, lines)) * limit / extent))
    wrapped = "\n".join(textwrap.fill(line, per_line) for line in lines)
    artist.set_text(wrapped)
    return True


def figure_legend(fig: Figure, handles: list[Any], labels: list[str], max_columns: int = 7,
                  **kwargs: Any) -> Legend:
    """A figure legend with as many columns (up to `max_columns`) as fit the figure's width, its
    title wrapped to it (a legend's columns are laid out once, when it is made: set_ncols later
    does not narrow it)."""
    limit = fig.bbox.width * _SLACK
    for columns in range(max(1, min(max_columns, len(labels))), 0, -1):
        legend = fig.legend(handles, labels, ncols=columns, **kwargs)
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        if _wrap(legend.get_title(), renderer, limit):
            fig.draw_without_rendering()
        if columns == 1 or legend.get_window_extent(renderer).width <= limit:
            return legend
        legend.remove()
    raise AssertionError("unreachable: one column always returns")


def fit_text(fig: Figure, rounds: int = 4) -> Figure:
    """Make every text of `fig` fit inside it: lines wider than the figure are wrapped at word
    boundaries until matplotlib's tight bounding box of the figure lies within its page
    (constrained layout then places what fits; by itself it never wraps, so a one-panel figure
    clipped its title, caption and legend). Legends are made narrow enough by figure_legend."""
    for _ in range(rounds):
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        if not _overflows(fig, renderer):
            break
        if not [artist for artist, limit in _texts(fig) if _wrap(artist, renderer, limit)]:
            break  # nothing left to wrap
    return fig


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on the Agg canvas (no pyplot: the caller's backend and figure
    registry are left alone)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def pruner_styles(pruners: Iterable[str]) -> dict[str, PrunerStyle]:
    """Colour and marker per pruner, by sorted name: figures drawn from the same set of pruners give
    each pruner the same colour whatever the file order. Past 7 pruners colours repeat with
    another marker."""
    names = sorted(set(pruners))
    return {
        name: PrunerStyle(OKABE_ITO[i % len(OKABE_ITO)], MARKERS[(i // len(OKABE_ITO) + i) % len(MARKERS)])
        for i, name in enumerate(names)
    }


def counted(count: int, noun: str) -> str:
    """'1 test set', '2 test sets': a count with its noun in the right number (plural: noun + s)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def text(value: str) -> str:
    """A string from a result file made safe as a matplotlib label: one line, no mathtext, and
    not hidden from legends (matplotlib skips labels that start with an underscore)."""
    flat = " ".join(str(value).split()).replace("$", r"\$")
    return f" {flat}" if flat.startswith("_") else flat


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write `stem`.png (PNG_DPI) and `stem`.pdf (without a creation date, so reruns are byte-stable)."""
    paths = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        metadata = {"CreationDate": None} if fmt == "pdf" else {}
        with matplotlib.rc_context(STYLE):
            fig.savefig(path, format=fmt, dpi=PNG_DPI, metadata=metadata)
        paths.append(path)
    return paths

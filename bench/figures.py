"""Figure helpers shared by every plot (result plots and analysis figures): one style, one
colour-blind-safe palette with one colour per pruner, safe labels, PNG + PDF."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.typing import RcKeyType

__all__ = [
    "FORMATS",
    "OKABE_ITO",
    "PARENT_STYLE",
    "PNG_DPI",
    "STYLE",
    "PrunerStyle",
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
    """Run a figure builder under STYLE (matplotlib reads rcParams when it creates each artist)."""

    @functools.wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(STYLE):
            return build(*args, **kwargs)

    return wrapper


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

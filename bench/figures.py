"""Figure helpers shared by every plot (result plots and analysis figures): safe labels, PNG + PDF."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

__all__ = ["FORMATS", "PNG_DPI", "save_figure", "text"]

FORMATS = ("png", "pdf")
PNG_DPI = 120


def text(value: str) -> str:
    """A string from a result file made safe as a matplotlib label: one line, no mathtext, and
    not hidden from legends (matplotlib skips labels that start with an underscore)."""
    flat = " ".join(str(value).split()).replace("$", r"\$")
    return f" {flat}" if flat.startswith("_") else flat


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf (PDF without a creation date, so reruns are byte-stable)."""
    paths = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        metadata = {"CreationDate": None} if fmt == "pdf" else {}
        fig.savefig(path, format=fmt, dpi=PNG_DPI, metadata=metadata)
        paths.append(path)
    return paths

"""The board as one self-contained static HTML page: inline CSS and JS, no network, works from file://.

Protocol sections with sortable main tables (leaderboard.text.columns, the markdown's columns),
a pruner and suite filter, a per-(corruption, severity) heatmap per suite, and links from every
row to its result files. Every string from a result file goes through Jinja's autoescaping.
"""

from __future__ import annotations

from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from matplotlib import colormaps
from matplotlib.colors import to_hex

from bench.reports.markdown import show_control_characters
from leaderboard.rows import Board, Row, http_url
from leaderboard.text import Column, columns, definitions, interval_note, pct, severity_label

HEATMAP = "viridis"  # perceptually uniform and colour-blind safe


def heat(value: float | None) -> str:
    """Inline CSS of a heatmap cell for a prune potential in [0, 1] (none for a missing cell)."""
    if value is None:
        return ""
    text = "#fff" if value < 0.6 else "#000"  # viridis is dark below ~0.6
    return f"background:{to_hex(colormaps[HEATMAP](value))};color:{text}"


def code_spans(text: str) -> Markup:
    """Markdown's `code` spans of a board note as <code> (the notes are written once, for the
    markdown board); everything else escaped."""
    parts = str(escape(visible(text))).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: leave the text as it is
        return Markup("`".join(parts))
    return Markup("".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts)))


def heat_legend(steps: int = 11) -> list[tuple[str, str]]:
    """The heatmap's colour scale as (label, inline CSS) swatches from 0 % to 100 % P."""
    return [(f"{100 * i // (steps - 1)}", heat(i / (steps - 1))) for i in range(steps)]


def sort_value(column: Column, row: Row) -> str:
    """The cell's data-sort attribute: a number or text; empty for a missing value (sorted last)."""
    value = column.sort_value(row)
    return "" if value is None else str(value)


def visible(value: object) -> object:
    """Every value the template prints, with control and format characters (ESC, BEL, the bidi
    override U+202E) shown as code points: HTML escaping leaves them, and they can disguise a name."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return show_control_characters(value, keep="\n\t")
    return value


def render_html(board: Board, results_href: str = "") -> str:
    """The page. `results_href`: the results folder as a URL relative to where the page is saved
    (ending in "/", or "" when the page sits in that folder), prefixed to every row's file links."""
    environment = Environment(loader=PackageLoader("leaderboard", "templates"), autoescape=select_autoescape(["html"]),
                              keep_trailing_newline=True, finalize=visible)
    environment.filters["zip"] = zip
    suites = sorted({suite for section in board.protocols for suite in section.suites})
    return environment.get_template("board.html").render(
        board=board, columns=columns(board.verified_column), suites=suites,
        definitions=definitions(board.verified_column), interval_note=interval_note, pct=pct,
        severity_label=severity_label, heat=heat, heat_legend=heat_legend(), sort_value=sort_value, code=code_spans,
        http_url=http_url, href=lambda file: quote(results_href + file),
    )

"""Markdown helpers shared by every report (leaderboard, analyses, compression tables)."""

from __future__ import annotations

import re
import unicodedata

from tabulate import tabulate

__all__ = ["escape", "table"]

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~&$])")


def escape(text: str) -> str:
    """Render an untrusted string inert inside a markdown table cell or heading."""
    flat = " ".join(str(text).split())  # newlines would end the row
    # control and format characters (ANSI escapes, bidi overrides) are shown as code points
    visible = "".join(f"\\u{ord(c):04x}" if unicodedata.category(c).startswith("C") else c for c in flat)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", visible)


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A GitHub-flavoured markdown table; cells are used as given (no number parsing)."""
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)

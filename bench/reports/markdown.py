"""Markdown helpers shared by every report (leaderboard, analyses, compression tables)."""

from __future__ import annotations

import re
import unicodedata

from tabulate import tabulate

__all__ = ["escape", "show_control_characters", "table"]

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~&$])")


def show_control_characters(text: str, keep: str = "") -> str:
    """`text` with control and format characters (ANSI escapes, BEL, bidi overrides such as U+202E)
    shown as code points `\\uXXXX`, except those in `keep`: they can disguise a name."""
    return "".join(c if c in keep or not unicodedata.category(c).startswith("C") else f"\\u{ord(c):04x}" for c in text)


def escape(text: str) -> str:
    """Render an untrusted string inert inside a markdown table cell or heading."""
    flat = " ".join(str(text).split())  # newlines would end the row
    return _MARKDOWN_SPECIAL.sub(r"\\\1", show_control_characters(flat))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A GitHub-flavoured markdown table; cells are used as given (no number parsing)."""
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)

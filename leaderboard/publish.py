"""Write the board's three renderings (markdown, JSON, HTML) or check committed copies against them.

The committed copies live at COMMITTED: LEADERBOARD.md at the repository root, the JSON document and
the HTML page beside the committed results in leaderboard/. CI regenerates all three from
leaderboard/results and fails naming every stale one (`bench leaderboard leaderboard/results --check`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.core.io import atomic_write_text
from leaderboard.html import render_html
from leaderboard.rows import Board


@dataclass(frozen=True)
class Outputs:
    """Where each rendering goes; None: not written."""

    markdown: Path | None = None
    json: Path | None = None
    html: Path | None = None


COMMITTED = Outputs(markdown=Path("LEADERBOARD.md"), json=Path("leaderboard/leaderboard.json"),
                    html=Path("leaderboard/index.html"))


def regenerate_command(results: Path, outputs: Outputs) -> str:
    """The `bench leaderboard` command that rewrites `outputs` from `results`."""
    flags = [("-o", outputs.markdown), ("--json", outputs.json), ("--html", outputs.html)]
    return " ".join(["bench leaderboard", str(results), *(f"{flag} {path}" for flag, path in flags if path)])


def render_json(board: Board) -> str:
    """The board as a JSON document (leaderboard.rows.Board; read back with load_board)."""
    return board.model_dump_json(indent=1) + "\n"


def results_href(results: Path, page: Path) -> str:
    """The results folder as a URL path relative to the folder of `page`, ending in "/" ("" if the same)."""
    relative = Path(os.path.relpath(results.resolve(), page.resolve().parent)).as_posix()
    return "" if relative == "." else relative + "/"


def render_outputs(board: Board, markdown: str, results: Path, outputs: Outputs) -> dict[Path, str]:
    """Path -> the text that belongs there, for every output asked for. `results`: the folder the
    board was built from (the HTML page links each row to its files there)."""
    rendered = {}
    if outputs.markdown:
        rendered[outputs.markdown] = markdown
    if outputs.json:
        rendered[outputs.json] = render_json(board)
    if outputs.html:
        rendered[outputs.html] = render_html(board, results_href(results, outputs.html))
    return rendered


def write_outputs(rendered: dict[Path, str]) -> None:
    for path, text in rendered.items():
        atomic_write_text(path, text)


def stale_outputs(rendered: dict[Path, str]) -> list[Path]:
    """The paths whose current content (missing or unreadable counts as stale) differs from `rendered`."""
    stale = []
    for path, text in rendered.items():
        try:
            current = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            current = None
        if current != text:
            stale.append(path)
    return stale

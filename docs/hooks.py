"""mkdocs hook: the command-line reference, generated from bench's argparse parsers at build time
(one section per command and subcommand, its help as `bench COMMAND --help` prints it), so the
reference never drifts from the code."""

from __future__ import annotations

import argparse
from typing import Any

from mkdocs.structure.files import File, Files

PAGE = "reference/cli.md"


def _sections(parser: argparse.ArgumentParser, depth: int = 2) -> list[str]:
    out = [f"{'#' * depth} `{parser.prog}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out += _sections(sub, depth + 1)
    return out


def cli_reference() -> str:
    from bench.cli import build_parser

    parser = build_parser()
    parser.prog = "bench"
    return "\n".join(["# Command line", "", "Generated from the parsers in `bench/cli/` when the site is built.", "",
                      *_sections(parser)])


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, PAGE, content=cli_reference()))
    return files

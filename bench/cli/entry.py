"""`bench`'s entry point: parse, dispatch to a command, and turn failures into one-line errors with
the exit codes of docs/errors.md.
"""

from __future__ import annotations

import logging
import sys
import traceback

from bench.cli.commands import COMMANDS
from bench.cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    from bench.core._allocator import tune_allocator
    from bench.pipeline.config import set_hub_policy

    tune_allocator()

    set_hub_policy(getattr(args, "pretrained", False))
    try:
        return COMMANDS[args.command](args)
    except Exception as exc:
        code, message = describe_error(exc)
        if code is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"bench {args.command}: error: {message}", file=sys.stderr)
        return code


MAX_SHOWN_INPUT = 80  # characters of a rejected value an error line repeats


def describe_error(exc: BaseException) -> tuple[int | None, str]:
    """Exit code and one-line message of a user-facing failure (docs/errors.md):
    2 = bad input or missing data, 1 = a failure during the run; (None, "") = a bug, re-raised."""
    from pydantic import ValidationError

    # Only the modules the command loaded can have raised their errors: looking them up in
    # sys.modules keeps torch out of the torch-free commands' error path (leaderboard, validate).
    def loaded(module: str, name: str) -> tuple[type, ...]:
        return (getattr(sys.modules[module], name),) if module in sys.modules else ()

    bad_input = (ValueError, LookupError, *loaded("bench.data.files", "DataMissing"))
    run_failure = (*loaded("bench.core.registry", "PluginError"), *loaded("bench.pruning", "NonFiniteWeights"),
                   *loaded("bench.pipeline.store", "CacheCorrupted"), *loaded("bench.results", "RejectedResult"))
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a check across fields: its message says what is wrong, the input is everything
            return 2, message
        shown = repr(first.get("input"))
        got = f" (got {shown})" if len(shown) <= MAX_SHOWN_INPUT else ""
        return 2, f"{'.'.join(str(part) for part in first['loc'])}: {message}{got}"
    if isinstance(exc, bad_input):
        return 2, str(exc)
    if isinstance(exc, run_failure):
        return 1, str(exc)
    if isinstance(exc, OSError):
        return 1, f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
    return None, ""



"""Command line: `bench run | plan | eval | list | data make-c | leaderboard | validate | verify | plot | analyze | compress`.

This package only parses arguments and hands them to the package; `bench --help` stays fast
because heavy modules (torch, matplotlib) are imported inside the commands.

The modules: `arguments` (shared flags), `parser`, `commands`, `entry` (`main`).

Layer: top, as `bench.api` and `bench.facade`. May import: every layer.
"""

from bench.cli.arguments import (
    DEFAULT_RATIOS,
    DEVICE_HELP,
    add_data_arguments,
    add_device_argument,
    add_eval_arguments,
    add_evaluation_arguments,
    add_progress_argument,
    add_run_arguments,
    add_workers_argument,
    at_least,
    corruption_names,
    default_workers,
    fraction,
    names,
    package_version,
    parse_ratios,
    pruner_labels,
    severity_list,
)
from bench.cli.commands import (
    COMMANDS,
    command_analyze,
    command_compress,
    command_data,
    command_eval,
    command_leaderboard,
    command_list,
    command_make_c,
    command_plan,
    command_plot,
    command_run,
    command_validate,
    command_verify,
    dataset_test_sizes,
    print_board,
    print_pruner_options,
    run_config,
)
from bench.cli.entry import (
    MAX_SHOWN_INPUT,
    describe_error,
    main,
)
from bench.cli.parser import (
    add_make_c_parser,
    build_parser,
)

__all__ = [
    "add_data_arguments",
    "add_device_argument",
    "add_eval_arguments",
    "add_evaluation_arguments",
    "add_make_c_parser",
    "add_progress_argument",
    "add_run_arguments",
    "add_workers_argument",
    "at_least",
    "build_parser",
    "command_analyze",
    "command_compress",
    "command_data",
    "command_eval",
    "command_leaderboard",
    "command_list",
    "command_make_c",
    "command_plan",
    "command_plot",
    "command_run",
    "command_validate",
    "command_verify",
    "COMMANDS",
    "corruption_names",
    "dataset_test_sizes",
    "DEFAULT_RATIOS",
    "default_workers",
    "describe_error",
    "DEVICE_HELP",
    "fraction",
    "main",
    "MAX_SHOWN_INPUT",
    "names",
    "package_version",
    "parse_ratios",
    "print_board",
    "print_pruner_options",
    "pruner_labels",
    "run_config",
    "severity_list",
]

"""Argument types and the argparse building blocks that commands share: every flag used by more than
one command is declared once here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from bench.pipeline.config import DEFAULT_GRID, DEFAULT_PRUNERS, ratio_grid

DEFAULT_RATIOS = ":".join(map(str, DEFAULT_GRID))  # geom:0.3:0.95:6
DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps"  # bench.core.devices.resolve_device


def corruption_names(value: str) -> tuple[str, ...]:
    """Comma-separated corruption names; `mix1` / `mix2` expand to the paper's two groups."""
    from bench.corruptions.tables import MIX1, MIX2

    groups = {"mix1": MIX1, "mix2": MIX2}
    return tuple(dict.fromkeys(n for part in names(value) for n in groups.get(part.lower(), (part,))))


def severity_list(value: str) -> tuple[int, ...]:
    try:
        severities = tuple(sorted({int(part) for part in names(value)}))
    except ValueError:
        severities = ()
    if not severities or not all(1 <= s <= 5 for s in severities):
        raise argparse.ArgumentTypeError(f"bad severities {value!r}: use integers 1-5, e.g. 3 or 1,3,5")
    return severities


def parse_ratios(spec: str) -> tuple[float, ...]:
    """'0.3,0.5,0.8' or 'geom:LOW:HIGH:N' / 'lin:LOW:HIGH:N' (bench.pipeline.config.ratio_grid)."""
    try:
        if spec.startswith(("geom:", "lin:")):
            kind, low, high, count = spec.split(":")
            return ratio_grid(kind, float(low), float(high), int(count))  # type: ignore[arg-type]
        ratios = tuple(float(part) for part in spec.split(",") if part.strip())
        if not ratios:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad ratio grid {spec!r}: use '0.3,0.5,0.8', 'geom:LOW:HIGH:N' or 'lin:LOW:HIGH:N' with 0 < LOW < HIGH < 1"
        ) from None
    from bench.results.schema import ratio_grid_problem

    problem = ratio_grid_problem(ratios)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return ratios


def at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= `minimum` (argparse names the flag in its error)."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def default_workers() -> str:
    """Default of --workers: $PRUNEBENCH_WORKERS, else one per CPU core (a string, so argparse
    validates it with the flag's type and names the flag in an error)."""
    return os.environ.get("PRUNEBENCH_WORKERS") or str(os.cpu_count() or 1)


def fraction(value: str) -> float:
    """argparse type: a float in [0, 1)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {number}")
    return number


def names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def pruner_labels(value: str) -> tuple[str, ...]:
    """Comma-separated pruners, each `name` or `name:key=value`; a `key=value` item adds an option to
    the pruner before it (bench.pruning.split_pruner_labels): wt,pfp:failure_probability=1e-5."""
    from bench.pruning import split_pruner_labels

    try:
        return split_pruner_labels(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _HelpFormatter(argparse.HelpFormatter):
    """Appends each option's default to its help, unless it is unset (None/False), a switch (its
    default is its absence: `--no-report (default: True)` read as if the switch were on), or said."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == argparse.SUPPRESS
        switch = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
        if not action.option_strings or unset or switch or "default" in text:
            return text
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose help shows defaults; its subcommand parsers are of the same kind."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line naming the flag (docs/errors.md), not the whole usage block."""
        from bench.results import one_line

        self.exit(2, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prunebench")
    except PackageNotFoundError:
        return "unknown (not installed)"


def add_device_argument(parser: argparse.ArgumentParser, purpose: str) -> None:
    """--device, declared once for every command that runs networks or corruptions; `purpose` says
    what runs there."""
    parser.add_argument("--device", default="cpu", help=f"{purpose}: {DEVICE_HELP}")


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_workers_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--workers", type=at_least(1), default=default_workers(),
                        help=f"{what} (default: $PRUNEBENCH_WORKERS, else one per CPU core)")


def add_data_arguments(parser: argparse.ArgumentParser, *, dataset_required: bool = False) -> None:
    """Where the data comes from: --dataset, --data-dir, --download (`run`, `plan`, `eval`, `data make-c`)."""
    parser.add_argument("--dataset", required=dataset_required, default=None,
                        help="an installed dataset (see `bench list`)" + ("" if dataset_required else
                             "; default digits, or the one the suites need"))
    parser.add_argument("--data-dir", type=Path, default=None, help="data root (default $PRUNEBENCH_DATA or ./data)")
    parser.add_argument("--download", action="store_true", help="allow downloading missing data sets (checksum-verified)")


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """What `bench run` and `bench eval` share: the model, the test distributions, the numerics,
    the seed, the tolerance, the workers and the output folder (one RunConfig either way)."""
    add_data_arguments(parser)
    parser.add_argument("--model", default=None, help="a registered model or any timm model name "
                        "(default: the dataset's, see `bench list`)")
    parser.add_argument("--suite", type=names, default=None,
                        help="comma-separated suite names (default: the dataset's, see `bench list`)")
    parser.add_argument("--corruptions", type=corruption_names, default=None,
                        help="evaluate only these corruptions of the suites (names, or mix1 / mix2)")
    parser.add_argument("--severities", type=severity_list, default=None,
                        help="evaluate only these severities, e.g. 3 or 1,3,5")
    parser.add_argument("--per-class", type=at_least(1), default=None,
                        help="class-balanced subset of K images per class (imagenet)")
    parser.add_argument("--image-size", type=at_least(1), default=None, help="segmentation crop S (voc; default 513)")
    parser.add_argument("--seed", type=at_least(0), default=0,
                        help="seed of the data split and the corruption draws (`bench run`: also of training, the S "
                        "set and pruning)")
    parser.add_argument("--delta", type=fraction, default=0.005, help="prune-potential tolerance (absolute error)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="keep NCHW memory format (channels_last is ~2x faster on CPU)")
    parser.add_argument("--threads", type=at_least(1), default=1,
                        help="CPU threads per job (part of the numerics; recorded). 1 thread per job and one job per "
                        "core survives a busy machine (benchmarks/busy_machine.py)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="training, retraining and evaluation precision (bf16: autocast, fp32 master weights)")
    add_workers_argument(parser, "parallel jobs (local process pool, or Ray CPUs)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for result files")
    add_progress_argument(parser)


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """The arguments of `bench run`, shared with `bench plan` (same arguments, same RunConfig)."""
    from bench.pipeline.executors import RAY_STORAGES

    add_evaluation_arguments(run)
    run.add_argument("--pretrained", action="store_true", help="start the parent from timm's pretrained weights")
    run.add_argument("--pruner", type=pruner_labels, default=DEFAULT_PRUNERS,
                     help="comma-separated pruners, with options as name:key=value,key=value "
                     "(e.g. wt,pfp:failure_probability=1e-5; `bench list` shows each pruner's options)")
    run.add_argument("--train-corruptions", type=corruption_names, default=(),
                     help="Mix training: (re)train with these corruptions as augmentation, e.g. mix1 (CIFAR-10-C constants)")
    run.add_argument("--verify-data", action="store_true",
                     help="hash every data file again in this run, ignoring the record of files already verified")
    run.add_argument("--ratios", type=parse_ratios, default=None,
                     help=f"the cascade's grid (default: the dataset's, {DEFAULT_RATIOS} unless it sets one)")
    run.add_argument("--epochs", type=at_least(0), default=None, help="parent training epochs (recipe default otherwise)")
    run.add_argument("--retrain-epochs", type=at_least(0), default=None, help="retraining epochs per prune step")
    run.add_argument("--calibration-size", type=at_least(2), default=None,
                     help="images in the S set (default: the reference's |S| formula, e.g. 183 for resnet20)")
    run.add_argument("--propagation", choices=("once", "fixpoint"), default="once",
                     help="the propagation step after masking: once, as the reference (default), or repeated until "
                     "nothing changes (a protocol option: part of the config)")
    add_device_argument(run, "where every job trains and evaluates (its type is part of the job keys and recorded)")
    run.add_argument("--compile", action="store_true", help="train and evaluate through torch.compile (other float "
                     "results: part of the config and the job keys)")
    run.add_argument("--executor", choices=("local", "ray"), default="local")
    run.add_argument("--jobs-per-gpu", type=at_least(1), default=1,
                     help="CUDA runs: concurrent jobs per GPU (local: one pinned worker per GPU x K, --workers "
                          "ignored; Ray: each task asks for 1/K GPU); e.g. 4 for ResNet20")
    run.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local instance)")
    run.add_argument("--ray-storage", choices=RAY_STORAGES, default=None,
                     help="how Ray tasks reach the job store: object-store, inputs and outputs travel through Ray "
                     "(no shared storage needed; default with --ray-address), or shared, every node opens the "
                     "driver's --out path (a shared mount; default on a local instance)")
    run.add_argument("--parent-checkpoint", type=Path, default=None, metavar="PATH",
                     help="start from this trained parent (torch state dict or safetensors) instead of training one; "
                     "its sha256 is part of the config, --epochs then fine-tunes it (default 0: used as is)")


def add_eval_arguments(evaluate: argparse.ArgumentParser) -> None:
    """The arguments of `bench eval` (bench.pipeline.external)."""
    evaluate.add_argument("--parent", type=Path, required=True, metavar="PATH",
                          help="the unpruned parent: a state dict of --model (torch.save or safetensors)")
    evaluate.add_argument("--network", action="append", required=True, metavar="METHOD=PATH",
                          help="a pruned network, repeatable; networks of one METHOD form one row. PATH: a state dict "
                          "of --model (masked; ratio from nonzero parameters) or a torch.export archive .pt2 "
                          "(physically smaller; ratio from its parameter count)")
    add_evaluation_arguments(evaluate)
    add_device_argument(evaluate, "where to evaluate")



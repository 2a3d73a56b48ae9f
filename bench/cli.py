"""Command line: `bench run | plan | eval | list | data make-c | leaderboard | validate | verify | plot | analyze | compress`.

This module only parses arguments and hands them to the package; `bench --help` stays fast
because heavy modules (torch, matplotlib) are imported inside the commands.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from bench.config import DEFAULT_GRID, DEFAULT_PRUNERS, ratio_grid

if TYPE_CHECKING:
    from bench.schema import RunConfig

DEFAULT_RATIOS = ":".join(map(str, DEFAULT_GRID))  # geom:0.3:0.95:6
DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps"  # bench.devices.resolve_device


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
    """'0.3,0.5,0.8' or 'geom:LOW:HIGH:N' / 'lin:LOW:HIGH:N' (bench.config.ratio_grid)."""
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
    from bench.schema import ratio_grid_problem

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


def add_make_c_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``make-c`` to an argparse subparsers object (``bench data make-c``)."""
    from bench import make_c
    from bench.corruptions.tables import TABLES

    parser = subparsers.add_parser(
        "make-c",
        help="write a CIFAR-10-C-style corrupted copy of a dataset's test split (official .npy layout)",
        description=(make_c.__doc__ or "").split("\n\n")[1],
    )
    add_data_arguments(parser, dataset_required=True)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--corruptions", type=names, default=None, help="comma-separated (default: all 19)")
    parser.add_argument("--severities", type=severity_list, default=make_c.SEVERITIES, help="comma-separated, default 1,2,3,4,5")
    parser.add_argument("--seed", type=int, default=0, help="corruption seed, also the dataset's split seed")
    parser.add_argument("--table", default=None, help=f"per-severity constants: {', '.join(sorted(TABLES))} or a "
                        "corruption suite (default: the dataset's own corruption suite where make-c writes exactly the sets a run of "
                        "the same --seed evaluates, e.g. fashion-mnist-c for fashion-mnist; else cifar10-c)")
    parser.add_argument("--chunk-size", type=int, default=1000, help="images per chunk (memory bound; no effect on bytes)")
    add_device_argument(parser, "where the corruptions run (bytes are reproducible per device type)")
    add_progress_argument(parser)
    parser.set_defaults(data_command_fn=command_make_c)
    return parser


def command_make_c(args: argparse.Namespace) -> int:
    from bench.devices import resolve_device
    from bench.files import data_environment
    from bench.make_c import make_c_for_dataset

    device = str(resolve_device(args.device))
    with data_environment(args.data_dir, args.download):
        written, count = make_c_for_dataset(args.dataset, args.out, seed=args.seed, table_name=args.table,
                                            corruptions=args.corruptions, severities=args.severities,
                                            progress=not args.quiet, chunk_size=args.chunk_size, device=device)
    for name in sorted(written):
        print(args.out / name, file=sys.stderr)
    print(f"wrote {len(written)} files for {count} {args.dataset} test images to {args.out}")
    return 0


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
    from bench.executors import RAY_STORAGES

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
    """The arguments of `bench eval` (bench.external)."""
    evaluate.add_argument("--parent", type=Path, required=True, metavar="PATH",
                          help="the unpruned parent: a state dict of --model (torch.save or safetensors)")
    evaluate.add_argument("--network", action="append", required=True, metavar="METHOD=PATH",
                          help="a pruned network, repeatable; networks of one METHOD form one row. PATH: a state dict "
                          "of --model (masked; ratio from nonzero parameters) or a torch.export archive .pt2 "
                          "(physically smaller; ratio from its parameter count)")
    add_evaluation_arguments(evaluate)
    add_device_argument(evaluate, "where to evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description="Robust vs nominal prune potential of pruned networks.")
    parser.add_argument("--version", action="version", version=f"prunebench {package_version()}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error (bench --debug run ...)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train, prune, retrain and evaluate; write a result file")
    add_run_arguments(run)
    run.add_argument("--dry-run", action="store_true", help="print the plan (as `bench plan`) and exit")
    plan = sub.add_parser("plan", help="print the jobs `bench run` with the same arguments would run, how many "
                          "are cached, and an estimated wall time (trains nothing)")
    add_run_arguments(plan)

    add_eval_arguments(sub.add_parser(
        "eval", help="evaluate a parent and your own pruned networks (state dicts or torch.export archives) on any "
                     "suites; write a result file",
        description="Evaluate a parent and your own pruned networks on the dataset's clean test set and suites. "
                    "Every network must have been trained on the data of `bench.load_dataset(DATASET, SEED)` "
                    "(its .train split, drawn with --seed; the test split is fixed) with the dataset's normalisation "
                    "as the only preprocessing (.normalize: uint8 images to float, channel mean and std) and no "
                    "resizing; `bench list` names the datasets. From Python: bench.evaluate (docs/your-networks.md)."))
    sub.add_parser("list", help="list installed pruners, suites, datasets and models")


    data = sub.add_parser("data", help="prepare data: corrupted test sets in the official layout")
    add_make_c_parser(data.add_subparsers(dest="data_command", required=True))

    board = sub.add_parser("leaderboard", help="validate result files and print the markdown leaderboard")
    board.add_argument("folder", type=Path, nargs="?", default=Path("results"))
    board.add_argument("--output", "-o", type=Path, help="also write the markdown to this file")
    board.add_argument("--json", type=Path, metavar="PATH",
                       help="also write the board as one schema-validated JSON document (leaderboard.rows.Board)")
    board.add_argument("--html", type=Path, metavar="PATH",
                       help="also write the board as one self-contained static HTML page")
    board.add_argument("--check", action="store_true",
                       help="write nothing: exit 1 naming every output (-o/--json/--html; none given: the committed "
                       "LEADERBOARD.md, leaderboard/leaderboard.json, leaderboard/index.html) that differs")
    board.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                       help="aggregate tables only, no per-suite tables")
    board.add_argument("--verified-only", action="store_true",
                       help="rank only result files with a passed `bench verify` report for their exact content")
    board.add_argument("--strict", action="store_true",
                       help="exit 1 listing the invalid result files instead of skipping them (CI)")

    validate = sub.add_parser("validate", help="format check of result files (schema, version, hits agree with "
                              "accuracies, integrity digest); not a proof: see `bench verify`")
    validate.add_argument("files", type=Path, nargs="+")

    verify = sub.add_parser("verify", help="re-evaluate the saved networks of result files and compare every "
                            "per-example hit; exit 1 on any disagreement")
    verify.add_argument("files", type=Path, nargs="+", metavar="RESULT",
                        help="result files, or folders whose every result file is verified")
    verify.add_argument("--networks", type=Path, default=None,
                        help="folder of the network files (default: <result without .json>.networks beside each)")
    verify.add_argument("--reproduce", type=int, default=0, metavar="K",
                        help="also re-run K random cascade steps from their saved predecessor and compare")
    verify.add_argument("--seed", type=int, default=0, help="seed of the --reproduce and --sample draws")
    verify.add_argument("--plugins", action="store_true",
                        help="import the datasets and suites of plugin packages that results need (each file is then "
                        "verified in a fresh process); without it no plugin code is imported, except by --reproduce, "
                        "whose steps run in a process of their own")
    verify.add_argument("--sample", type=at_least(1), default=None, metavar="K",
                        help="re-evaluate only K (network, test set) pairs drawn with --seed, comparing every hit of "
                        "each (only the drawn test sets and the clean one are rebuilt and checked; every network's size is); its "
                        "report does not mark the file verified")
    verify.add_argument("--no-report", dest="report", action="store_false",
                        help="do not write <result>.verify.json beside each result file")
    add_device_argument(verify, "where to re-evaluate (hits are compared exactly, so use the device type the result "
                                "records)")
    add_workers_argument(verify, "result files verified side by side")
    add_progress_argument(verify)

    plot = sub.add_parser("plot", help="accuracy, prune-potential and excess-error plots from result files, "
                          "similarity and features plots from the analysis reports under the folder")
    plot.add_argument("folder", type=Path, nargs="?", default=Path("results"))
    plot.add_argument("--output", "-o", type=Path, default=Path("plots"), help="folder for the PNG and PDF files")
    plot.add_argument("--severity", type=at_least(1), default=None,
                      help="accuracy figures at this severity only (default: every severity)")
    plot.add_argument("--accuracy-floor", type=float, default=None, metavar="PP",
                      help="excess-error figure: only networks at most PP percentage points below their parent's "
                           "nominal accuracy (default 5)")
    analyze = sub.add_parser("analyze", help="analyses of a finished run beyond test accuracy")
    analyses = analyze.add_subparsers(dest="analysis", required=True)
    for name, text in (("similarity", "agreement with the parent under uniform pixel noise"),
                       ("features", "confidence on each other's 10 %% most informative pixels")):
        sub_analysis = analyses.add_parser(name, help=text)
        sub_analysis.add_argument("result", type=Path, help="a result file written by bench run")
        sub_analysis.add_argument("--cache", type=Path, default=None, help="job cache (default: <result folder>/.cache)")
        sub_analysis.add_argument("--images", type=int, default=None, help="number of test images (default: all / 200)")
        sub_analysis.add_argument("--plot", type=Path, default=None, help="also save PNG+PDF with this path stem")
        add_device_argument(sub_analysis, "where the networks run (recorded)")
        sub_analysis.add_argument("--json", type=Path, default=None, help="where to write the report (default: "
                                  f"<result folder>/analysis/<result stem>.{name}.json, which bench plot reads)")
    analyses.choices["similarity"].add_argument("--draws", type=int, default=20, help="noise draws per image")

    compress = sub.add_parser("compress", help="physically remove the pruned channels of a run's structured "
                              "networks; params, MACs and latency, masked vs compressed")
    compress.add_argument("result", type=Path, help="a result file written by bench run")
    compress.add_argument("--pruner", type=pruner_labels, default=None,
                          help="structured pruners as the run names them, e.g. ft,pfp:failure_probability=1e-5 (default: all of the run's)")
    compress.add_argument("--cache", type=Path, default=None, help="job cache (default: <result folder>/.cache)")
    compress.add_argument("--batch", type=int, default=64, help="batch size of the latency measurement")
    compress.add_argument("--repeats", type=int, default=20, help="timed forwards per network (median)")
    compress.add_argument("--warmup", type=int, default=5, help="untimed forwards per network first")
    compress.add_argument("--threads", type=int, default=None, help="CPU threads (default: the run's)")
    compress.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    add_device_argument(compress, "where the latencies are timed (recorded)")
    compress.add_argument("--export-dir", type=Path, default=None, metavar="DIR",
                          help="also write each compressed network to DIR as a torch.export archive "
                          "<pruner>-<step>.pt2 (what `bench eval --network METHOD=PATH` takes)")
    return parser


def command_analyze(args: argparse.Namespace) -> int:
    from bench import analysis

    plots: list[Path] = []
    report: analysis.SimilarityReport | analysis.FeatureReport
    if args.analysis == "similarity":
        report = analysis.similarity_analysis(args.result, args.cache, draws=args.draws, n_images=args.images,
                                              progress=True, device=args.device)
        print(analysis.similarity_table(report))
        plots = analysis.save_similarity_plot(report, args.plot) if args.plot else []
    else:
        images = {} if args.images is None else {"n_images": args.images}
        report = analysis.features_analysis(args.result, args.cache, progress=True, device=args.device, **images)
        print(analysis.features_table(report))
        plots = analysis.save_features_plot(report, args.plot) if args.plot else []
    for plot_path in plots:
        print(plot_path, file=sys.stderr)
    path = analysis.save_report(report, args.json or analysis.report_path(args.result, args.analysis))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def command_compress(args: argparse.Namespace) -> int:
    from bench.compress import compress_run, compression_table
    from bench.io import atomic_write_text

    report = compress_run(args.result, args.cache, pruners=args.pruner, batch=args.batch, warmup=args.warmup,
                          repeats=args.repeats, threads=args.threads, progress=True, export_dir=args.export_dir,
                          device=args.device)
    print(compression_table(report))
    if args.json:
        atomic_write_text(args.json, report.model_dump_json(indent=1))
    if not report.exact:
        print(f"bench compress: error: compressed outputs differ from the masked ones by more than "
              f"{report.tolerance:g}", file=sys.stderr)
        return 1
    return 0


def run_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of `bench run`'s arguments (bench.config.default_config fills the rest)."""
    from bench.config import default_config

    return default_config(
        dataset=args.dataset,
        model=args.model,
        pruners=args.pruner,
        suites=args.suite,
        target_ratios=args.ratios,
        epochs=args.epochs,
        retrain_epochs=args.retrain_epochs,
        train_corruptions=args.train_corruptions,
        pretrained=args.pretrained,
        per_class=args.per_class,
        image_size=args.image_size,
        corruptions=args.corruptions,
        severities=args.severities,
        precision=args.precision,
        compile=True if args.compile else None,
        seed=args.seed,
        calibration_size=args.calibration_size,
        propagation=args.propagation,
        delta=args.delta,
        channels_last=args.channels_last,
        threads=args.threads,
        parent_checkpoint=args.parent_checkpoint,
    )


def command_run(args: argparse.Namespace) -> int:
    from bench.devices import resolve_device
    from bench.executors import make_executor
    from bench.files import data_environment
    from bench.runner import run

    if args.dry_run:
        return command_plan(args)
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out}: is a file, not a folder")
    with data_environment(args.data_dir, args.download, args.verify_data):  # inherited by worker processes
        config = run_config(args)
        device = str(resolve_device(args.device))
        executor = make_executor(args.executor, args.workers, args.ray_address, progress=not args.quiet,
                                 device_type=device, jobs_per_gpu=args.jobs_per_gpu, ray_storage=args.ray_storage)
        with closing(executor):
            path = run(config, args.out, progress=not args.quiet, executor=executor,
                       parent_checkpoint=args.parent_checkpoint, device=device)
    return print_board(path, args.out)


def print_board(written: Path, out: Path) -> int:
    """Name the result file just written (stderr) and print the leaderboard of its folder, the
    written run's section first."""
    from leaderboard import build_leaderboard

    print(f"wrote {written}", file=sys.stderr)
    print(build_leaderboard(out, first=written))
    return 0


def command_eval(args: argparse.Namespace) -> int:
    from bench.devices import resolve_device
    from bench.executors import make_executor
    from bench.external import evaluate_networks, external_config, parse_network
    from bench.files import data_environment

    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out}: is a file, not a folder")
    networks = [parse_network(value) for value in args.network]
    with data_environment(args.data_dir, args.download):
        config = external_config(
            args.parent, networks, dataset=args.dataset, model=args.model, suites=args.suite,
            corruptions=args.corruptions, severities=args.severities, per_class=args.per_class,
            image_size=args.image_size, seed=args.seed, delta=args.delta, channels_last=args.channels_last,
            threads=args.threads, precision=args.precision,
        )
        device = str(resolve_device(args.device))
        executor = make_executor("local", args.workers, progress=not args.quiet, device_type=device)
        with closing(executor):
            path = evaluate_networks(config, args.parent, networks, args.out, progress=not args.quiet,
                                     executor=executor, device=device)
    return print_board(path, args.out)


def command_plan(args: argparse.Namespace) -> int:
    from bench.files import data_environment
    from bench.plan import format_plan, plan

    with data_environment(args.data_dir, args.download, args.verify_data):
        print(format_plan(plan(run_config(args), args.out, parent_checkpoint=args.parent_checkpoint,
                               device=args.device, workers=args.workers)))
    return 0


def command_list(_: argparse.Namespace) -> int:
    from bench import registry
    from bench.data import DATASETS
    from bench.models import BENCH_MODELS

    print("pruners: " + ", ".join(registry.available(registry.PRUNER_GROUP)))
    print_pruner_options()
    print("suites:  " + ", ".join(registry.available(registry.SUITE_GROUP)))
    print("datasets: " + ", ".join(sorted(DATASETS)))
    for name, spec in sorted(DATASETS.items()):
        package, package_version = registry.distribution_of(registry.DATASET_GROUP, name)
        print(f"  {name} ({spec.task}, {package} {package_version}): model {spec.default_model}, suites "
              f"{','.join(spec.default_suites)}, parent {spec.train.epochs} epochs, retrain {spec.retrain.epochs} "
              "epochs per step")
    from bench.segmentation import SEGMENTATION_MODELS

    print("models:  " + ", ".join(BENCH_MODELS) + " (and any timm model name)")
    print("segmentation models: " + ", ".join(SEGMENTATION_MODELS))
    return 0


def print_pruner_options() -> None:
    """One line per installed pruner that takes options: its keys, types and defaults."""
    from bench import registry
    from bench.pruning import Pruner, option_help

    for name in registry.available(registry.PRUNER_GROUP):
        try:
            pruner = registry.load_class(registry.PRUNER_GROUP, name, Pruner)
        except registry.RegistryError as exc:  # e.g. an optional dependency is missing
            print(f"  {name}: cannot be loaded: {exc}")
            continue
        if pruner.Options.model_fields:
            print(f"  {name}: {option_help(pruner)}")


def dataset_test_sizes() -> dict[str, int]:
    """Each dataset's largest test set: the data layer knows it, the results layer takes it as an
    argument (the same bounds for `bench leaderboard` and `bench validate`)."""
    from bench.data import DATASETS

    return {name: spec.max_test_examples for name, spec in DATASETS.items()}


def command_leaderboard(args: argparse.Namespace) -> int:
    from leaderboard.build import compile_leaderboard

    board = compile_leaderboard(args.folder, breakdown=args.breakdown, verified_only=args.verified_only,
                                test_set_sizes=dataset_test_sizes())
    for line in board.skipped:
        print(line, file=sys.stderr)
    for line in board.notes:
        print(f"note: {line}", file=sys.stderr)
    if board.skipped and not board.board.protocols:
        raise ValueError(f"{args.folder}: none of its {len(board.skipped)} result files is valid (each is named above "
                         "with what is wrong); nothing to rank, no board written")
    if args.strict and board.skipped:
        print(f"bench leaderboard: {len(board.skipped)} invalid result files (--strict): no board written",
              file=sys.stderr)
        return 1
    from leaderboard.publish import (
        COMMITTED,
        Outputs,
        regenerate_command,
        render_outputs,
        stale_outputs,
        write_outputs,
    )

    outputs = Outputs(args.output, args.json, args.html)
    if args.check and outputs == Outputs():
        outputs = COMMITTED
    rendered = render_outputs(board.board, board.markdown, args.folder, outputs)
    if args.check:
        stale = stale_outputs(rendered)
        for path in stale:
            print(f"{path}: stale, differs from the board of {args.folder} (regenerate: "
                  f"{regenerate_command(args.folder, outputs)})", file=sys.stderr)
        print(f"bench leaderboard --check: {len(rendered) - len(stale)} of {len(rendered)} outputs up to date")
        return 1 if stale else 0
    write_outputs(rendered)
    print(board.markdown, end="")
    return 0


def command_validate(args: argparse.Namespace) -> int:
    from bench.results import load_results

    _, errors, notes = load_results(args.files, dataset_test_sizes())  # the board's ingestion
    for error in errors:
        print(error, file=sys.stderr)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{len(args.files) - len(errors)} of {len(args.files)} result files valid")
    return 2 if errors else 0  # a malformed or edited file is bad input (docs/errors.md)


def command_verify(args: argparse.Namespace) -> int:
    from bench.files import DataMissing
    from bench.results import REPORT_SUFFIXES, find_result_files, networks_folder, one_line
    from bench.verify import verify_results

    if args.reproduce < 0:
        raise ValueError(f"--reproduce must be 0 or more, got {args.reproduce}")
    failed = 0
    # a shell glob such as results/digits-*.json also matches the reports beside the results: skipped
    paths = [found for path in args.files for found in (find_result_files(path) if path.is_dir() else [path])
             if not found.name.endswith(REPORT_SUFFIXES)]
    for path in paths:
        folder = args.networks if args.networks is not None else networks_folder(path)
        if not folder.is_dir():
            raise DataMissing(f"{path}: no networks folder {folder} to re-evaluate (`bench run` writes it beside "
                              "the result file; copy it along, or name it with --networks FOLDER)")
    checks = verify_results(paths, args.workers, networks_dir=args.networks, reproduce=args.reproduce, seed=args.seed,
                            progress=not args.quiet, write_report=args.report, device=args.device, sample=args.sample,
                            plugins=args.plugins)
    for path, check in zip(paths, checks):
        # names come from the files: escaped, so that no control sequence can fake a verdict line
        for line in check.disagreements:
            print(one_line(f"{path.name}: {line}"))
        for line in check.reproduced:
            print(one_line(f"{path.name}: reproduced {line}"))
        for line in check.ties:
            print(one_line(f"{path.name}: tie (not a disagreement): {line}"))
        verdict = (f"FAILED ({len(check.disagreements)} disagreements)" if not check.passed
                   else "verified" if check.sample is None
                   else f"verified on a sample of {check.sample} (network, test set) pairs")
        verdict += f" ({len(check.ties)} cells with ties within float noise)" if check.ties else ""
        print(one_line(f"{path.name}: {verdict}: {check.networks_checked} networks, {check.hits_compared} "
                       f"per-example hits compared in {check.seconds:.1f} s"))
        failed += not check.passed
    return 1 if failed else 0


def command_plot(args: argparse.Namespace) -> int:
    from bench.analysis import load_reports
    from bench.plots import ACCURACY_FLOOR_PP, make_plots
    from bench.results import ResultFileError, find_result_files, load_results

    # the board's ingestion: the same files left out (each named on one line), runs counted once
    kept, errors, _ = load_results(find_result_files(args.folder), dataset_test_sizes())
    for line in errors:
        print(line, file=sys.stderr)
    results = [result for _, result in kept]
    reports = load_reports(args.folder)
    if not results and not reports:
        raise ResultFileError(f"{args.folder}: no result files or analysis reports to plot")
    floor = ACCURACY_FLOOR_PP if args.accuracy_floor is None else args.accuracy_floor
    for path in make_plots(results, args.output, reports, args.severity, floor):
        print(path)
    return 0


def command_data(args: argparse.Namespace) -> int:
    return args.data_command_fn(args)


COMMANDS = {
    "run": command_run,
    "plan": command_plan,
    "data": command_data,
    "list": command_list,
    "leaderboard": command_leaderboard,
    "validate": command_validate,
    "verify": command_verify,
    "plot": command_plot,
    "analyze": command_analyze,
    "compress": command_compress,
    "eval": command_eval,
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    from bench._allocator import tune_allocator
    from bench.config import set_hub_policy

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

    bad_input = (ValueError, LookupError, *loaded("bench.files", "DataMissing"))
    run_failure = (*loaded("bench.registry", "PluginError"), *loaded("bench.pruning", "NonFiniteWeights"),
                   *loaded("bench.store", "CacheCorrupted"), *loaded("bench.results", "RejectedResult"))
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


if __name__ == "__main__":
    sys.exit(main())

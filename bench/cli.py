"""Command line: `bench run`, `bench list`, `bench leaderboard`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

DEFAULT_PRUNERS = ("wt", "ft", "sipp", "pfp")
DEFAULT_SUITES = ("noise", "digits-c")
DEFAULT_RATIOS = "geom:0.3:0.95:6"


def parse_ratios(spec: str) -> tuple[float, ...]:
    """'0.3,0.5,0.8' or 'geom:LOW:HIGH:N' (keep ratios 1-r geometrically spaced, as in the paper)
    or 'lin:LOW:HIGH:N'."""
    try:
        if spec.startswith(("geom:", "lin:")):
            kind, low, high, count = spec.split(":")
            low_f, high_f, n = float(low), float(high), int(count)
            if not (0 < low_f < high_f < 1 and n >= 1):
                raise ValueError
            if kind == "geom":
                keep = np.geomspace(1 - low_f, 1 - high_f, n)
                return tuple(round(1 - float(k), 4) for k in keep)
            return tuple(round(float(r), 4) for r in np.linspace(low_f, high_f, n))
        ratios = tuple(float(part) for part in spec.split(",") if part.strip())
        if not ratios:
            raise ValueError
        return ratios
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad ratio grid {spec!r}: use '0.3,0.5,0.8', 'geom:LOW:HIGH:N' or 'lin:LOW:HIGH:N' with 0 < LOW < HIGH < 1"
        ) from None


def names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Robust vs nominal prune potential of pruned networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train, prune, retrain and evaluate; write a result file")
    run.add_argument("--dataset", default="digits")
    run.add_argument("--model", default="digits_cnn", help="a registered model or any timm model name")
    run.add_argument("--pruner", type=names, default=DEFAULT_PRUNERS, help="comma-separated pruner names")
    run.add_argument("--suite", type=names, default=DEFAULT_SUITES, help="comma-separated suite names")
    run.add_argument("--ratios", type=parse_ratios, default=parse_ratios(DEFAULT_RATIOS), help=f"default {DEFAULT_RATIOS}")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--epochs", type=int, default=None, help="parent training epochs (recipe default otherwise)")
    run.add_argument("--retrain-epochs", type=int, default=None, help="retraining epochs per prune step")
    run.add_argument("--delta", type=float, default=0.005, help="prune-potential tolerance (absolute error)")
    run.add_argument("--calibration-size", type=int, default=256, help="images in the S set of data-informed pruners")
    run.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                     help="keep NCHW memory format (channels_last is ~2x faster on CPU)")
    run.add_argument("--threads", type=int, default=2, help="CPU threads per job (part of the numerics; recorded)")
    run.add_argument("--executor", choices=("local", "ray"), default="local")
    run.add_argument("--workers", type=int, default=1, help="parallel jobs (local process pool, or Ray CPUs)")
    run.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local instance)")
    run.add_argument("--out", type=Path, default=Path("results"), help="folder for result files")
    run.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("list", help="list installed pruners, suites, datasets and models")

    board = sub.add_parser("leaderboard", help="validate result files and print the markdown leaderboard")
    board.add_argument("folder", type=Path, nargs="?", default=Path("results"))
    board.add_argument("--output", "-o", type=Path, help="also write the markdown to this file")
    board.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                       help="aggregate tables only, no per-(corruption, severity) tables")

    validate = sub.add_parser("validate", help="check result files (schema, hits, integrity, derived metrics)")
    validate.add_argument("files", type=Path, nargs="+")

    plot = sub.add_parser("plot", help="accuracy, prune-potential and excess-error plots from result files")
    plot.add_argument("folder", type=Path, nargs="?", default=Path("results"))
    plot.add_argument("--output", "-o", type=Path, default=Path("plots"), help="folder for the PNG and PDF files")
    analyze = sub.add_parser("analyze", help="analyses of a finished run beyond test accuracy")
    analyses = analyze.add_subparsers(dest="analysis", required=True)
    for name, text in (("similarity", "agreement with the parent under uniform pixel noise"),
                       ("features", "confidence on each other's 10 % most informative pixels")):
        sub_analysis = analyses.add_parser(name, help=text)
        sub_analysis.add_argument("result", type=Path, help="a result file written by bench run")
        sub_analysis.add_argument("--cache", type=Path, default=None, help="job cache (default: <result folder>/.cache)")
        sub_analysis.add_argument("--images", type=int, default=None, help="number of test images (default: all / 200)")
        sub_analysis.add_argument("--plot", type=Path, default=None, help="also save PNG+PDF with this path stem")
        sub_analysis.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    analyses.choices["similarity"].add_argument("--draws", type=int, default=20, help="noise draws per image")
    return parser


def command_analyze(args: argparse.Namespace) -> int:
    from bench import analysis
    from bench.results import atomic_write_text

    if args.analysis == "similarity":
        report = analysis.similarity_analysis(args.result, args.cache, draws=args.draws, n_images=args.images,
                                              progress=True)
        table, save_plot = analysis.similarity_table(report), analysis.save_similarity_plot
    else:
        images = {} if args.images is None else {"n_images": args.images}
        report = analysis.features_analysis(args.result, args.cache, progress=True, **images)
        table, save_plot = analysis.features_table(report), analysis.save_features_plot
    print(table)
    if args.plot:
        for path in save_plot(report, args.plot):
            print(path, file=sys.stderr)
    if args.json:
        atomic_write_text(args.json, report.model_dump_json(indent=1))
    return 0


def command_run(args: argparse.Namespace) -> int:
    from bench.executors import make_executor
    from bench.recipes import default_recipes
    from bench.runner import run
    from bench.schema import RunConfig
    from leaderboard import build_leaderboard

    train, retrain = default_recipes(args.dataset, args.model)
    if args.epochs is not None:
        train = train.model_copy(update={"epochs": args.epochs})
    if args.retrain_epochs is not None:
        retrain = retrain.model_copy(update={"epochs": args.retrain_epochs})
    config = RunConfig(
        dataset=args.dataset,
        model=args.model,
        pruners=args.pruner,
        suites=args.suite,
        target_ratios=args.ratios,
        train=train,
        retrain=retrain,
        seed=args.seed,
        calibration_size=args.calibration_size,
        delta=args.delta,
        channels_last=args.channels_last,
        threads=args.threads,
    )
    executor = make_executor(args.executor, args.workers, args.ray_address, progress=not args.quiet)
    try:
        path = run(config, args.out, progress=not args.quiet, executor=executor)
    finally:
        executor.close()
    print(f"wrote {path}", file=sys.stderr)
    print(build_leaderboard(args.out))
    return 0


def command_list(_: argparse.Namespace) -> int:
    from bench import registry
    from bench.data import DATASETS
    from bench.models import BENCH_MODELS

    print("pruners: " + ", ".join(registry.available(registry.PRUNER_GROUP)))
    print("suites:  " + ", ".join(registry.available(registry.SUITE_GROUP)))
    print("datasets: " + ", ".join(sorted(DATASETS)))
    print("models:  " + ", ".join(BENCH_MODELS) + " (and any timm model name)")
    return 0


def command_leaderboard(args: argparse.Namespace) -> int:
    from leaderboard import build_leaderboard

    markdown = build_leaderboard(args.folder, breakdown=args.breakdown)
    if args.output:
        from bench.results import atomic_write_text

        atomic_write_text(args.output, markdown)
    print(markdown, end="")
    return 0


def command_validate(args: argparse.Namespace) -> int:
    from leaderboard.build import validate_files

    errors = validate_files(args.files)
    for error in errors:
        print(error, file=sys.stderr)
    print(f"{len(args.files) - len(errors)} of {len(args.files)} result files valid")
    return 1 if errors else 0


def command_plot(args: argparse.Namespace) -> int:
    from bench.plots import make_plots
    from bench.results import ResultFileError, find_result_files, load_result

    results = [load_result(path) for path in find_result_files(args.folder)]
    if not results:
        raise ResultFileError(f"{args.folder}: no result files to plot")
    for path in make_plots(results, args.output):
        print(path)
    return 0


COMMANDS = {
    "run": command_run,
    "list": command_list,
    "leaderboard": command_leaderboard,
    "validate": command_validate,
    "plot": command_plot,
    "analyze": command_analyze,
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never hang on hub retries without network
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, LookupError) as exc:  # bad input: one clear line, no traceback
        print(f"bench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

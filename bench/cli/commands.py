"""The commands: each takes the parsed arguments, hands them to the package and returns the exit
code; heavy modules are imported inside them.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.results.schema import RunConfig


def command_make_c(args: argparse.Namespace) -> int:
    from bench.core.devices import resolve_device
    from bench.data.files import data_environment
    from bench.data.make_c import make_c_for_dataset

    device = str(resolve_device(args.device))
    with data_environment(args.data_dir, args.download):
        written, count = make_c_for_dataset(args.dataset, args.out, seed=args.seed, table_name=args.table,
                                            corruptions=args.corruptions, severities=args.severities,
                                            progress=not args.quiet, chunk_size=args.chunk_size, device=device)
    for name in sorted(written):
        print(args.out / name, file=sys.stderr)
    print(f"wrote {len(written)} files for {count} {args.dataset} test images to {args.out}")
    return 0


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
    from bench.core.io import atomic_write_text

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
    """The RunConfig of `bench run`'s arguments (bench.pipeline.config.default_config fills the rest)."""
    from bench.pipeline.config import default_config

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
    from bench.core.devices import resolve_device
    from bench.data.files import data_environment
    from bench.pipeline.executors import make_executor
    from bench.pipeline.runner import run

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
    from bench.core.devices import resolve_device
    from bench.data.files import data_environment
    from bench.pipeline.executors import make_executor
    from bench.pipeline.external import evaluate_networks, external_config, parse_network

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
    from bench.data.files import data_environment
    from bench.pipeline.plan import format_plan, plan

    with data_environment(args.data_dir, args.download, args.verify_data):
        print(format_plan(plan(run_config(args), args.out, parent_checkpoint=args.parent_checkpoint,
                               device=args.device, workers=args.workers)))
    return 0


def command_list(_: argparse.Namespace) -> int:
    from bench.core import registry
    from bench.data import DATASETS

    print("pruners: " + ", ".join(registry.available(registry.PRUNER_GROUP)))
    print_pruner_options()
    print("suites:  " + ", ".join(registry.available(registry.SUITE_GROUP)))
    print("datasets: " + ", ".join(sorted(DATASETS)))
    for name, spec in sorted(DATASETS.items()):
        package, package_version = registry.distribution_of(registry.DATASET_GROUP, name)
        print(f"  {name} ({spec.task}, {package} {package_version}): model {spec.default_model}, suites "
              f"{','.join(spec.default_suites)}, parent {spec.train.epochs} epochs, retrain {spec.retrain.epochs} "
              "epochs per step")
    print("models:  " + ", ".join(registry.available(registry.MODEL_GROUP)) + " (and any timm model name)")
    print_model_configs()
    return 0


def print_model_configs() -> None:
    """One line per installed model: its package, input size, classes, parameter count and classifier."""
    from bench.core import registry
    from bench.models.config import model_config

    for name in registry.available(registry.MODEL_GROUP):
        package, package_version = registry.distribution_of(registry.MODEL_GROUP, name)
        try:
            config = model_config(name)
        except registry.RegistryError as exc:  # a broken plugin must not hide the others
            print(f"  {name}: cannot be loaded: {exc}")
            continue
        size = "x".join(map(str, config.input_size))
        print(f"  {name} ({package} {package_version}): input {size}, {config.num_classes} classes, "
              f"{config.reference_params:,} parameters, classifier {config.classifier}")


def print_pruner_options() -> None:
    """One line per installed pruner that takes options: its keys, types and defaults."""
    from bench.core import registry
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
    from bench.data.files import DataMissing
    from bench.pipeline.jobs import why_parent_cannot_be_retrained
    from bench.pipeline.verify import verify_results
    from bench.results import REPORT_SUFFIXES, find_result_files, load_result, networks_folder, one_line

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
        if args.reproduce_parent and (why := why_parent_cannot_be_retrained(load_result(path))) is not None:
            raise ValueError(f"{path}: --reproduce-parent: {why}")
    checks = verify_results(paths, args.workers, networks_dir=args.networks, reproduce=args.reproduce, seed=args.seed,
                            progress=not args.quiet, write_report=args.report, device=args.device, sample=args.sample,
                            plugins=args.plugins, reproduce_parent=args.reproduce_parent)
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
    from bench.analysis import load_reports, report_figure
    from bench.reports.plots import ACCURACY_FLOOR_PP, make_plots
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
    drawings = {name: partial(report_figure, report) for name, report in reports.items()}
    for path in make_plots(results, args.output, drawings, args.severity, floor):
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



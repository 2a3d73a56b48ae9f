"""`bench`'s argument parser: one sub-parser per command, built from the shared declarations in
`bench.cli.arguments`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.cli.arguments import (
    _Parser,
    add_data_arguments,
    add_device_argument,
    add_eval_arguments,
    add_progress_argument,
    add_run_arguments,
    add_workers_argument,
    at_least,
    names,
    package_version,
    pruner_labels,
    severity_list,
)
from bench.cli.commands import command_make_c


def add_make_c_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``make-c`` to an argparse subparsers object (``bench data make-c``)."""
    from bench.corruptions.tables import TABLES
    from bench.data import make_c

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
    verify.add_argument("--reproduce-parent", action="store_true",
                        help="also re-train the parent from its seed with the recorded recipe and compare (bitwise on "
                        "the recording platform, CPU and thread count, else its clean accuracy within 2 pp)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the --reproduce and --sample draws")
    verify.add_argument("--plugins", action="store_true",
                        help="import the datasets and suites of plugin packages that results need (each file is then "
                        "verified in a fresh process); without it no plugin code is imported, except by --reproduce, "
                        "whose steps run in a process of their own")
    verify.add_argument("--sample", type=at_least(1), default=None, metavar="K",
                        help="re-evaluate only K (network, test set) pairs drawn with --seed, comparing every hit of "
                        "each (only the drawn test sets and the clean one are rebuilt and checked; every network's size is); the "
                        "board counts its report as sampled, not verified")
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



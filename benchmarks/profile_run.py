"""Where the default `bench run`'s time goes: a CPU-time profile of the whole run, in one process.

Runs `bench.pipeline.runner.run(default_config(threads=1))` (one thread, jobs one after another in this
process, fresh cache) under cProfile with `time.process_time` as its clock, so the shares hold on
a busy machine too, and prints the CPU seconds under each stage: dataset and test-set generation,
parent training, the size search (plan + propagation attempts), retraining, evaluation, and the
job store (saving/loading networks, checksums). Shares are of the run's total CPU time; wall
time with `--workers 2` is about half.

Run: .venv/bin/python benchmarks/profile_run.py [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from _timing import markdown_table, open_benchmark

# (label, module file suffix, function name): cumulative CPU time under each
STAGES: list[tuple[str, str, str]] = [
    ("load dataset", "bench/data/__init__.py", "load_dataset"),
    ("test sets (corruptions, checksums)", "bench/pipeline/runner.py", "test_distributions"),
    ("all training (parent + retraining)", "bench/pipeline/training.py", "train"),
    ("prune steps: size search", "bench/pruning/search.py", "prune_to_ratio"),
    ("  of which propagation passes", "bench/pruning/propagation.py", "propagation_pass"),
    ("  of which pruners' plan()", "bench/pruning/search.py", "_plugin_call"),
    ("evaluation (all networks x test sets)", "bench/pipeline/training.py", "evaluate"),
    ("  of which model forward", "torch/nn/modules/module.py", "_call_impl"),
    ("job store: write results and networks", "bench/pipeline/store.py", "write_json"),
    ("job store: save networks", "bench/pipeline/store.py", "save_network"),
    ("job store: load networks", "bench/pipeline/store.py", "load_weights"),
    ("job store: done() checks", "bench/pipeline/store.py", "done"),
    ("network files (safetensors)", "bench/results/checkpoints.py", "save_state"),
    ("result file writing", "bench/pipeline/runner.py", "network_results"),
]


def cumulative(stats: pstats.Stats, suffix: str, function: str) -> tuple[float, int]:
    """(cumulative seconds, calls) of every function named `function` in a file ending in `suffix`,
    excluding recursive re-entries (cProfile's cumulative time already counts them once)."""
    seconds, calls = 0.0, 0
    for (filename, _line, name), (_cc, primitive_calls, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if name == function and filename.endswith(suffix):
            seconds += ct
            calls += primitive_calls
    return seconds, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--top", type=int, default=0, help="also print the top N functions by own CPU time")
    args = parser.parse_args()
    open_benchmark(threads=1)

    from bench.pipeline.config import default_config
    from bench.pipeline.runner import run

    config = default_config(threads=1)
    profile = cProfile.Profile(time.process_time)
    with tempfile.TemporaryDirectory(prefix="prunebench-profile-") as out:
        wall = time.perf_counter()
        profile.enable()
        run(config, Path(out), progress=False)
        profile.disable()
        wall = time.perf_counter() - wall
    stats = pstats.Stats(profile)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for label, suffix, function in STAGES:
        seconds, calls = cumulative(stats, suffix, function)
        rows.append([label, f"{seconds:.1f}", f"{100 * seconds / total:.1f} %", str(calls)])
    print()
    print(f"total CPU {total:.1f} s in one process (wall {wall:.1f} s), config {config.config_hash()[:12]}")
    print(markdown_table(["stage", "CPU s", "share", "calls"], rows))
    if args.top:
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()

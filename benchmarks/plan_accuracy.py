"""Accuracy of `bench plan`'s time estimate: estimate / measured wall time of the default `bench run`.

Runs the real CLI in subprocesses, into one fresh temporary --out folder (nothing cached):

* ``bench plan --out TMP``          its printed table, its total ("estimated X on cpu ...") and its own time
* ``bench run --out TMP --quiet``   timed end to end (interpreter start-up and imports included)

RATIO is the plan's estimated total / the run's end-to-end seconds (goal, issue 22: within
0.67 - 1.5). Also shown: the in-process ``provenance.wall_time_s`` the result file records.
One run: a default run takes minutes, so this is a single sample; run it on an otherwise idle
machine (the estimate's calibration and the run must see the same machine).

Run: .venv/bin/python benchmarks/plan_accuracy.py [-- extra bench run arguments]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

from _timing import markdown_table, open_benchmark, ratio_line, run_benchmark, timed_command
from default_run import bench_executable

UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
TOTAL = re.compile(r"^estimated (?P<value>[0-9.]+) (?P<unit>s|min|h) on ", re.MULTILINE)


def estimated_seconds(printed: str) -> float:
    """The total of `bench plan`'s output ("estimated 2.1 min on cpu (2 threads), ...") in seconds."""
    match = TOTAL.search(printed)
    if match is None:
        raise SystemExit(f"no 'estimated ...' line in the output of bench plan:\n{printed}")
    return float(match["value"]) * UNITS[match["unit"]]


def main() -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("extra", nargs="*", help="extra arguments for both bench plan and bench run (after --)")
    args = parser.parse_args()
    open_benchmark()

    with tempfile.TemporaryDirectory(prefix="prunebench-plan-accuracy-") as out:
        plan_s, printed = timed_command([bench_executable(), "plan", "--out", out, *args.extra])
        print(printed)
        estimate = estimated_seconds(printed)
        run_s, _ = timed_command([bench_executable(), "run", "--out", out, "--quiet", *args.extra])
        (result_file,) = Path(out).glob("*.json")
        recorded = float(json.loads(result_file.read_text())["provenance"]["wall_time_s"])

    ratio = estimate / run_s
    print()
    print(markdown_table(
        ["bench plan s", "estimate s", "bench run end to end s", "recorded wall_time_s", "estimate / measured",
         "goal 0.67 - 1.5"],
        [[f"{plan_s:.1f}", f"{estimate:.0f}", f"{run_s:.1f}", f"{recorded:.1f}", f"{ratio:.2f}",
          "met" if 0.67 <= ratio <= 1.5 else "MISSED"]],
    ))
    return ratio_line("plan_accuracy", ratio, "0.67 - 1.5, plan estimate / measured run seconds")


if __name__ == "__main__":
    run_benchmark(main)

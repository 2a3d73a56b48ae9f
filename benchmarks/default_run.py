"""Wall time of the default `bench run` on this machine, as a ratio to the 300 s budget (goal <= 1).

Runs the real CLI in a subprocess, end to end, once per variant, each into a fresh temporary
--out folder (so the parent is trained, never loaded from a cache):

* ``bench run --out TMP --quiet``                      (default: channels_last)
* ``bench run --out TMP --quiet --no-channels-last``   (NCHW)

Reported: seconds from process start to exit (interpreter start-up and imports included) and
the in-process ``provenance.wall_time_s`` the result file records. RATIO is the default run's
end-to-end time / 300 s. One run per variant: a default run takes minutes, so this is a single
sample, not a median; run it on an otherwise idle machine.

Run: .venv/bin/python benchmarks/default_run.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from _timing import markdown_table, open_benchmark, ratio_line, run_benchmark, timed_command

BUDGET_S = 300.0
VARIANTS: dict[str, list[str]] = {
    "default (channels_last)": [],
    "--no-channels-last": ["--no-channels-last"],
}


def bench_executable() -> str:
    """The `bench` console script of the interpreter running this file (the project's venv)."""
    beside = Path(sys.executable).parent / "bench"
    if beside.exists():
        return str(beside)
    found = shutil.which("bench")
    if found is None:
        raise SystemExit("cannot find the `bench` command; run with the project's .venv/bin/python")
    return found


def timed_run(extra: list[str]) -> tuple[float, float, int]:
    """(end-to-end seconds, recorded wall_time_s, networks evaluated) of one `bench run`."""
    with tempfile.TemporaryDirectory(prefix="prunebench-default-run-") as out:
        elapsed, _ = timed_command([bench_executable(), "run", "--out", out, "--quiet", *extra])
        (result_file,) = Path(out).glob("*.json")
        result = json.loads(result_file.read_text())
        return elapsed, float(result["provenance"]["wall_time_s"]), len(result["networks"])


def main() -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.parse_args()
    open_benchmark()

    measured = {label: timed_run(extra) for label, extra in VARIANTS.items()}
    rows = [
        [label, f"{elapsed:.1f}", f"{recorded:.1f}", str(networks), f"{elapsed / BUDGET_S:.2f}", "met" if elapsed <= BUDGET_S else "MISSED"]
        for label, (elapsed, recorded, networks) in measured.items()
    ]
    print()
    print(
        markdown_table(
            ["variant", "end to end s", "recorded wall_time_s", "networks", f"/ {BUDGET_S:g} s", f"goal <= {BUDGET_S:g} s"],
            rows,
        )
    )
    default_s = measured["default (channels_last)"][0]
    nchw_s = measured["--no-channels-last"][0]
    print(f"end to end, --no-channels-last / default = {nchw_s / default_s:.2f} (> 1: channels_last is faster)")
    return ratio_line("default_run", default_s / BUDGET_S, f"<= 1, default run seconds / {BUDGET_S:g} s")


if __name__ == "__main__":
    run_benchmark(main)

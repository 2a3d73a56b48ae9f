"""Wall time of the default `bench run` beside one busy process, as a ratio to the same run on an
idle machine (goal: busy / idle <= 2.5), for several thread/worker settings.

Why: on a 2-core machine, 2-thread torch jobs slow down ~12x when one other process competes
for a core (OpenMP threads spin at every barrier while their partner is descheduled). One
thread per job, with one job per core, only loses the core the neighbour takes.

Each setting runs `bench run --out TMP --quiet <flags>` twice into fresh folders (nothing
cached): once on the idle machine, once while a single-threaded busy loop (another Python
process spinning) competes for the CPUs. A busy run longer than --cap seconds is stopped and
reported as "> cap". Run on an otherwise idle machine; this takes ~20 minutes.

Run: .venv/bin/python benchmarks/busy_machine.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from _timing import markdown_table, open_benchmark, ratio_line, run_benchmark
from default_run import bench_executable

GOAL = 2.5
SETTINGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "--threads 1 --workers 2 (default)": (["--threads", "1", "--workers", "2"], {}),
    "--threads 2 --workers 1": (["--threads", "2", "--workers", "1"], {}),
    "--threads 2 --workers 1, OMP_WAIT_POLICY=PASSIVE": (["--threads", "2", "--workers", "1"], {"OMP_WAIT_POLICY": "PASSIVE"}),
}
DEFAULT_SETTING = "--threads 1 --workers 2 (default)"


@contextmanager
def busy_neighbour() -> Iterator[None]:
    """One single-threaded process spinning on a core for the duration of the block."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def timed_run(flags: list[str], env: dict[str, str], cap: float) -> float | None:
    """Seconds of one fresh `bench run` (None when it ran past ``cap`` and was stopped)."""
    command = [bench_executable(), "run", "--quiet", *flags]
    with tempfile.TemporaryDirectory(prefix="prunebench-busy-") as out:
        print("$ " + " ".join([*(f"{k}={v}" for k, v in env.items()), *command, "--out", out]), flush=True)
        start = time.perf_counter()
        try:
            subprocess.run([*command, "--out", out], env={**os.environ, **env}, check=True,
                           capture_output=True, timeout=cap)
        except subprocess.TimeoutExpired:
            return None
        return time.perf_counter() - start


def main() -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cap", type=float, default=900.0, help="stop a busy run after this many seconds")
    parser.add_argument("--only", nargs="*", default=None, help="measure only these settings (labels' first words)")
    args = parser.parse_args()
    open_benchmark()

    rows, ratios = [], {}
    for label, (flags, env) in SETTINGS.items():
        if args.only and not any(label.startswith(o) for o in args.only):
            continue
        idle = timed_run(flags, env, cap=args.cap)
        with busy_neighbour():
            busy = timed_run(flags, env, cap=args.cap)
        assert idle is not None, f"{label}: the idle run took longer than --cap"
        ratio = busy / idle if busy is not None else None
        ratios[label] = ratio
        rows.append([label, f"{idle:.1f}", f"{busy:.1f}" if busy else f"> {args.cap:.0f}",
                     f"{ratio:.2f}" if ratio else f"> {args.cap / idle:.1f}",
                     "met" if ratio is not None and ratio <= GOAL else "MISSED"])
        print(rows[-1], flush=True)
    print()
    print(markdown_table(["setting", "idle s", "beside 1 busy process s", "busy / idle", f"goal <= {GOAL}"], rows))
    default = ratios.get(DEFAULT_SETTING)
    return ratio_line("busy_machine", default if default is not None else float("inf"),
                      f"<= {GOAL}, default setting, busy / idle wall time")


if __name__ == "__main__":
    run_benchmark(main)

"""Shared helpers of the benchmarks: warm-up + median-of-k timing, tables, the RATIO line.

Benchmarks are plain scripts (not tests). Each measures both sides of its ratio in the same
process, interleaved repetition by repetition (A B A B ...), so slow drifts of the machine
(thermal state, a neighbour's load) hit both sides alike.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

MAX_LOAD = 1.5


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of every timed repetition of one callable."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repetitions were."""
        return (max(self.samples) - min(self.samples)) / self.median if self.median > 0 else 0.0


def measure(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 5) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed."""
    return compare({"fn": fn}, warmup=warmup, repeats=repeats)["fn"]


def compare(fns: Mapping[str, Callable[[], object]], *, warmup: int = 1, repeats: int = 5) -> dict[str, Timing]:
    """Time several callables side by side: warm each up, then interleave their repetitions."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def geometric_mean(values: Sequence[float]) -> float:
    if not values or any(v <= 0 for v in values):
        raise ValueError("geometric mean needs positive values")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A small markdown table; numbers are expected to be pre-formatted strings."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells[1:]]
    return "\n".join(lines)


def ratio_line(name: str, value: float, goal: str) -> str:
    return f"RATIO {name} = {value:.3g} (goal {goal})"


def machine_summary() -> str:
    """CPU model, core count, Python and torch versions, load average: one line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        torch_part = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        torch_part = "torch not installed"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, {torch_part}, "
        f"load average {load:.2f} at start"
    )


def warn_if_busy(max_load: float = MAX_LOAD) -> None:
    """Timings on a 2-core machine are meaningless while something else runs; say so."""
    if not hasattr(os, "getloadavg"):
        return
    load = os.getloadavg()[0]
    if load > max_load:
        print(
            f"warning: 1-minute load average is {load:.2f} (> {max_load}); timings will be noisy",
            file=sys.stderr,
        )


def open_benchmark(threads: int | None = None) -> None:
    """Common opening of every script: fix the torch thread count, warn if busy, describe the machine."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    warn_if_busy()
    print(machine_summary())


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes spent busy since boot (/proc/stat; None where unavailable)."""
    try:
        with open("/proc/stat", encoding="utf-8") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class ForeignLoad:
    """Measures how much CPU *other* processes used while the benchmark ran.

    ``with ForeignLoad() as load: ...`` then ``load.report()``: busy CPU time of the whole
    machine minus this process's own (children included), averaged over the wall time. On a
    2-core machine anything above ~0.1 cores means the timings were disturbed.
    """

    def __enter__(self) -> ForeignLoad:
        self._wall = time.perf_counter()
        self._busy = _busy_cpu_seconds()
        self._own = _own_cpu_seconds()
        self.cores: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        busy = _busy_cpu_seconds()
        wall = time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return
        foreign = (busy - self._busy) - (_own_cpu_seconds() - self._own)
        self.cores = max(foreign, 0.0) / wall

    def report(self) -> str:
        if self.cores is None:
            return "other processes' CPU use: unknown"
        verdict = "quiet machine" if self.cores < 0.1 else "DISTURBED: rerun on an idle machine"
        return f"other processes used {self.cores:.2f} cores on average during the run ({verdict})"


def run_benchmark(main: Callable[[], str]) -> None:
    """Run a benchmark's ``main`` (which prints its table and returns its RATIO line), then
    print how busy the rest of the machine was and, last, the RATIO line."""
    with ForeignLoad() as load:
        line = main()
    print(load.report())
    print(line)


def timed_command(command: list[str]) -> tuple[float, str]:
    """(seconds, stdout) of one CLI command run in a subprocess, echoed first; exits on failure."""
    import subprocess
    import time

    print("$ " + " ".join(command), flush=True)
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if finished.returncode != 0:
        sys.stderr.write(finished.stdout + finished.stderr)
        raise SystemExit(f"{' '.join(command[:2])} failed with exit code {finished.returncode}")
    return elapsed, finished.stdout

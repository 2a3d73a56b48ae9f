"""The kernel's share of building fashion-mnist-c test sets, as a run builds them: in a thread.

Each of the suite's 15 corruptions at severity 3 on N images (per-image seeds, as the suite
draws them) in a thread of a fresh interpreter, with the CLI's malloc settings
(bench.core._allocator), once as this tree sets them and once with glibc's default arena count (the
settings before one arena was added). Prints user and system CPU seconds and minor page faults per
corruption, and the totals. Goal (issue 22 item 2): system time <= 3 % of CPU.

Run: .venv/bin/python benchmarks/kernel_share.py [--images 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _timing import markdown_table, open_benchmark, ratio_line

GOAL = 0.03
PROBE = """
import json, resource, sys, threading, torch
from bench.core._allocator import tune_allocator
tune_allocator()
torch.set_num_threads(1)
from bench.corruptions import corrupt
from suites.fashion_mnist_c import FashionMnistC
n = int(sys.argv[1])
images = (torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
rows = []
def build():
    for name, levels in FashionMnistC.table.items():
        before = resource.getrusage(resource.RUSAGE_THREAD)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        corrupt(images, name, levels[2], list(range(n)))
        after = resource.getrusage(resource.RUSAGE_THREAD)
        rows.append((name, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
                     resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
thread = threading.Thread(target=build)
thread.start()
thread.join()
print(json.dumps(rows))
"""


def measure(images: int, arena_max: str | None) -> list[tuple[str, float, float, int]]:
    env = dict(os.environ)
    env.pop("MALLOC_ARENA_MAX", None)
    if arena_max is not None:
        env["MALLOC_ARENA_MAX"] = arena_max  # preset: tune_allocator keeps the user's value
    out = subprocess.run([sys.executable, "-c", PROBE, str(images)], env=env, capture_output=True, text=True,
                         check=True)
    return [tuple(row) for row in json.loads(out.stdout)]  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    open_benchmark()
    sides = {"glibc's arenas (before)": measure(args.images, "8"), "one arena (this tree)": measure(args.images, None)}
    names = [row[0] for row in next(iter(sides.values()))]
    table = []
    for index, name in enumerate(names):
        cells = [name]
        for rows in sides.values():
            _, user, system, faults = rows[index]
            cells.append(f"{user:.2f} / {system:.2f} / {faults / 1000:.0f} k")
        table.append(cells)
    shares = {}
    totals = ["total"]
    for side, rows in sides.items():
        user, system = sum(r[1] for r in rows), sum(r[2] for r in rows)
        shares[side] = system / (user + system)
        totals.append(f"{user:.1f} / {system:.2f} ({100 * shares[side]:.1f} % system) / "
                      f"{sum(r[3] for r in rows) / 1000:.0f} k")
    table.append(totals)
    print(f"fashion-mnist-c at severity 3, {args.images} images, built in a thread; "
          "user s / system s / minor faults")
    print(markdown_table(["corruption", *sides], table))
    print(ratio_line("kernel_share", shares["one arena (this tree)"] / GOAL, "<= 1, system / CPU over 3 %"))


if __name__ == "__main__":
    main()

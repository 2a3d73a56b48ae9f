"""Peak memory and CPU of the commands that only read result files, on the committed results.

`bench --help`, `bench leaderboard leaderboard/results` (markdown, JSON and HTML into a temporary
folder) and `bench validate` of every committed result file, each in a fresh interpreter that
reports its own peak RSS, CPU seconds and whether torch or timm got imported. Goal (issue 22):
no torch, peak RSS <= 200 MB. RATIO is the largest peak RSS / 200 MB.

Run: .venv/bin/python benchmarks/board_commands.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _timing import markdown_table, open_benchmark, ratio_line, run_benchmark

ROOT = Path(__file__).resolve().parents[1]
GOAL_MB = 200.0
PROBE = """
import json, resource, sys, time
start = time.process_time()
from bench.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exit:
    code = exit.code
usage = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss across exec
peak_kb = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:'))
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'torchvision'})
print(json.dumps({'code': code, 'peak_mb': peak_kb / 1024, 'cpu_s': usage.ru_utime + usage.ru_stime,
                  'heavy': heavy}), file=sys.__stderr__)
"""


def probe(args: list[str]) -> dict[str, object]:
    finished = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, cwd=ROOT)
    return json.loads(finished.stderr.strip().splitlines()[-1])


def main() -> str:
    open_benchmark()
    results = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "leaderboard" / "results").glob("*.json")
                     if not p.name.endswith(".verify.json"))
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            "bench --help": ["--help"],
            "bench leaderboard (md + json + html)": ["leaderboard", "leaderboard/results", "-o", f"{tmp}/board.md",
                                                     "--json", f"{tmp}/board.json", "--html", f"{tmp}/index.html"],
            f"bench validate ({len(results)} files)": ["validate", *results],
        }
        measured = {name: probe(args) for name, args in commands.items()}
    rows = [[name, str(m["code"]), f"{m['peak_mb']:.0f}", f"{m['cpu_s']:.2f}", ", ".join(m["heavy"]) or "none"]  # type: ignore[arg-type]
            for name, m in measured.items()]
    print(markdown_table(["command", "exit", "peak RSS MB", "CPU s", "heavy imports"], rows))
    worst = max(float(m["peak_mb"]) for m in measured.values())  # type: ignore[arg-type]
    return ratio_line("board_commands", worst / GOAL_MB, f"<= 1, largest peak RSS / {GOAL_MB:g} MB, and no torch")


if __name__ == "__main__":
    run_benchmark(main)

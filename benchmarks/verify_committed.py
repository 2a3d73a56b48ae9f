"""Wall time of `bench verify` on the committed leaderboard results, as a ratio to the time
`bench run` took to make them (goal <= 0.1).

For each committed result file: `bench verify FILE --quiet --no-report` in a subprocess (end to
end: interpreter start, data, rebuilding the 64 test sets, loading 25 networks, re-evaluating
every per-example hit) against the `provenance.wall_time_s` that `bench run` recorded for it (the
run's own in-process time; these files were made on this machine). Also split out: the time
verify spends evaluating, measured in-process for one network, times the network count.
Run it on an otherwise idle machine.

Run: .venv/bin/python benchmarks/verify_committed.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _timing import markdown_table, open_benchmark, ratio_line, timed_command

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "leaderboard" / "results"
GOAL = 0.1


def timed_verify(path: Path) -> float:
    command = [str(Path(sys.executable).parent / "bench"), "verify", str(path), "--quiet", "--no-report"]
    return timed_command(command)[0]


def evaluation_seconds_per_network(path: Path) -> float:
    """In-process time to evaluate the parent on every test set of the result (what verify repeats)."""
    from bench.data import load_dataset
    from bench.pipeline.jobs import job_environment, new_model
    from bench.pipeline.runner import test_distributions
    from bench.pipeline.training import evaluate
    from bench.results import load_result, networks_folder
    from bench.results.checkpoints import load_state

    result = load_result(path)
    config = result.config
    with job_environment(config):
        data = load_dataset(config.dataset, config.seed, config.per_class, config.image_size)
        distributions = test_distributions(config, data)
        model = load_state(new_model(config, data), networks_folder(path) / "parent-0.safetensors").eval()
        start = time.perf_counter()
        for dist in distributions:
            evaluate(model, data, dist.images, precision=config.precision)
        return time.perf_counter() - start


def main() -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.parse_args()
    open_benchmark()
    rows, ratios = [], []
    for path in sorted(RESULTS.glob("*.json")):
        if path.name.endswith(".verify.json"):
            continue
        raw = json.loads(path.read_text())
        made_in = float(raw["provenance"]["wall_time_s"])
        verify = timed_verify(path)
        evaluation = evaluation_seconds_per_network(path) * len(raw["networks"])
        ratios.append(verify / made_in)
        rows.append([path.name, f"{made_in:.1f}", f"{verify:.1f}", f"{evaluation:.1f}", f"{verify / made_in:.2f}",
                     f"{evaluation / made_in:.2f}"])
    print()
    print(markdown_table(["result file", "bench run s", "bench verify s", "of which evaluation s (est.)",
                          "verify / run", "evaluation / run"], rows))
    worst = max(ratios)
    return ratio_line("verify_over_run", worst, f"<= {GOAL:g}, worst of {len(ratios)} committed files")


if __name__ == "__main__":
    print(main())

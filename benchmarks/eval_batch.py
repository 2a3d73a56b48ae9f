"""Evaluation batch size: throughput per batch size, and whether the hits change (issue 22 item 4).

For each model of a committed result (digits_cnn, fashion_cnn), at one thread (one job per core, the
run's default): the time of `bench.pipeline.training.correct_predictions` over a run's clean test set plus
its first shifted sets, for each batch size, interleaved (median of --repeats). Then, for the
committed networks of every committed result (`leaderboard/results`), the logits at each batch size
against batch 256 (the batch the committed results were evaluated with): how many networks give
bitwise-identical logits, and how many per-example hits differ.

RATIO: throughput of the fastest batch size / batch 256 on the first model.

Run: .venv/bin/python benchmarks/eval_batch.py [--repeats 5] [--networks 6]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _timing import compare, markdown_table, open_benchmark, ratio_line, run_benchmark

from bench.data import load_dataset
from bench.pipeline.jobs import new_model
from bench.pipeline.runner import test_distributions
from bench.pipeline.training import correct_predictions
from bench.results import find_result_files, load_result, networks_folder
from bench.results.checkpoints import fit_state, read_state
from bench.results.schema import PARENT, RunResult

ROOT = Path(__file__).resolve().parents[1]
SIZES = (16, 32, 64, 128, 256, 512)
REFERENCE = 256  # what the committed results were evaluated with


def committed_results() -> list[tuple[Path, RunResult]]:
    return [(path, load_result(path)) for path in find_result_files(ROOT / "leaderboard" / "results")]


def logits(model: torch.nn.Module, images: torch.Tensor, normalize, batch: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(normalize(chunk)) for chunk in images.split(batch)])


def main() -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--networks", type=int, default=6, help="committed networks checked per result file")
    parser.add_argument("--sets", type=int, default=8, help="test sets timed per model (clean first)")
    args = parser.parse_args()
    open_benchmark(threads=1)

    results = committed_results()
    first_of_model: dict[str, tuple[Path, RunResult]] = {}
    for path, result in results:
        first_of_model.setdefault(result.config.model, (path, result))

    ratios: list[float] = []
    for model_name, (_, result) in first_of_model.items():
        config = result.config
        data = load_dataset(config.dataset, config.seed, config.per_class, config.image_size)
        sets = test_distributions(config, data)[: args.sets]
        model = new_model(config, data)
        model.eval()
        images = sum(len(d.images) for d in sets)

        def timed(batch: int) -> None:
            for dist in sets:
                correct_predictions(model, data, dist.images, batch_size=batch)

        timings = compare({str(b): (lambda b=b: timed(b)) for b in SIZES}, warmup=1, repeats=args.repeats)
        reference = timings[str(REFERENCE)].median
        print(f"\n{model_name} ({config.dataset}): {len(sets)} test sets, {images:,} images, 1 thread")
        print(markdown_table(["batch", "median s", "images/s", f"speed vs {REFERENCE}"],
                             [[b, f"{timings[str(b)].median:.3f}", f"{images / timings[str(b)].median:,.0f}",
                               f"{reference / timings[str(b)].median:.2f}x"] for b in SIZES]))
        ratios.append(max(reference / t.median for t in timings.values()))

    print("\nCommitted networks: logits at each batch size against batch 256 (clean test set)")
    rows = []
    for path, result in results:
        config = result.config
        data = load_dataset(config.dataset, config.seed, config.per_class, config.image_size)
        clean = data.test
        chosen = [n for n in result.networks if n.pruner == PARENT][:1] + \
            [n for n in result.networks if n.pruner != PARENT][: args.networks - 1]
        identical = {b: 0 for b in SIZES}
        changed_hits = {b: 0 for b in SIZES}
        for net in chosen:
            model = new_model(config, data)
            fit_state(model, read_state(networks_folder(path) / net.file.name, net.file.sha256), path)
            model.eval()
            base = logits(model, clean.images, data.normalize, REFERENCE)
            for b in SIZES:
                other = logits(model, clean.images, data.normalize, b)
                identical[b] += int(torch.equal(base, other))
                changed_hits[b] += int(((base.argmax(1) == clean.labels) != (other.argmax(1) == clean.labels)).sum())
        rows.append([path.name[:40], str(len(chosen)),
                     *[f"{identical[b]}/{len(chosen)}, {changed_hits[b]}" for b in SIZES]])
    print(markdown_table(["result", "networks", *[f"batch {b}: identical, hits changed" for b in SIZES]], rows))
    return ratio_line("eval_batch", ratios[0], f"> 1 where a batch beats {REFERENCE}: fastest / batch {REFERENCE}")


if __name__ == "__main__":
    run_benchmark(main)

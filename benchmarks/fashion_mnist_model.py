"""The Fashion-MNIST model and recipe: test accuracy (goal >= 90 %) and what the protocol costs on this machine.

For each candidate (a timm-registered prunebench model, the fashion-mnist recipe of bench.data.recipes or
fewer epochs) the parent is trained on the real 55k train split (seed 0, one thread, as a `bench run`
job trains) and evaluated on the official 10k test images. Reported per candidate: parameters,
test accuracy, seconds per training epoch and test images evaluated per second. From those, the
protocol estimate per seed on 2 cores: the parent, 4 pruners x the dataset's ratio grid x the
retrain epochs (plus 15 % for size searches), and every network (parent + 4 x grid) on every test
set (the clean one, 8 noise sets and 75 fashion-mnist-c sets) spread over both cores.

Needs the real data (apt-get install dataset-fashion-mnist, or --download once).

Run: .venv/bin/python benchmarks/fashion_mnist_model.py [--models fashion_cnn,digits_cnn] [--epochs 24,12]
     [--save DIR]  (keeps each trained parent as DIR/<model>-<epochs>.pt, e.g. for calibrating a suite)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _timing import markdown_table, open_benchmark, ratio_line, run_benchmark

from bench.data import load_dataset
from bench.models import create_model
from bench.pipeline.config import default_config
from bench.pipeline.training import evaluate, train

BUDGET_S = 40 * 60
TEST_SETS = 1 + 8 + 15 * 5  # clean, noise, fashion-mnist-c
SEARCH_OVERHEAD = 1.15  # size searches: propagation passes over S, ~8 % of a digits run (profile_run.py)


def measure(model_name: str, epochs: int, save: Path | None) -> list[object]:
    config = default_config(dataset="fashion-mnist", model=model_name, epochs=epochs)
    data = load_dataset("fashion-mnist", 0)
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_chans=1)
    params = sum(p.numel() for p in model.parameters())
    started = time.perf_counter()
    train(model, data, config.train, seed=0, progress=False)
    per_epoch = (time.perf_counter() - started) / max(epochs, 1)
    started = time.perf_counter()
    accuracy = float(evaluate(model, data, data.test)["accuracy"])  # type: ignore[arg-type]
    per_second = len(data.test) / (time.perf_counter() - started)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), save / f"{model_name}-{epochs}.pt")
    steps = 4 * len(config.target_ratios)
    training_s = epochs * per_epoch + steps * config.retrain.epochs * per_epoch * SEARCH_OVERHEAD
    evaluation_s = (1 + steps) * TEST_SETS * len(data.test) / per_second
    estimate = (training_s + evaluation_s) / 2  # two cores, one job per core
    return [model_name, epochs, f"{params:,}", f"{100 * accuracy:.2f}", f"{per_epoch:.1f}", f"{per_second:,.0f}",
            f"{estimate / 60:.1f}", "met" if accuracy >= 0.9 and estimate <= BUDGET_S else "missed"]


def main() -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", default="fashion_cnn")
    parser.add_argument("--epochs", default="24")
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    open_benchmark(threads=1)
    rows = [measure(model, int(epochs), args.save) for model in args.models.split(",") for epochs in args.epochs.split(",")]
    print()
    print(markdown_table(["model", "epochs", "parameters", "test accuracy %", "s / epoch (1 thread)",
                          "test images / s", "protocol estimate min / seed", "goal (>= 90 %, <= 40 min)"], rows))
    best = rows[0]
    return ratio_line("fashion_mnist_model", float(str(best[6])) * 60 / BUDGET_S,
                      "<= 1, estimated protocol minutes per seed / 40 (first row)")


if __name__ == "__main__":
    run_benchmark(main)

"""Calibration of the fashion-mnist-c constants: the parent's test error per corruption and severity.

The suite's constants should make the parent's error rise steadily from severity 1 to 5. This
evaluates one trained parent (a state dict, e.g. from benchmarks/fashion_mnist_model.py --save, or
trained here with the dataset's recipe) on every test set of the suite, built exactly as `bench run`
builds them (seed 0), and prints the error table (%): the clean error, then one row per corruption;
"steady" says whether the error grows with every severity.

Needs the real data (apt-get install dataset-fashion-mnist, or --download once).

Run: .venv/bin/python benchmarks/calibrate_fashion_mnist_c.py [--parent fashion_cnn-24.pt] [--images 2000]
"""

from __future__ import annotations

import argparse
import dataclasses
from itertools import pairwise
from pathlib import Path

import torch
from _timing import markdown_table, open_benchmark

from bench.core.registry import SUITE_GROUP, load_class
from bench.data import load_dataset
from bench.data.suite import Suite
from bench.models import create_model
from bench.pipeline.config import default_config
from bench.pipeline.training import evaluate, train


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parent", type=Path, default=None, help="a trained parent's state dict (default: train one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=None, help="only the first N test images (a quicker table)")
    args = parser.parse_args()
    open_benchmark(threads=1)
    config = default_config(dataset="fashion-mnist", seed=args.seed)
    data = load_dataset("fashion-mnist", args.seed)
    if args.images is not None:
        data = dataclasses.replace(data, test=data.test.subset(torch.arange(min(args.images, len(data.test)))))
    torch.manual_seed(args.seed)
    model = create_model(config.model, num_classes=10, in_chans=1)
    if args.parent is not None:
        model.load_state_dict(torch.load(args.parent, weights_only=True))
    else:
        train(model, data, config.train, seed=args.seed, progress=True)
    model.eval()
    suite = load_class(SUITE_GROUP, "fashion-mnist-c", Suite)()
    errors: dict[str, list[float]] = {}
    for dist in suite.distributions(data, args.seed):
        accuracy = float(evaluate(model, data, dist.images)["accuracy"])  # type: ignore[arg-type]
        errors.setdefault(str(dist.corruption), []).append(100 * (1 - accuracy))
    clean = 100 * (1 - float(evaluate(model, data, data.test)["accuracy"]))  # type: ignore[arg-type]
    rows = [[name, *(f"{e:.1f}" for e in row), "yes" if all(b > a for a, b in pairwise(row)) else "NO"]
            for name, row in errors.items()]
    print(f"\nclean test error: {clean:.2f} % ({len(data.test)} test images)\n")
    print(markdown_table(["corruption", *(f"severity {s}" for s in range(1, 6)), "steady"], rows))


if __name__ == "__main__":
    main()

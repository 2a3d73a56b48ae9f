"""Suite evaluation throughput / raw forward throughput of the same model (goal >= 0.9).

Both sides push the same images through the same model in the same batches (256, so every
540-image test set is 256 + 256 + 28):

* raw forward: ``model(x)`` under ``torch.inference_mode()`` on batches normalised beforehand
  (float32, NCHW as ``DataBundle.normalize`` returns them), outputs discarded;
* suite evaluation: ``bench.pipeline.training.correct_predictions(model, data, images)`` for every test
  distribution ``bench.pipeline.runner.test_distributions`` builds for digits with suites noise +
  digits-c (clean + 8 + 55 = 64 sets), i.e. uint8 -> float normalisation, forward, argmax and
  comparison with the labels, exactly what ``bench.pipeline.training.evaluate`` runs per network.

Models are randomly initialised (throughput does not depend on training) and converted to
channels_last like the runner does. RATIO is the smaller of the two models' ratios.

Run: .venv/bin/python benchmarks/eval_throughput.py [--repeats 5] [--models digits_cnn,resnet20_cifar]
"""

from __future__ import annotations

import argparse

import torch
from _timing import compare, markdown_table, open_benchmark, ratio_line, run_benchmark
from torch import nn

from bench.data import DataBundle, load_dataset
from bench.data.suite import TestDistribution
from bench.models import create_model
from bench.pipeline.config import default_config
from bench.pipeline.runner import test_distributions
from bench.pipeline.training import correct_predictions

MODELS = ("digits_cnn", "resnet20_cifar")
SUITES = ("noise", "digits-c")
BATCH_SIZE = 256
GOAL = 0.9


def suite_distributions(model: str, seed: int) -> tuple[DataBundle, list[TestDistribution]]:
    """The runner's test distributions for the default digits run (config as `bench run` builds it)."""
    config = default_config(model=model, pruners=("wt",), suites=SUITES, target_ratios=(0.5,), seed=seed,
                            calibration_size=256)
    data = load_dataset(config.dataset, config.seed)
    return data, test_distributions(config, data)


def raw_forward(model: nn.Module, batches: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        for x in batches:
            model(x)


def suite_evaluation(model: nn.Module, data: DataBundle, distributions: list[TestDistribution]) -> None:
    for d in distributions:
        correct_predictions(model, data, d.images, batch_size=BATCH_SIZE)


def main() -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per side (median)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    open_benchmark(args.threads)

    data, distributions = suite_distributions(MODELS[0], seed=0)
    images = sum(len(d.images) for d in distributions)
    batches = [data.normalize(chunk) for d in distributions for chunk in d.images.images.split(BATCH_SIZE)]
    print(f"{len(distributions)} test distributions, {images} images, {len(batches)} batches of <= {BATCH_SIZE}")

    rows = []
    ratios = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        torch.manual_seed(0)
        model = create_model(name, num_classes=data.num_classes, in_chans=3)
        model = model.to(memory_format=torch.channels_last).eval()
        # warm-up on both batch shapes (256 and the 28-image tail) before the interleaved passes
        raw_forward(model, batches[:3])
        suite_evaluation(model, data, distributions[:1])
        timings = compare(
            {
                "raw": lambda: raw_forward(model, batches),
                "suite": lambda: suite_evaluation(model, data, distributions),
            },
            warmup=0,
            repeats=args.repeats,
        )
        raw, suite = timings["raw"], timings["suite"]
        print(f"  {name}: raw s/pass {[round(t, 2) for t in raw.samples]}, suite s/pass {[round(t, 2) for t in suite.samples]}")
        ratios[name] = raw.median / suite.median  # throughput ratio = inverse time ratio
        rows.append(
            [
                name,
                f"{images / raw.median:,.0f}",
                f"{images / suite.median:,.0f}",
                f"{raw.median:.2f}",
                f"{suite.median:.2f}",
                f"{max(raw.spread, suite.spread):.1%}",
                f"{ratios[name]:.3f}",
                "met" if ratios[name] >= GOAL else "MISSED",
            ]
        )
    print()
    print(
        markdown_table(
            [
                "model (channels_last)",
                "raw forward img/s",
                "suite eval img/s",
                "raw s/pass",
                "suite s/pass",
                "max spread",
                "suite / raw",
                f"goal >= {GOAL}",
            ],
            rows,
        )
    )
    print(f"(median of {args.repeats} interleaved passes over all {images} images; spread = (max - min) / median)")
    return ratio_line("eval_throughput", min(ratios.values()), f">= {GOAL}, min over models")


if __name__ == "__main__":
    run_benchmark(main)

"""Masked (dense) / compressed latency of structured-pruned ResNet20 (goal >= 2x for FT at ~80 %).

FT and PFP prune by masking: the network keeps its shape and its speed. ``bench.compress.compress``
removes the dead channels physically (same function: max |Δ logit| is checked <= 1e-5 before
anything is timed). This script prunes ``resnet20_cifar`` with FT and PFP to ~50 % and ~80 %
(``bench.pruning.prune_to_ratio``, measured ratio of nonzero parameters) and times both nets.

Network: random init (seed 0) with non-trivial BatchNorm, standing in for a trained one: affine
drawn at random (γ ~ U(0.5, 1.5), β ~ N(0, 0.1²); β ≠ 0 makes FT's zeroed filters output nonzero
constants, which compression folds into the next layer's bias and border correction, as in
trained networks) and running statistics from 10 train-mode forwards on digits training images.
PFP's calibration set: the first 64 digits validation images.

Latency: ``bench.compress.compare``: eval mode, torch.inference_mode, one fixed N(0, 1) batch of
64 x 3x32x32 float32 in channels_last (models converted alike), 2 intra-op threads, 5 warm-up
forwards per model, then --repeats rounds timing one forward of each model in turn (interleaved);
median. RATIO = dense / compressed median latency of FT at ~80 %.

Run: .venv/bin/python benchmarks/compression.py [--repeats 20] [--threads 2] [--batch 64]
"""

from __future__ import annotations

import argparse
import copy

import torch
from _timing import markdown_table, open_benchmark, ratio_line, run_benchmark
from torch import nn

from bench.compress import TOLERANCE, compare, compress, max_abs_diff
from bench.data import load_dataset
from bench.models import create_model
from bench.pruning import PruneContext, count_nonzero, last_layer_name, prune_to_ratio
from pruners.ft import FilterThresholding
from pruners.pfp import PFP

MODEL = "resnet20_cifar"
CASES = (("ft", 0.5), ("ft", 0.8), ("pfp", 0.5), ("pfp", 0.8))
GOAL = 2.0


def stand_in_network(train_images: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=10)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
                module.momentum = None  # cumulative average over the forwards below
        model.train()
        for batch in train_images.split(64)[:10]:
            model(batch)
    return model.eval()


def main() -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed forwards per network (median)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    open_benchmark(args.threads)

    data = load_dataset("digits", 0)
    parent = stand_in_network(data.normalize(data.train.images))
    calibration = data.normalize(data.val.images[:64])
    check = data.normalize(data.test.images[:256])
    ctx = PruneContext(calibration=calibration, labels=data.val.labels[:64], seed=0, last_layer=last_layer_name(parent))
    parent_nonzero = count_nonzero(parent)
    pruners = {"ft": FilterThresholding(), "pfp": PFP()}

    rows = []
    speedups: dict[tuple[str, float], float] = {}
    for name, target in CASES:
        masked = copy.deepcopy(parent)
        outcome = prune_to_ratio(masked, pruners[name], target, parent_nonzero, ctx)
        compressed, report = compress(masked, check[:1])
        diff = max_abs_diff(masked, compressed, check)
        if diff > TOLERANCE:
            raise SystemExit(f"{name} {target}: compressed logits differ by {diff:.2e} > {TOLERANCE:g}")
        m = compare({"dense": masked, "compressed": compressed}, (3, 32, 32), batch=args.batch,
                    warmup=args.warmup, repeats=args.repeats, threads=args.threads)
        dense, small = m["dense"], m["compressed"]
        speedups[(name, target)] = dense.latency_ms / small.latency_ms
        rows.append([
            name, f"{100 * outcome.prune_ratio:.1f}",
            f"{dense.params / 1e3:.1f}k", f"{small.params / 1e3:.1f}k",
            f"{dense.macs / 1e6:.2f}M", f"{small.macs / 1e6:.2f}M",
            f"{dense.latency_ms:.2f}", f"{small.latency_ms:.2f}",
            f"{speedups[(name, target)]:.2f}x", f"{dense.macs / small.macs:.1f}x",
            str(report.scatters), f"{diff:.1e}",
        ])
        print(f"  {name} {target}: done", flush=True)
    print()
    print(markdown_table(
        ["pruner", "measured ratio %", "params dense", "params compr.", "MACs dense", "MACs compr.",
         "latency dense ms", "latency compr. ms", "speedup", "MACs ratio", "scatters", "max abs Δ logit"],
        rows,
    ))
    print(f"(batch {args.batch}, float32, channels_last, {args.threads} threads, median of {args.repeats} "
          f"interleaved forwards after {args.warmup} warm-up; MACs: conv + linear per image)")
    return ratio_line("compression_speedup_ft80", speedups[("ft", 0.8)],
                      f">= {GOAL:g}, dense / compressed latency, {MODEL} FT at ~80 %")


if __name__ == "__main__":
    run_benchmark(main)

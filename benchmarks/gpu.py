"""GPU training throughput: prunebench's training epoch / the raw training loop (goal >= 0.8), and
jobs-per-GPU scaling.

Needs a CUDA device; without one it prints one line saying it was skipped and exits 0.

1. Epoch. ResNet20 (``resnet20_cifar``, 10 classes, channels_last as the jobs build it) on 50,000
   CIFAR-shaped random uint8 images (3x32x32, random labels; throughput does not depend on them):

   * prunebench: ``bench.pipeline.training.train`` with a ``bench.data.DataBundle`` held on the CPU as
     ``load_dataset`` returns it, the paper's CIFAR recipe (``bench.data.recipes.CIFAR_RESNET``: batch
     128, SGD, per-iteration learning-rate schedule, crop-flip augmentation) for one epoch: batch
     indexing, augmentation, normalisation, host-to-device copies and all, as every parent and
     retrain step of a CUDA run trains;
   * raw: the same model on the same device, forward + cross-entropy + backward + optimizer step
     (the same SGD settings) over the same number of batches of 128, normalised and on the GPU
     beforehand.

   Warm-up epoch each, then interleaved repetitions, median. RATIO gpu_epoch = prunebench images/s
   / raw images/s (= raw epoch time / prunebench epoch time).
2. Jobs per GPU. K = 1, 2, 4 jobs at once on the same GPU through prunebench's local executor
   (``LocalExecutor(gpus=[0], jobs_per_gpu=K)``: K spawned workers pinned to the GPU by
   CUDA_VISIBLE_DEVICES), each training ResNet20 with ``bench.pipeline.training.train`` on its own 50,000
   images; the jobs warm up, meet at a barrier, then train ``--repeats`` epochs. Total images/s =
   K x images x repeats / (last finish - first start), relative to K = 1.

Run: .venv/bin/python benchmarks/gpu.py [--repeats 3] [--images 50000] [--jobs 1,2,4] [--threads 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Any

import torch
import torch.nn.functional as F
from _timing import compare, markdown_table, open_benchmark, ratio_line, run_benchmark
from torch import nn

from bench.data import DataBundle, ImageSet
from bench.data.normalization import CIFAR10_MEAN, CIFAR10_STD
from bench.data.recipes import CIFAR_RESNET
from bench.models import create_model
from bench.pipeline.executors import LocalExecutor
from bench.pipeline.training import make_optimizer, train
from bench.results.schema import Recipe

SKIPPED = "no CUDA device: benchmarks/gpu.py measures GPU throughput and was skipped"
MODEL = "resnet20_cifar"
GOAL = 0.8
RECIPE = CIFAR_RESNET.model_copy(update={"epochs": 1})


def random_cifar(images: int, seed: int = 0) -> DataBundle:
    """CIFAR-shaped random data on the CPU, uint8 like every prunebench data set."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> ImageSet:
        return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
                        torch.randint(0, 10, (n,), generator=generator))

    return DataBundle(name="cifar10-random", train=split(images), val=split(256), test=split(256), num_classes=10,
                      mean=CIFAR10_MEAN, std=CIFAR10_STD)


def new_model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=10)
    return model.to(memory_format=torch.channels_last).to(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (the clock must not stop before the GPU does)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prunebench_epoch(model: nn.Module, data: DataBundle, recipe: Recipe, device: torch.device) -> None:
    train(model, data, recipe, seed=0, progress=False)  # trains on the model's device, data moved per batch
    synchronize(device)


def raw_batches(data: DataBundle, batch_size: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The epoch's batches, normalised and on the GPU before the clock starts."""
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    return [(data.normalize(data.train.images[batch]).to(device), data.train.labels[batch].to(device))
            for batch in order.split(batch_size)]


def raw_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
              batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> None:
    model.train()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)


def scaling_job(images: int, seed: int, repeats: int, threads: int, barrier: Any,
                device_type: str = "cuda") -> tuple[float, float]:
    """One of K jobs sharing a GPU (run in an executor worker that sees only that GPU, as cuda:0):
    warm up, wait for the others, train `repeats` epochs; return (start, end) on the monotonic clock."""
    torch.set_num_threads(threads)
    device = torch.device(device_type)
    data = random_cifar(images, seed)
    model = new_model(device)
    prunebench_epoch(model, random_cifar(2048, seed), RECIPE, device)  # CUDA context, cuDNN plans
    barrier.wait(timeout=600)
    start = time.monotonic()
    for _ in range(repeats):
        prunebench_epoch(model, data, RECIPE, device)
    return start, time.monotonic()


def scaling(jobs_per_gpu: list[int], images: int, repeats: int, threads: int,
            device_type: str = "cuda") -> list[list[str]]:
    rows = []
    baseline: float | None = None
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        for k in jobs_per_gpu:
            barrier = manager.Barrier(k)
            executor = LocalExecutor(progress=False, gpus=[0], jobs_per_gpu=k)
            spans = executor.run([(scaling_job, (images, seed, repeats, threads, barrier, device_type)) for seed in range(k)],
                                 desc=f"{k} jobs per GPU")
            wall = max(end for _, end in spans) - min(start for start, _ in spans)
            total = k * images * repeats / wall
            if k == 1:
                baseline = total
            per_job = [images * repeats / (end - start) for start, end in spans]
            rows.append([str(k), f"{wall:.1f}", f"{total:,.0f}", f"{min(per_job):,.0f}-{max(per_job):,.0f}",
                         f"{total / baseline:.2f}" if baseline else "n/a"])
            print(f"  K={k}: {total:,.0f} images/s in total over {wall:.1f} s", flush=True)
    return rows


def epoch_ratio(images: int, repeats: int, device: torch.device) -> float:
    """Part 1: print the epoch table; return prunebench images/s / raw images/s."""
    data = random_cifar(images)
    ours, raw = new_model(device), new_model(device)
    optimizer = make_optimizer(raw, RECIPE)
    batches = raw_batches(data, RECIPE.batch_size, device)
    timings = compare(
        {
            "raw": lambda: raw_epoch(raw, optimizer, batches, device),
            "prunebench": lambda: prunebench_epoch(ours, data, RECIPE, device),
        },
        warmup=1,
        repeats=repeats,
    )
    raw_t, ours_t = timings["raw"], timings["prunebench"]
    ratio = raw_t.median / ours_t.median
    print()
    print(markdown_table(
        ["model (channels_last)", "raw img/s", "prunebench img/s", "raw s/epoch", "prunebench s/epoch", "max spread",
         "prunebench / raw", f"goal >= {GOAL}"],
        [[MODEL, f"{images / raw_t.median:,.0f}", f"{images / ours_t.median:,.0f}", f"{raw_t.median:.2f}",
          f"{ours_t.median:.2f}", f"{max(raw_t.spread, ours_t.spread):.1%}", f"{ratio:.3f}",
          "met" if ratio >= GOAL else "MISSED"]],
    ))
    print(f"(median of {repeats} interleaved epochs after one warm-up epoch each)")
    return ratio


def main(args: argparse.Namespace) -> str:
    open_benchmark(args.threads)
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(device)}, {args.images} images of 3x32x32, {MODEL}, "
          f"batch {RECIPE.batch_size}, {args.threads} CPU threads per process")

    ratio = epoch_ratio(args.images, args.repeats, device)
    torch.cuda.empty_cache()

    print()
    jobs = [int(k) for k in args.jobs.split(",") if k.strip()]
    rows = scaling(jobs, args.images, args.repeats, args.threads)
    print()
    print(markdown_table(["jobs per GPU", "wall s", "total img/s", "img/s per job", "total / K=1"], rows))
    print(f"(each job: {args.repeats} epochs of {args.images} images after a barrier; jobs pinned by the local executor)")
    return ratio_line("gpu_epoch", ratio, f">= {GOAL}, prunebench epoch img/s / raw training img/s")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per side (median), and per scaling job")
    parser.add_argument("--images", type=int, default=50_000, help="training images per epoch")
    parser.add_argument("--jobs", default="1,2,4", help="comma-separated jobs per GPU for the scaling table")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per process (bench run's --threads)")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if not torch.cuda.is_available():
        print(SKIPPED)
        raise SystemExit(0)
    run_benchmark(lambda: main(arguments))

"""Peak memory of the noise-similarity analysis vs the number of draws (goal: flat, RATIO ≈ 1).

``bench.analysis.functional_similarity`` streams ε → draw → image batch and keeps running sums,
so its peak memory should not depend on the number of draws. For contrast, a "materialised"
variant builds all draws of one ε at once and keeps every network's logits (what torchprune's
eps_ball script does: 18 GB of inputs for ResNet20 on CIFAR), which grows linearly.

torch's CPU allocator is invisible to tracemalloc, so every setting runs in a fresh subprocess
that reads /proc/self/status: after set-up (data, networks, one warm-up pass) it resets the
peak-RSS counter (``5 > /proc/self/clear_refs``), runs the analysis, and reports VmHWM − VmRSS
before the analysis as the analysis's peak growth. Networks are randomly initialised: memory does
not depend on training.

RATIO = peak RSS at the most draws ÷ peak RSS at the fewest draws, streaming (goal ≈ 1.0).

Run: .venv/bin/python benchmarks/similarity_memory.py [--draws 5,20,80] [--images 256] [--networks 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from _timing import machine_summary, markdown_table, ratio_line, run_benchmark

from bench.analysis import (
    AnalysisNetwork,
    draw_seed,
    functional_similarity,
    noisy_inputs,
)
from bench.data import DataBundle, ImageSet, load_dataset
from bench.models import create_model

EPSILON = 0.1
BATCH_SIZE = 256


def status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
        handle.write("5")


def random_networks(model: str, count: int, data: DataBundle) -> list[AnalysisNetwork]:
    networks = []
    for index in range(count):
        torch.manual_seed(index)
        net = create_model(model, num_classes=data.num_classes).eval()
        networks.append(AnalysisNetwork("parent" if index == 0 else f"net {index}",
                                        "parent" if index == 0 else "random", index, 0.0, net))
    return networks


def materialised(networks: list[AnalysisNetwork], data: DataBundle, images: ImageSet, draws: int) -> float:
    """All draws of one ε at once, every network's logits kept; returns the parent agreement."""
    inputs = []
    for draw in range(draws):
        generator = torch.Generator().manual_seed(draw_seed(0, 1, draw))
        inputs += [noisy_inputs(batch, EPSILON, generator, data) for batch in images.images.split(BATCH_SIZE)]
    stacked = torch.cat(inputs)
    del inputs
    with torch.inference_mode():
        logits = torch.stack([torch.cat([n.model(x) for x in stacked.split(BATCH_SIZE)]) for n in networks])
    return float((logits.argmax(2) == logits[0].argmax(1)).float().mean())


def child(mode: str, draws: int, images_n: int, model: str, count: int) -> dict[str, float]:
    torch.set_num_threads(2)
    data = load_dataset("digits", 0)
    images = data.test.subset(torch.arange(min(images_n, len(data.test))))
    networks = random_networks(model, count, data)
    functional_similarity(networks, data, images.subset(torch.arange(8)), epsilons=(EPSILON,), draws=1)  # warm-up
    before = status_kib("VmRSS")
    reset_peak()
    start = time.perf_counter()
    if mode == "streaming":
        functional_similarity(networks, data, images, epsilons=(EPSILON,), draws=draws, batch_size=BATCH_SIZE)
    else:
        materialised(networks, data, images, draws)
    return {"baseline_kib": before, "peak_kib": status_kib("VmHWM"), "seconds": time.perf_counter() - start}


def measure(mode: str, draws: int, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", mode, str(draws), "--images", str(args.images),
               "--model", args.model, "--networks", str(args.networks)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", default="5,20,80", help="comma-separated draw counts")
    parser.add_argument("--images", type=int, default=256, help="test images")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--networks", type=int, default=3, help="networks fed every noisy batch")
    parser.add_argument("--no-materialised", dest="materialised", action="store_false",
                        help="skip the all-draws-at-once contrast")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DRAWS"), help=argparse.SUPPRESS)
    return parser.parse_args()


def main(args: argparse.Namespace) -> str:
    print(machine_summary())
    print(f"{args.networks} x {args.model}, {args.images} digits test images, one ε = {EPSILON}, "
          f"batches of {BATCH_SIZE}")
    draws = [int(d) for d in args.draws.split(",")]
    modes = ["streaming", *(["materialised"] if args.materialised else [])]
    rows, peaks = [], {}
    for count in draws:
        for mode in modes:
            m = measure(mode, count, args)
            peaks[(mode, count)] = m["peak_kib"]
            rows.append([mode, str(count), f"{m['baseline_kib'] / 1024:.1f}", f"{m['peak_kib'] / 1024:.1f}",
                         f"{(m['peak_kib'] - m['baseline_kib']) / 1024:.1f}", f"{m['seconds']:.1f}"])
    headers = ["mode", "draws", "RSS before (MiB)", "peak RSS (MiB)", "peak growth (MiB)", "time (s)"]
    print(markdown_table(headers, rows))
    ratio = peaks[("streaming", draws[-1])] / peaks[("streaming", draws[0])]
    return ratio_line(f"streaming peak RSS at {draws[-1]} draws / at {draws[0]} draws", ratio, "≈ 1.0")


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        mode, count = arguments.child
        print(json.dumps(child(mode, int(count), arguments.images, arguments.model, arguments.networks)))
    else:
        run_benchmark(lambda: main(arguments))

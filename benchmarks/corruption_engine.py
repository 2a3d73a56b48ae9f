"""prunebench's batched torch corruption engine vs imagecorruptions per image, at 32 px (goal >= 5x).

Images: all 1,797 scikit-learn digits, upsampled to uint8 3x32x32 (``bench.data.load_digits(0)``,
test + validation + train splits). All 19 corruptions run at the ImageNet-C severity-3 constant
of imagecorruptions 1.1.2 on both sides (``bench.corruptions.tables.IMAGENET_C``):

* torch: ``bench.corruptions.corrupt(images, name, IMAGENET_C[name][2], seed)`` on the whole uint8
  NCHW batch (uint8 -> float -> corruption -> rounded uint8);
* library: ``imagecorruptions.corrupt(image, severity=3, corruption_name=name)`` per HWC uint8
  image, in a Python loop (its only interface), with ``cv2.setNumThreads(1)``; the rest of the
  library is single-threaded numpy / scipy / scikit-image / PIL. The HWC numpy copies are made
  once, outside the timing. glass_blur alone takes ~30 s per library pass.

Torch is timed with ``torch.set_num_threads(2)`` (interleaved with the library) and again with
1 thread for a single-core comparison. A parity column checks both sides do the same work:
mean |corrupted - clean| on each side and, for the deterministic corruptions, the largest pixel
difference between the two outputs (the library truncates to uint8, torch rounds: 1 is expected).
The random corruptions are checked draw for draw in tests/test_corruption_parity.py instead.
RATIO is the geometric mean over the 19 corruptions of the 2-thread speedup.

Run: .venv/bin/python benchmarks/corruption_engine.py [--repeats 3] [--torch-passes 10]
(needs ``.venv/bin/pip install -e '.[test]'`` for imagecorruptions; see bench/corruptions/_reference.py)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version

import numpy as np
import torch
from _timing import (
    compare,
    geometric_mean,
    markdown_table,
    measure,
    open_benchmark,
    ratio_line,
    run_benchmark,
)

from bench.corruptions import RANDOM_CORRUPTIONS, corrupt, normalize_level, seed_for
from bench.corruptions._reference import load_imagecorruptions
from bench.corruptions.tables import ALL_CORRUPTIONS, IMAGENET_C
from bench.data import load_digits

SEVERITY = 3
LEVELS = {name: normalize_level(IMAGENET_C[name][SEVERITY - 1]) for name in ALL_CORRUPTIONS}
RANDOM = RANDOM_CORRUPTIONS
GOAL = 5.0


@dataclass
class Measured:
    library_s: float
    torch2_s: float
    mad_library: float
    mad_torch: float
    parity: str
    torch1_s: float = float("nan")


def torch_side(name: str, images: torch.Tensor, seed: int) -> torch.Tensor:
    return corrupt(images, name, LEVELS[name], seed)


def repeated(fn: Callable[[], object], passes: int) -> Callable[[], None]:
    """``fn`` run ``passes`` times back to back, so one timed repetition is long enough to time."""

    def run() -> None:
        for _ in range(passes):
            fn()

    return run


def library_side(corrupt_one: Callable[..., np.ndarray], name: str, images: list[np.ndarray]) -> list[np.ndarray]:
    return [corrupt_one(image, severity=SEVERITY, corruption_name=name) for image in images]


def main() -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per side (median)")
    parser.add_argument(
        "--torch-passes", type=int, default=10, help="torch passes per timed repetition (it is ~100x shorter)"
    )
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(1)
    imagecorruptions = load_imagecorruptions()
    open_benchmark(2)

    data = load_digits(0)
    images = torch.cat([data.test.images, data.val.images, data.train.images]).contiguous()
    hwc = [np.ascontiguousarray(image) for image in images.permute(0, 2, 3, 1).numpy()]
    n = len(hwc)
    print(f"{n} images {tuple(images.shape[1:])} uint8; imagecorruptions {version('imagecorruptions')}, severity {SEVERITY}")

    results: dict[str, Measured] = {}
    for name in LEVELS:
        ours_fn = partial(torch_side, name, images, seed_for(0, "benchmark", name))
        theirs_fn = partial(library_side, imagecorruptions.corrupt, name, hwc)
        np.random.seed(0)
        library_side(imagecorruptions.corrupt, name, hwc[:32])  # warm-up (imports, caches)
        ours_fn()
        torch_fn = repeated(ours_fn, args.torch_passes)
        timings = compare({"torch2": torch_fn, "library": theirs_fn}, warmup=0, repeats=args.repeats)
        ours = ours_fn().to(torch.int16)
        theirs = torch.from_numpy(np.stack(theirs_fn())).permute(0, 3, 1, 2).to(torch.int16)
        clean = images.to(torch.int16)
        results[name] = Measured(
            library_s=timings["library"].median,
            torch2_s=timings["torch2"].median / args.torch_passes,
            mad_library=float((theirs - clean).abs().float().mean()),
            mad_torch=float((ours - clean).abs().float().mean()),
            parity="-" if name in RANDOM else str(int((ours - theirs).abs().max())),
        )
        print(f"  {name}: done", flush=True)

    torch.set_num_threads(1)
    for name, measured in results.items():
        ours_fn = partial(torch_side, name, images, seed_for(0, "benchmark", name))
        timing = measure(repeated(ours_fn, args.torch_passes), warmup=1, repeats=args.repeats)
        measured.torch1_s = timing.median / args.torch_passes
    torch.set_num_threads(2)

    rows = []
    speedups2: list[float] = []
    speedups1: list[float] = []
    for name, r in results.items():
        lib, t2, t1 = r.library_s, r.torch2_s, r.torch1_s
        speedups2.append(lib / t2)
        speedups1.append(lib / t1)
        rows.append(
            [
                name,
                str(LEVELS[name]),
                f"{1000 * lib / n:.4f}",
                f"{1000 * t2 / n:.4f}",
                f"{1000 * t1 / n:.4f}",
                f"{speedups2[-1]:.1f}x",
                f"{speedups1[-1]:.1f}x",
                "met" if speedups2[-1] >= GOAL else "MISSED",
                f"{r.mad_library:.1f} / {r.mad_torch:.1f}",
                r.parity,
            ]
        )
    print()
    print(
        markdown_table(
            [
                "corruption",
                "level (sev 3)",
                "library ms/img (1 thr)",
                "torch ms/img (2 thr)",
                "torch ms/img (1 thr)",
                "speedup 2 thr",
                "speedup 1 thr",
                f"goal >= {GOAL:g}x (2 thr)",
                "mean |d| to clean lib / torch",
                "max |lib - torch|",
            ],
            rows,
        )
    )
    missed = [name for name, s in zip(results, speedups2) if s < GOAL]
    print(
        f"(median of {args.repeats} interleaved repetitions; one repetition = 1 library pass or "
        f"{args.torch_passes} torch passes over the {n} images; ms/img = time per pass / {n})"
    )
    print(f"geometric mean speedup: {geometric_mean(speedups2):.2f}x with 2 threads, {geometric_mean(speedups1):.2f}x with 1 thread")
    print(f"below {GOAL:g}x with 2 threads: {', '.join(missed) if missed else 'none'}")
    return ratio_line("corruption_engine", geometric_mean(speedups2), f">= {GOAL:g}, geometric mean over 19 corruptions, 2 threads")


if __name__ == "__main__":
    run_benchmark(main)

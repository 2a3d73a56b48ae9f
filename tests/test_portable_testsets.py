"""Test sets are the same bytes on every CPU: every built-in generated suite, rebuilt under other CPU
code paths, has the same checksums.

One machine stands in for many: ``ATEN_CPU_CAPABILITY`` switches torch's vectorised kernels
(default / avx2 / avx512, where the CPU has it), ``MKL_CBWR`` and ``MKL_ENABLE_INSTRUCTIONS``
switch MKL's BLAS kernels, ``ONEDNN_MAX_CPU_ISA`` oneDNN's, ``JSIMD_FORCENONE`` libjpeg-turbo's
SIMD; two threads change how work is split.  Before the engine was made exact
(bench.corruptions._exact), gaussian and speckle noise differed between default and avx2, and
every blur, zoom and pixelate between MKL code paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

# Runs in a fresh interpreter (the environment variables act when torch loads): the checksum of
# every (suite, corruption, severity) test set of every registered corruption suite on 24 digits
# test images, and of every corruption x severity of the CIFAR-10-C and ImageNet-C tables on
# 3x32x32 and 3x64x64 images and of every table (MNIST-C's geometric one too) on 1x28x28 grayscale images (per-image seeds, as
# `bench data make-c` draws them).
SCRIPT = r"""
import dataclasses, hashlib, json, sys
import torch
from bench.api import CorruptionSuite
from bench.corruptions import corrupt, seed_for
from bench.corruptions.tables import MNIST_C_GEOMETRIC, MNIST_C_STROKES, TABLES
from bench.data import ImageSet, load_digits
from bench.core.registry import SUITE_GROUP, available, load_class
from bench.data.suite import Suite

torch.set_num_threads(int(sys.argv[1]))

def digest(images):
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()

def smooth_images(n, channels, size, seed):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=g)
    return (torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest") * 255).round().to(torch.uint8)

out = {}
digits = load_digits(seed=0)
test = ImageSet(digits.test.images[:24], digits.test.labels[:24])
small = dataclasses.replace(digits, test=test)
tables = {**TABLES, "mnist-c": {**MNIST_C_GEOMETRIC, **MNIST_C_STROKES}}
for name in available(SUITE_GROUP):
    suite = load_class(SUITE_GROUP, name, Suite)()
    if not isinstance(suite, CorruptionSuite):
        continue
    tables[name] = suite.table
    if suite.datasets is None or "digits" in suite.datasets:
        for dist in suite.distributions(small, seed=0):
            out[dist.name] = digest(dist.images.images)
shapes = {"cifar10-c": [(3, 32)], "imagenet-c": [(3, 64)]}
for table_name, table in tables.items():
    for channels, size in shapes.get(table_name, []) + [(1, 28)]:
        images = smooth_images(6 if size == 64 else 12, channels, size, seed=size)
        for corruption, levels in table.items():
            for severity, level in enumerate(levels, start=1):
                seeds = [seed_for(0, "make-c", corruption, severity, i) for i in range(len(images))]
                out[f"{table_name}/{channels}x{size}/{corruption}/{severity}"] = digest(corrupt(images, corruption, level, seeds))
json.dump(out, sys.stdout)
"""

BASE = {"threads": "1"}
VARIANTS: dict[str, dict[str, str]] = {
    "ATEN_CPU_CAPABILITY=default, MKL_CBWR=COMPATIBLE, no SIMD in oneDNN and libjpeg, 2 threads": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "JSIMD_FORCENONE": "1",
        "threads": "2",
    },
    "ATEN_CPU_CAPABILITY=avx2, MKL_CBWR=AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"},
    "ATEN_CPU_CAPABILITY=avx512, MKL_CBWR=AVX512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512"},
}
CODE_PATHS = {"DEFAULT": 0, "AVX2": 1, "AVX512": 2}


def checksums(settings: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in {"ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA",
                          "JSIMD_FORCENONE"}}
    env.update({key: value for key, value in settings.items() if key != "threads"})
    # Threads that sleep instead of spinning while they wait: the same split of the work (so the same
    # numerics), but a two-thread process beside a busy core (the other pytest worker) took 141 s, not 11 s.
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    done = subprocess.run([sys.executable, "-c", SCRIPT, settings.get("threads", "1")], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    return checksums(BASE)


@pytest.mark.slow
def test_the_reference_covers_every_generated_suite(reference: dict[str, str]) -> None:
    from bench.api import CorruptionSuite
    from bench.core.registry import SUITE_GROUP, available, load_class
    from bench.data.suite import Suite

    for name in available(SUITE_GROUP):
        suite = load_class(SUITE_GROUP, name, Suite)()
        if isinstance(suite, CorruptionSuite):
            assert any(key.startswith(f"{name}/") for key in reference), name
    assert any(key.startswith("cifar10-c/3x32/zoom_blur/") for key in reference)
    assert any(key.startswith("imagenet-c/3x64/shot_noise/") for key in reference)


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_test_sets_are_identical_under_other_cpu_code_paths(variant: str, reference: dict[str, str]) -> None:
    settings = VARIANTS[variant]
    wanted = settings.get("ATEN_CPU_CAPABILITY", "default").upper()
    if CODE_PATHS[wanted] > CODE_PATHS.get(torch.backends.cpu.get_cpu_capability(), 0):
        pytest.skip(f"this CPU has no {wanted} code path ({torch.backends.cpu.get_cpu_capability()})")
    other = checksums(settings)
    assert other.keys() == reference.keys()
    differing = sorted(key for key in reference if other[key] != reference[key])
    assert not differing, f"{len(differing)} test sets differ under {variant}: {differing[:8]}"

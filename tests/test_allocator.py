"""The CLI's malloc settings (bench.core._allocator): freed batch-sized blocks stay in the heap, and
spawned workers inherit the settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.core._allocator import MMAP_THRESHOLD, SETTINGS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

# an evaluation-like batch loop (a conv on 256 images, 100 times); prints the minor page faults
_CHURN = """
import resource, sys, torch
from bench.core._allocator import tune_allocator
if sys.argv[1] == "tuned":
    tune_allocator()
torch.set_num_threads(1)
conv = torch.nn.Conv2d(1, 16, 5, 2, 2)
x = torch.rand(256, 1, 28, 28)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.no_grad():
    for _ in range(100):
        torch.relu(conv(x)).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    out = subprocess.run([sys.executable, "-c", _CHURN, mode], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.slow
def test_tuned_allocator_reuses_freed_blocks_instead_of_faulting_them_in_again() -> None:
    plain, tuned = _faults("plain"), _faults("tuned")
    # untuned (measured: ~105,000): glibc unmaps or trims the batch's blocks and faults them in again
    # every batch; tuned (~2,600): they stay in the heap
    assert plain > 20_000, plain
    assert tuned < plain / 10, (plain, tuned)


def test_settings_reach_child_processes_and_a_users_value_wins() -> None:
    script = ("import os; from bench.core._allocator import tune_allocator; tune_allocator(); "
              "import subprocess, sys; print(subprocess.run([sys.executable, '-c', "
              "'import os; print(os.environ[\"MALLOC_MMAP_THRESHOLD_\"], os.environ[\"MALLOC_TRIM_THRESHOLD_\"], "
              "os.environ[\"MALLOC_ARENA_MAX\"])'], "
              "capture_output=True, text=True).stdout.strip())")
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    child = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert child.stdout.split() == [str(MMAP_THRESHOLD), str(SETTINGS["MALLOC_TRIM_THRESHOLD_"]), "1"]
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    child = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert child.stdout.split()[0] == "65536"

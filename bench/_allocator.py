"""glibc malloc settings that keep the kernel out of the inner loops, for every process the CLI starts.

By default glibc returns every freed block above a dynamic threshold to the kernel (munmap /
trim) and maps it again on the next allocation, so torch's per-batch tensors (a few MB each) cost
a page fault per 4 KiB page, every batch: a third to a half of the CPU time of test-set generation
and ~13 % of a default run was system time (issue 22). Raising the mmap threshold to 32 MiB and the
trim threshold to 1 GiB keeps those blocks in the heap for reuse. Results are unchanged (same
networks, same hits); only where memory comes from changes.

The settings apply to this process through ``mallopt`` and to the processes it spawns (workers)
through the environment glibc reads at start-up; a value the user set in the environment wins.
Elsewhere than glibc (macOS, musl) nothing is done.
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 32 << 20  # larger blocks still get their own mapping (the dataset, big test sets)
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
SETTINGS = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD}


def tune_allocator() -> bool:
    """Apply the settings here (unless the environment already names them) and export them to
    child processes; returns whether this process's allocator is glibc's and was tuned."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    preset = {name for name in SETTINGS if name in os.environ}
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, str(value))
    if "MALLOC_MMAP_THRESHOLD_" not in preset:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    if "MALLOC_TRIM_THRESHOLD_" not in preset:
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return True

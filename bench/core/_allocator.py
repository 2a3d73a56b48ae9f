"""glibc malloc settings that keep the kernel out of the inner loops, for every process the CLI starts.

By default glibc returns every freed block above a dynamic threshold to the kernel (munmap /
trim) and maps it again on the next allocation, so torch's per-batch tensors (a few MB each) cost
a page fault per 4 KiB page, every batch: a third to a half of the CPU time of test-set generation
and ~13 % of a default run was system time (issue 22). Raising the mmap threshold to 32 MiB and the
trim threshold to 1 GiB keeps those blocks in the heap for reuse. One arena (``M_ARENA_MAX`` 1)
keeps threads in that heap too: a thread's own arena lives in 64 MiB heaps that glibc unmaps as they
empty, whatever the thresholds, so the test sets built in a thread beside parent training faulted
their temporaries in again on every chunk (34 % of zigzag's CPU, 7 % of fog's, in the kernel).
The project's threads rarely allocate at the same time (torch's kernels allocate in the calling
thread), so the one arena's lock costs nothing measurable. Results are unchanged (same networks,
same hits); only where memory comes from changes.

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
_M_ARENA_MAX = -8
ARENA_MAX = 1
SETTINGS = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD,
            "MALLOC_ARENA_MAX": ARENA_MAX}
_MALLOPT = {"MALLOC_MMAP_THRESHOLD_": _M_MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": _M_TRIM_THRESHOLD,
            "MALLOC_ARENA_MAX": _M_ARENA_MAX}


def tune_allocator() -> bool:
    """Apply the settings here (unless the environment already names them) and export them to
    child processes; returns whether this process's allocator is glibc's and was tuned."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    for name, value in SETTINGS.items():
        if name not in os.environ:
            os.environ[name] = str(value)
            mallopt(_MALLOPT[name], value)
    return True

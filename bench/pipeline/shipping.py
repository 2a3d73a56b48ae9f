"""Jobs on machines that do not see the driver's job store: inputs and outputs travel by value.

`bench run --executor ray --ray-storage object-store` (bench.pipeline.executors.RayExecutor) runs every job
this way. The driver reads the files of the artifacts the job declares (bench.pipeline.job_files.JOB_FILES: what
it reads, and what it writes, shipped where already stored so the job skips it) from its store; the
task writes them into a fresh scratch store on its node, runs the job there and returns every file
the job created (`run_in_scratch_store`); the driver writes those into its store (`write_outputs`),
markers last, before the job counts as finished. So the driver keeps the one authoritative store,
no node needs a path of the driver's, and a job run twice (a retried task) writes the same files.
A job that reads a file it did not declare finds it missing and fails (bench.pipeline.jobs' checks), never
recomputes it silently.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bench.core.io import atomic_path
from bench.pipeline.job_files import JOB_FILES, JobFiles
from bench.pipeline.store import Store

__all__ = ["TaskReturn", "input_files", "job_files", "run_in_scratch_store", "store_root_of", "with_store_root",
           "write_outputs"]

STORE_ROOT = "store_root"  # the argument of every job function that names its store


@dataclass(frozen=True)
class TaskReturn:
    """What a job run in a scratch store gives back: its value, the files it created (path relative
    to the store root -> bytes), the scratch root it ran in and the node that ran it (Ray's id)."""

    value: Any
    outputs: dict[str, bytes]
    store_root: str
    node: str = ""


def _bound(fn: Callable[..., Any], args: tuple[Any, ...]) -> inspect.BoundArguments:
    bound = inspect.signature(fn).bind(*args)
    if STORE_ROOT not in bound.arguments:
        raise ValueError(f"job {fn.__qualname__} has no {STORE_ROOT} argument: it cannot run on a shipped store")
    return bound


def store_root_of(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """The store root argument of the job `fn(*args)`."""
    return str(_bound(fn, args).arguments[STORE_ROOT])


def with_store_root(fn: Callable[..., Any], args: tuple[Any, ...], root: str) -> tuple[Any, ...]:
    """`args` of the job `fn` with its store root replaced by `root`."""
    bound = _bound(fn, args)
    bound.arguments[STORE_ROOT] = root
    return tuple(bound.args)


def job_files(fn: Callable[..., Any], args: tuple[Any, ...]) -> JobFiles:
    """The artifacts the job `fn(*args)` declares (bench.pipeline.job_files.JOB_FILES)."""
    declare = JOB_FILES.get(fn)
    if declare is None:
        raise ValueError(f"job {fn.__qualname__} declares no store files (bench.pipeline.job_files.JOB_FILES): "
                         "it cannot run with --ray-storage object-store")
    return declare(*args)


def input_files(store: Store, fn: Callable[..., Any], args: tuple[Any, ...]) -> list[str]:
    """The files (relative to the store root) to ship with the job `fn(*args)`: every file of each
    artifact it reads, which must be in `store`, and of each it writes that is there already."""
    declared = job_files(fn, args)
    paths: list[Path] = []
    for kind, key in declared.reads:
        found = store.artifact_paths(kind, key)
        if not found:
            raise FileNotFoundError(f"job {fn.__qualname__} reads {kind}/{key}, which is not in the job store "
                                    f"{store.root}")
        paths += found
    for kind, key in declared.writes:
        paths += store.artifact_paths(kind, key)
    return [path.relative_to(store.root).as_posix() for path in paths]


def _inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing a path that would leave `root`."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ValueError(f"store file {relative!r}: not a path inside the store")
    return root.joinpath(*parts)


def run_in_scratch_store(fn: Callable[..., Any], args: tuple[Any, ...], inputs: Mapping[str, bytes]) -> TaskReturn:
    """Run the job `fn(*args)` in a fresh temporary store holding `inputs` (path relative to the
    store root -> bytes) instead of its own store; return its value and the files it created or
    changed. The temporary store is deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="prunebench-store-") as scratch:
        root = Path(scratch)
        for relative, payload in inputs.items():
            target = _inside(root, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(payload)
        value = fn(*with_store_root(fn, args, scratch))
        outputs = {}
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and (payload := path.read_bytes()) != inputs.get(relative):
                outputs[relative] = payload
    return TaskReturn(value, outputs, scratch)


def write_outputs(store: Store, outputs: Mapping[str, bytes]) -> None:
    """Write a job's returned files into `store`, each atomically, its markers (`.json`) last: a
    marker means its artifact is complete (bench.pipeline.store)."""
    for relative in sorted(outputs, key=lambda name: name.endswith(".json")):
        with atomic_path(_inside(Path(store.root), relative)) as temporary:
            temporary.write_bytes(outputs[relative])

"""Executors run independent jobs (plain functions with picklable arguments), in order of
submission for their results: in this process, in a process pool, or on Ray."""

from __future__ import annotations

import multiprocessing
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm

Job = tuple[Callable[..., Any], tuple[Any, ...]]


class Executor(ABC):
    name: str

    @abstractmethod
    def run(self, jobs: Sequence[Job], desc: str) -> list[Any]:
        """Run every job; return their results in submission order. Any failure raises."""

    def close(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Release the executor's workers; nothing to release by default."""


class LocalExecutor(Executor):
    """workers=1: one after another in this process; more: a pool of spawned processes."""

    name = "local"

    def __init__(self, workers: int = 1, progress: bool = True) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.progress = progress

    def run(self, jobs: Sequence[Job], desc: str) -> list[Any]:
        if self.workers == 1 or len(jobs) <= 1:
            bar = tqdm(jobs, desc=desc, unit="job", disable=not self.progress or len(jobs) <= 1, dynamic_ncols=True)
            return [fn(*args) for fn, args in bar]
        results: list[Any] = [None] * len(jobs)
        context = multiprocessing.get_context("spawn")  # fork after torch's thread pools can deadlock
        with ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)), mp_context=context) as pool:
            futures = {pool.submit(fn, *args): index for index, (fn, args) in enumerate(jobs)}
            for future in tqdm(as_completed(futures), total=len(jobs), desc=desc, disable=not self.progress):
                results[futures[future]] = future.result()
        return results


class RayExecutor(Executor):
    """Jobs as Ray tasks: a local instance by default, or a cluster at `address`."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus_per_job: float = 1,
                 progress: bool = True) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ValueError("the Ray executor needs Ray: pip install 'prunebench[ray]'") from exc
        self.ray = ray
        if not ray.is_initialized():
            # cluster workers do not inherit this process's environment: ship the data settings
            from bench.files import DATA_ENV, DOWNLOAD_ENV

            env = {k: os.environ[k] for k in (DATA_ENV, DOWNLOAD_ENV, "HF_HUB_OFFLINE") if k in os.environ}
            ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        self.cpus_per_job = cpus_per_job
        self.progress = progress
        self._remote: dict[Callable[..., Any], Any] = {}

    def _as_remote(self, fn: Callable[..., Any]) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(num_cpus=self.cpus_per_job)(fn)
        return self._remote[fn]

    def run(self, jobs: Sequence[Job], desc: str) -> list[Any]:
        refs = [self._as_remote(fn).remote(*args) for fn, args in jobs]
        pending = list(refs)
        with tqdm(total=len(refs), desc=desc, disable=not self.progress) as bar:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                bar.update(len(done))
        return self.ray.get(refs)

    def close(self) -> None:
        self.ray.shutdown()


def make_executor(name: str, workers: int = 1, ray_address: str | None = None, progress: bool = True) -> Executor:
    if name == "local":
        return LocalExecutor(workers, progress)
    if name == "ray":
        return RayExecutor(ray_address, num_cpus=None if ray_address else workers, progress=progress)
    raise ValueError(f"unknown executor {name!r}; use 'local' or 'ray'")

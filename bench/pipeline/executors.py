"""Executors run independent jobs (plain functions with picklable arguments), in order of
submission for their results: in this process, in a process pool, or on Ray.

GPU scheduling (a run whose device is CUDA): every job runs on exactly one GPU, and sees only that
GPU, as ``cuda:0``. The local executor pins each pool worker with ``CUDA_VISIBLE_DEVICES``, set in
the worker before its first job initialises CUDA; Ray does the same for every task that requests
``num_gpus``. The GPU index is therefore never a pinned job's argument (`Executor.job_device`; only
jobs run in this process get `cuda:N`), and never part of a job key, so job keys and results do not
depend on which GPU ran them. ``jobs_per_gpu`` K > 1 shares each GPU among K concurrent jobs (for
small networks such as ResNet20, which leave one GPU mostly idle).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from bench.pipeline.store import Store

Job = tuple[Callable[..., Any], tuple[Any, ...]]

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


class Executor(ABC):
    """Runs jobs: `submit` one (a future of its result), or `run` a batch and wait for all of them.
    `slots` jobs run at once; a scheduler (bench.pipeline.scheduler) keeps at most that many submitted."""

    name: str
    progress: bool = True  # progress bars of `run`

    @abstractmethod
    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
        """Start one job; its future holds the result or the exception it raised."""

    @property
    @abstractmethod
    def slots(self) -> int:
        """How many jobs run at the same time."""

    def run(self, jobs: Sequence[Job], desc: str, progress: bool = True) -> list[Any]:
        """Run every job; return their results in submission order. Any failure raises."""
        futures = [self.submit(fn, args) for fn, args in jobs]
        show = progress and self.progress and len(jobs) > 1
        for _ in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="job", disable=not show,
                      dynamic_ncols=True):
            pass
        return [future.result() for future in futures]

    def close(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Release the executor's workers; nothing to release by default."""

    def job_device(self, device: str) -> str:
        """The device argument of this executor's jobs in a run on `device` (a resolved `--device`):
        `device` itself (`cuda:1` then runs on GPU 1), but only its type where every worker is pinned
        to its GPU and sees it alone, as its current one."""
        return device.split(":", 1)[0] if self.pins_gpus else device

    @property
    def pins_gpus(self) -> bool:
        """Whether every job runs in a worker that sees only the GPU it was given."""
        return False


def run_here(fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
    """Run a job in this process now; a finished future of its result (or its exception)."""
    future: Future[Any] = Future()
    try:
        future.set_result(fn(*args))
    except Exception as exc:
        future.set_exception(exc)
    return future


def is_cuda(device_type: str) -> bool:
    """`cuda` or `cuda:N`."""
    return device_type.split(":", 1)[0] == "cuda"


def gpu_slots(gpu_count: int, jobs_per_gpu: int = 1) -> list[int]:
    """The GPU (an index among `gpu_count`) of each of the `gpu_count * jobs_per_gpu` workers.

    Round robin: worker w runs on GPU w mod gpu_count, so a pool smaller than the slots (a stage with
    fewer jobs than workers takes the first slots) still spreads over every GPU:
    ``gpu_slots(2, 2) == [0, 1, 0, 1]``.
    """
    if gpu_count < 1:
        raise ValueError(f"gpu_count must be >= 1, got {gpu_count}")
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be >= 1, got {jobs_per_gpu}")
    return [worker % gpu_count for worker in range(gpu_count * jobs_per_gpu)]


def worker_environment(gpu: int, visible: str | None) -> dict[str, str]:
    """The environment of a worker pinned to `gpu`, an index among the GPUs this process sees.

    `visible` is this process's CUDA_VISIBLE_DEVICES (None: unset, so index = device id); the
    worker's names that one device (an id or a UUID, as given), so the worker sees it alone, as cuda:0.
    """
    if gpu < 0:
        raise ValueError(f"GPU index must be >= 0, got {gpu}")
    if visible is None:
        return {CUDA_VISIBLE_DEVICES: str(gpu)}
    devices = [part.strip() for part in visible.split(",") if part.strip()]
    if gpu >= len(devices):
        raise ValueError(f"GPU {gpu} is not visible ({CUDA_VISIBLE_DEVICES}={visible!r} names {len(devices)})")
    return {CUDA_VISIBLE_DEVICES: devices[gpu]}


def _pin_worker(environments: Any) -> None:
    """Pool initializer: take this worker's environment (its CUDA_VISIBLE_DEVICES) before any job
    runs; CUDA is initialised lazily by the first job, and then sees only this worker's GPU."""
    os.environ.update(environments.get())


def _import_job_modules() -> None:
    """A CPU pool's first task on each worker: import what every job needs (torch, timm, bench; ~3 s of
    CPU), so a worker is ready when its first job comes, not seconds later (the second worker of a
    run was spawned only when the parent finished, and then imported while a chain step waited)."""
    import bench.pipeline.jobs  # noqa: F401


class LocalExecutor(Executor):
    """CPU (`gpus` None): workers=1 runs the jobs one after another in this process; more, a pool of
    spawned processes.

    CUDA (`gpus`: indices of the visible GPUs to use): a pool of len(gpus) x jobs_per_gpu spawned
    workers (`workers` does not apply), each pinned to one GPU (gpu_slots, worker_environment). Jobs
    never run in this process, so it holds no CUDA context of its own.

    The pool lives until `close()`: its workers import torch and load the dataset once for the
    whole run, not once per stage (each spawn costs seconds of CPU and ~1 GB).
    """

    name = "local"

    def __init__(self, workers: int = 1, progress: bool = True, gpus: Sequence[int] | None = None,
                 jobs_per_gpu: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.gpus = list(gpus) if gpus is not None else None
        self.gpu_slots: list[int] = []
        if self.gpus is not None:
            if not self.gpus:
                raise ValueError("a CUDA run needs at least one GPU")
            self.gpu_slots = [self.gpus[index] for index in gpu_slots(len(self.gpus), jobs_per_gpu)]
            workers = len(self.gpu_slots)
        self.workers = workers
        self.progress = progress
        self._pool: ProcessPoolExecutor | None = None

    @property
    def pins_gpus(self) -> bool:
        return bool(self.gpu_slots)

    @property
    def slots(self) -> int:
        return self.workers

    @property
    def in_process(self) -> bool:
        """Whether jobs run in this process (one CPU worker), one after another."""
        return not self.gpu_slots and self.workers == 1

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
        if self.in_process:
            return run_here(fn, args)
        return self._worker_pool().submit(fn, *args)

    def _worker_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # fork after torch's thread pools can deadlock
            pinning: dict[str, Any] = {}
            if self.gpu_slots:
                environments = context.SimpleQueue()
                visible = os.environ.get(CUDA_VISIBLE_DEVICES)
                for gpu in self.gpu_slots:
                    environments.put(worker_environment(gpu, visible))
                pinning = {"initializer": _pin_worker, "initargs": (environments,)}
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context, **pinning)
            # A CPU pool starts every worker now (the pool spawns on demand otherwise). A GPU pool keeps
            # spawning on demand: its first k workers take the first k slots, which round robin spreads
            # over the GPUs, where idle warm workers would take jobs whatever their GPU.
            if not self.gpu_slots:
                for _ in range(self.workers):
                    self._pool.submit(_import_job_modules)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def ray_task_options(device_type: str = "cpu", jobs_per_gpu: int = 1, cpus_per_job: float = 1) -> dict[str, float]:
    """`ray.remote` resources of one job: `cpus_per_job` CPUs, and on CUDA 1 / jobs_per_gpu of a GPU
    (Ray runs jobs_per_gpu such tasks at once on each GPU and sets each task's CUDA_VISIBLE_DEVICES
    to the GPU it was given)."""
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be >= 1, got {jobs_per_gpu}")
    options = {"num_cpus": cpus_per_job}
    if is_cuda(device_type):
        options["num_gpus"] = 1 / jobs_per_gpu
    return options


OBJECT_STORE, SHARED = "object-store", "shared"  # `--ray-storage`: how Ray tasks reach the job store
RAY_STORAGES = (OBJECT_STORE, SHARED)
RAY_TASK_RETRIES = 3  # a task whose worker or node dies runs again (jobs are idempotent)


def ray_storage(storage: str | None, address: str | None) -> str:
    """The `--ray-storage` of a run: as given, else object-store on a cluster (`address`) and shared
    on a local instance, where every task sees the driver's store."""
    if storage is None:
        return OBJECT_STORE if address else SHARED
    if storage not in RAY_STORAGES:
        raise ValueError(f"--ray-storage must be one of {', '.join(RAY_STORAGES)}, got {storage!r}")
    return storage


def run_shipped_task(fn: Callable[..., Any], args: tuple[Any, ...], inputs: dict[str, Any]) -> Any:
    """The Ray task of every job in object-store mode: fetch its input files (`inputs`: path ->
    ObjectRef, each file put once by the driver), run the job in a scratch store on this node
    (bench.pipeline.shipping.run_in_scratch_store) and return its outputs with this node's id."""
    import dataclasses

    import ray

    from bench.pipeline.shipping import run_in_scratch_store

    payloads = dict(zip(inputs, ray.get(list(inputs.values()))))
    returned = run_in_scratch_store(fn, args, payloads)
    return dataclasses.replace(returned, node=ray.get_runtime_context().get_node_id())


class RayExecutor(Executor):
    """Jobs as Ray tasks: a local instance by default, or a cluster at `address`.

    `storage` (ray_storage): `shared`, every task opens the store path its job is given (one
    machine, or a store on a mount every node sees at the same path); `object-store`, job inputs
    and outputs travel through Ray's object store (bench.pipeline.shipping) and only the driver's store is
    ever written, so nodes need no shared storage. `placements` lists (node id, scratch store root)
    of every object-store job that finished.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus_per_job: float = 1,
                 progress: bool = True, device_type: str = "cpu", jobs_per_gpu: int = 1,
                 storage: str | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ValueError("the Ray executor needs Ray: pip install 'prunebench[ray]'") from exc
        self.options = ray_task_options(device_type, jobs_per_gpu, cpus_per_job)  # checks jobs_per_gpu first
        self.storage = ray_storage(storage, address)
        self.gpu_tasks = is_cuda(device_type)
        self.ray = ray
        if not ray.is_initialized():
            # cluster workers do not inherit this process's environment: ship the data settings
            from bench.data.files import DATA_ENV, DOWNLOAD_ENV

            env = {k: os.environ[k] for k in (DATA_ENV, DOWNLOAD_ENV, "HF_HUB_OFFLINE") if k in os.environ}
            ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        self.cpus_per_job = cpus_per_job
        self.progress = progress
        self.placements: list[tuple[str, str]] = []
        self._remote: dict[Callable[..., Any], Any] = {}
        self._puts: dict[tuple[str, int, int], Any] = {}  # (path, size, mtime) -> ObjectRef of its bytes
        self._lock = threading.Lock()

    @property
    def pins_gpus(self) -> bool:
        return self.gpu_tasks

    def _as_remote(self, fn: Callable[..., Any]) -> Any:
        if fn not in self._remote:
            options: dict[str, Any] = {**self.options, "max_retries": RAY_TASK_RETRIES}  # ray.remote's keyword overload
            self._remote[fn] = self.ray.remote(**options)(fn)
        return self._remote[fn]

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
        if self.storage == SHARED:
            return self._as_remote(fn).remote(*args).future()
        from bench.pipeline.shipping import input_files, store_root_of, with_store_root
        from bench.pipeline.store import Store

        store = Store(Path(store_root_of(fn, args)))
        inputs = {relative: self._put(Path(store.root) / relative) for relative in input_files(store, fn, args)}
        # the driver's store path never reaches a node: the task runs the job on its own scratch store
        task = self._as_remote(run_shipped_task).remote(fn, with_store_root(fn, args, ""), inputs).future()
        landed: Future[Any] = Future()
        task.add_done_callback(lambda done: self._land(store, done, landed))
        return landed

    def _put(self, path: Path) -> Any:
        """An ObjectRef of the file's bytes, put once while the file is unchanged (artifacts are written
        once: a test set read by every evaluation travels to each node once)."""
        info = path.stat()
        key = (str(path), info.st_size, info.st_mtime_ns)
        if key not in self._puts:
            self._puts[key] = self.ray.put(path.read_bytes())
        return self._puts[key]

    def _land(self, store: Store, task: Future[Any], landed: Future[Any]) -> None:
        """Write a finished task's files into the driver's store, then resolve the job's future."""
        from bench.pipeline.shipping import write_outputs

        try:
            returned = task.result()
            write_outputs(store, returned.outputs)
            with self._lock:
                self.placements.append((returned.node, returned.store_root))
            landed.set_result(returned.value)
        except BaseException as exc:  # handed to whoever waits on the job
            landed.set_exception(exc)

    @property
    def slots(self) -> int:
        """The jobs the cluster's resources hold at once (its CPUs, or GPU shares for CUDA tasks)."""
        resources = self.ray.cluster_resources()
        if self.gpu_tasks:
            return max(1, int(resources.get("GPU", 0) / self.options["num_gpus"]))
        return max(1, int(resources.get("CPU", 1) // self.cpus_per_job))

    def close(self) -> None:
        self._puts.clear()
        self.ray.shutdown()


def visible_gpus(device_type: str) -> list[int]:
    """The GPUs a CUDA run uses: `cuda` every GPU this process sees, `cuda:N` GPU N alone."""
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise ValueError(f"device {device_type!r}: no CUDA GPU is visible")
    _, _, index = device_type.partition(":")
    if not index:
        return list(range(count))
    if not index.isdigit() or int(index) >= count:
        raise ValueError(f"device {device_type!r}: this machine sees GPUs cuda:0 to cuda:{count - 1}")
    return [int(index)]


def make_executor(name: str, workers: int = 1, ray_address: str | None = None, progress: bool = True,
                  device_type: str = "cpu", jobs_per_gpu: int = 1, gpus: Sequence[int] | None = None,
                  ray_storage: str | None = None) -> Executor:
    """The executor of `bench run --executor NAME`.

    `device_type` is the run's device (`cpu`, `cuda` or `cuda:N`). On CUDA the local executor runs
    len(gpus) x jobs_per_gpu pinned workers (`gpus` default: visible_gpus) and ignores `workers`;
    Ray tasks request 1 / jobs_per_gpu GPU each, and `workers` stays the CPU count of a local Ray
    instance. On CPU `jobs_per_gpu` and `gpus` do not apply. `ray_storage`: RayExecutor's `storage`.
    """
    if jobs_per_gpu < 1:
        raise ValueError(f"--jobs-per-gpu must be >= 1, got {jobs_per_gpu}")
    if ray_storage is not None and name != "ray":
        raise ValueError(f"--ray-storage applies to --executor ray, not {name!r}")
    if name == "local":
        if not is_cuda(device_type):
            return LocalExecutor(workers, progress)
        return LocalExecutor(workers, progress, gpus=visible_gpus(device_type) if gpus is None else gpus,
                             jobs_per_gpu=jobs_per_gpu)
    if name == "ray":
        return RayExecutor(ray_address, num_cpus=None if ray_address else workers, progress=progress,
                           device_type=device_type, jobs_per_gpu=jobs_per_gpu, storage=ray_storage)
    raise ValueError(f"unknown executor {name!r}; use 'local' or 'ray'")

"""GPU scheduling of the executors, without GPUs: which GPU each local worker gets (and the
CUDA_VISIBLE_DEVICES that pins it), the Ray resource request of a CUDA run, the `--jobs-per-gpu`
flag, and CPU runs unchanged (tests/test_jobs.py runs the CPU executors end to end)."""

import multiprocessing
import os
import posixpath
from contextlib import closing
from typing import Any

import pytest
import torch

from bench.cli import build_parser
from bench.pipeline.executors import (
    CUDA_VISIBLE_DEVICES,
    LocalExecutor,
    gpu_slots,
    make_executor,
    ray_task_options,
    visible_gpus,
    worker_environment,
)


def pinned_gpu(barrier: Any = None) -> tuple[int, str | None]:
    """A job: (worker pid, the CUDA_VISIBLE_DEVICES it runs under); waits for its peers if given a barrier."""
    if barrier is not None:
        barrier.wait(timeout=120)
    return os.getpid(), os.environ.get(CUDA_VISIBLE_DEVICES)


def test_gpu_slots_give_each_gpu_jobs_per_gpu_workers_round_robin():
    assert gpu_slots(gpu_count=2, jobs_per_gpu=2) == [0, 1, 0, 1]
    assert gpu_slots(gpu_count=1, jobs_per_gpu=4) == [0, 0, 0, 0]
    assert gpu_slots(gpu_count=3) == [0, 1, 2]
    for count, per_gpu in ((1, 1), (2, 3), (8, 4)):
        slots = gpu_slots(count, per_gpu)
        assert len(slots) == count * per_gpu
        assert all(slots.count(gpu) == per_gpu for gpu in range(count))
        assert sorted(set(slots[:count])) == list(range(count))  # any first `count` workers cover every GPU
    for bad in ((0, 1), (2, 0)):
        with pytest.raises(ValueError):
            gpu_slots(*bad)


def test_worker_environment_names_one_visible_device():
    assert worker_environment(0, None) == {CUDA_VISIBLE_DEVICES: "0"}
    assert worker_environment(3, None) == {CUDA_VISIBLE_DEVICES: "3"}
    # indices are among the devices this process sees: map them through its CUDA_VISIBLE_DEVICES
    assert worker_environment(1, "4,6") == {CUDA_VISIBLE_DEVICES: "6"}
    assert worker_environment(0, " GPU-a1b2 , GPU-c3d4") == {CUDA_VISIBLE_DEVICES: "GPU-a1b2"}
    with pytest.raises(ValueError, match="not visible"):
        worker_environment(2, "4,6")
    with pytest.raises(ValueError):
        worker_environment(-1, None)


def test_local_executor_on_cuda_runs_gpus_times_jobs_per_gpu_workers():
    executor = LocalExecutor(workers=1, progress=False, gpus=[0, 1], jobs_per_gpu=2)
    assert executor.gpu_slots == [0, 1, 0, 1] and executor.workers == 4
    executor = LocalExecutor(workers=7, progress=False, gpus=[2], jobs_per_gpu=3)  # `workers` does not apply
    assert executor.gpu_slots == [2, 2, 2] and executor.workers == 3
    with pytest.raises(ValueError):
        LocalExecutor(gpus=[])
    with pytest.raises(ValueError):
        LocalExecutor(gpus=[0], jobs_per_gpu=0)


def test_cpu_executor_is_unchanged():
    for executor in (make_executor("local", 3, progress=False), LocalExecutor(3, False)):
        assert isinstance(executor, LocalExecutor)
        assert executor.workers == 3 and executor.gpus is None and executor.gpu_slots == []
    sequential = make_executor("local", progress=False, device_type="cpu", jobs_per_gpu=4)  # K: CUDA only
    assert isinstance(sequential, LocalExecutor) and sequential.workers == 1 and not sequential.gpu_slots
    # one worker on CPU: in this process, as before
    assert sequential.run([(pinned_gpu, ())], "job") == [(os.getpid(), os.environ.get(CUDA_VISIBLE_DEVICES))]


def test_make_executor_on_cuda(monkeypatch):
    executor = make_executor("local", 2, progress=False, device_type="cuda", jobs_per_gpu=4, gpus=[0, 1])
    assert isinstance(executor, LocalExecutor) and executor.workers == 8
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    executor = make_executor("local", progress=False, device_type="cuda:1", jobs_per_gpu=2)
    assert isinstance(executor, LocalExecutor) and executor.gpu_slots == [1, 1]
    with pytest.raises(ValueError):
        make_executor("local", device_type="cuda", jobs_per_gpu=0, gpus=[0])


def test_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_gpus("cuda") == [0, 1]
    assert visible_gpus("cuda:1") == [1]
    with pytest.raises(ValueError, match="cuda:0 to cuda:1"):
        visible_gpus("cuda:2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        visible_gpus("cuda")


@pytest.mark.slow
def test_pool_workers_are_pinned_to_their_gpus(monkeypatch):
    """Two GPUs (seen through CUDA_VISIBLE_DEVICES=3,5), two jobs per GPU, two jobs held at a barrier
    until both run: two workers, one per GPU (round robin), each seeing its GPU alone."""
    monkeypatch.setenv(CUDA_VISIBLE_DEVICES, "3,5")
    executor = LocalExecutor(progress=False, gpus=[0, 1], jobs_per_gpu=2)
    with closing(executor), multiprocessing.get_context("spawn").Manager() as manager:
        barrier = manager.Barrier(2)
        results = executor.run([(pinned_gpu, (barrier,)), (pinned_gpu, (barrier,))], "jobs")
    assert len({pid for pid, _ in results}) == 2
    assert sorted(env for _, env in results) == ["3", "5"]
    assert os.environ[CUDA_VISIBLE_DEVICES] == "3,5"  # this process is left alone
    assert os.getpid() not in {pid for pid, _ in results}


@pytest.mark.slow
def test_a_gpu_pool_spawns_its_workers_on_demand(monkeypatch):
    """Round robin spreads a stage's first jobs over the GPUs only if the first jobs start the first
    workers: a GPU pool must not start every worker at once (a CPU pool does), or two jobs could go to
    two idle workers of one GPU while the other GPU has none."""
    monkeypatch.setenv(CUDA_VISIBLE_DEVICES, "3,5")
    with closing(LocalExecutor(progress=False, gpus=[0, 1], jobs_per_gpu=2)) as executor:
        ((_, env),) = executor.run([(pinned_gpu, ())], "one job")
        assert executor._pool is not None and len(executor._pool._processes) == 1
    assert env == "3"


@pytest.mark.slow
def test_a_single_cuda_job_runs_in_a_pinned_worker(monkeypatch):
    monkeypatch.delenv(CUDA_VISIBLE_DEVICES, raising=False)
    with closing(LocalExecutor(progress=False, gpus=[1])) as executor:
        ((pid, env),) = executor.run([(pinned_gpu, ())], "parent")
        assert executor.run([], "nothing") == []
    assert pid != os.getpid() and env == "1"
    assert CUDA_VISIBLE_DEVICES not in os.environ


@pytest.mark.slow
def test_pinning_holds_for_many_jobs(monkeypatch):
    monkeypatch.setenv(CUDA_VISIBLE_DEVICES, "2,7")
    with closing(LocalExecutor(progress=False, gpus=[0, 1], jobs_per_gpu=2)) as executor:
        results = executor.run([(pinned_gpu, ())] * 12, "jobs")
    gpu_of: dict[int, str | None] = {}
    for pid, env in results:
        assert gpu_of.setdefault(pid, env) == env  # a worker never changes GPU
    assert set(gpu_of.values()) <= {"2", "7"}
    assert all(list(gpu_of.values()).count(gpu) <= 2 for gpu in ("2", "7"))  # at most K workers per GPU


def test_ray_resources_of_a_cuda_run():
    assert ray_task_options("cuda", jobs_per_gpu=4) == {"num_cpus": 1, "num_gpus": 0.25}
    assert ray_task_options("cuda:0", jobs_per_gpu=1, cpus_per_job=2) == {"num_cpus": 2, "num_gpus": 1.0}
    assert ray_task_options("cpu", jobs_per_gpu=4) == {"num_cpus": 1}  # CPU: as before
    with pytest.raises(ValueError):
        ray_task_options("cuda", jobs_per_gpu=0)


def test_ray_accepts_the_resource_request_without_starting():
    ray = pytest.importorskip("ray")
    remote = ray.remote(**ray_task_options("cuda", jobs_per_gpu=3))(posixpath.join)
    assert remote._default_options["num_gpus"] == pytest.approx(1 / 3)
    assert remote._default_options["max_calls"] == 1  # a fresh worker per GPU task: pinning never goes stale
    assert not ray.is_initialized()


def test_jobs_per_gpu_flag():
    parser = build_parser()
    assert parser.parse_args(["run"]).jobs_per_gpu == 1
    assert parser.parse_args(["run", "--jobs-per-gpu", "4"]).jobs_per_gpu == 4
    for bad in ("0", "-1", "1.5"):
        with pytest.raises(SystemExit):
            parser.parse_args(["run", "--jobs-per-gpu", bad])


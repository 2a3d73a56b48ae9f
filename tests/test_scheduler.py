"""The run's list scheduler (bench.pipeline.scheduler) and the executors' one worker pool per run."""

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from typing import Any

import pytest

from bench.pipeline.executors import Executor, LocalExecutor, run_here
from bench.pipeline.scheduler import EVALUATION, STEP, Job, RunGraph, run_graph


class Recording(Executor):
    """Runs jobs on `slots` threads and records when each starts and ends (a log of events)."""

    name = "recording"

    def __init__(self, slots: int) -> None:
        self._slots = slots
        self.events: list[str] = []
        self.lock = threading.Lock()
        self.threads = ThreadPoolExecutor(slots) if slots > 1 else None
        self.most_at_once = 0
        self.running = 0

    @property
    def slots(self) -> int:
        return self._slots

    def submit(self, fn: Any, args: tuple[Any, ...]) -> Future[Any]:
        def job() -> Any:
            with self.lock:
                self.running += 1
                self.most_at_once = max(self.most_at_once, self.running)
                self.events.append(f"start {args[0]}")
            try:
                return fn(*args)
            finally:
                with self.lock:
                    self.running -= 1
                    self.events.append(f"end {args[0]}")

        return self.threads.submit(job) if self.threads else run_here(job, ())


def noop(name: str, *_: Any) -> str:
    time.sleep(0.01)  # long enough for jobs that may overlap to overlap
    return name


def every_job(jobs: list[Job]) -> list[Job]:
    return [found for job in jobs for found in [job, *every_job(job.then)]]


def chain_graph(lengths: dict[str, int]) -> RunGraph:
    """A parent, then one chain of steps per pruner, each step followed by its evaluation."""
    total = 1
    after_parent: list[Job] = []
    for rank, (pruner, length) in enumerate(lengths.items()):
        first: list[Job] = []
        for step in range(length, 0, -1):  # built from the end, as bench.pipeline.scheduler.build_graph does
            job = Job((STEP, -(length - step + 1), rank), f"{pruner}{step}", noop, (f"{pruner}{step}",))
            job.then = [Job((EVALUATION, rank * 10 + step), f"eval {pruner}{step}", noop, (f"eval {pruner}{step}",),
                            needs_testsets=True), *first]
            first = [job]
            total += 2
        after_parent += first
    return RunGraph(ready=[Job((STEP, -100, -1), "parent", noop, ("parent",), then=after_parent)], total=total)


def started(executor: Recording) -> list[str]:
    return [event.removeprefix("start ") for event in executor.events if event.startswith("start ")]


def test_one_slot_runs_steps_first_longest_chain_first_and_evaluations_after_their_network():
    executor = Recording(slots=1)
    assert run_graph(chain_graph({"a": 1, "b": 3}), executor, lambda: "sets", progress=False) == "sets"
    order = started(executor)
    assert order[:5] == ["parent", "b1", "b2", "a1", "b3"]  # the chain with most steps left goes first
    assert set(order[5:]) == {"eval a1", "eval b1", "eval b2", "eval b3"}
    assert len(order) == 9


def test_dependencies_hold_with_parallel_slots():
    executor = Recording(slots=3)
    run_graph(chain_graph({"a": 4, "b": 2, "c": 3}), executor, lambda: None, progress=False)
    events = executor.events
    for pruner, length in {"a": 4, "b": 2, "c": 3}.items():
        assert events.index("end parent") < events.index(f"start {pruner}1")
        for step in range(1, length + 1):
            assert events.index(f"end {pruner}{step}") < events.index(f"start eval {pruner}{step}")
            if step > 1:
                assert events.index(f"end {pruner}{step - 1}") < events.index(f"start {pruner}{step}")
    assert len(started(executor)) == 1 + 2 * (4 + 2 + 3)


def test_test_sets_are_built_while_the_parent_trains_with_one_slot_kept_free():
    """The parent must have started before the test sets can finish (else this would time out),
    and while they are built only slots - 1 jobs run."""
    executor = Recording(slots=2)
    parent_started = threading.Event()

    def parent(name: str) -> str:
        parent_started.set()
        return name

    def build() -> str:
        assert parent_started.wait(timeout=30), "no job ran while the test sets were being built"
        time.sleep(0.3)  # the two chains' steps run meanwhile, one at a time
        return "sets"

    graph = chain_graph({"a": 3, "b": 3})
    graph.ready[0].fn = parent
    assert run_graph(graph, executor, build, progress=False) == "sets"
    while_building = executor.events[:executor.events.index("start eval a1")]
    assert "start b2" in while_building and executor.most_at_once == 2
    overlap = 0
    for event in while_building:
        overlap = overlap + 1 if event.startswith("start") else overlap - 1
        assert overlap <= 1, "two jobs ran while the test sets were being built"


def test_evaluations_wait_for_the_test_sets():
    executor = Recording(slots=2)
    built = threading.Event()

    def build() -> str:
        threading.Timer(0.2, built.set).start()
        built.wait()
        return "sets"

    def evaluation(name: str) -> str:
        assert built.is_set(), f"{name} ran before the test sets existed"
        return name

    graph = chain_graph({"a": 2})
    for job in every_job(graph.ready):
        if job.needs_testsets:
            job.fn = evaluation
    run_graph(graph, executor, build, progress=False)
    assert {"eval a1", "eval a2"} <= set(started(executor))


def test_the_first_failure_is_raised_and_nothing_after_it_starts():
    def broken(name: str) -> str:
        raise RuntimeError(f"{name} failed")

    graph = chain_graph({"a": 3})
    graph.ready[0].then[0].fn = broken  # a1
    executor = Recording(slots=1)
    with pytest.raises(RuntimeError, match="a1 failed"):
        run_graph(graph, executor, lambda: None, progress=False)
    assert started(executor) == ["parent", "a1"]


def test_a_failing_test_set_build_is_raised():
    def build() -> None:
        raise ValueError("no such corruption")

    with pytest.raises(ValueError, match="no such corruption"):
        run_graph(chain_graph({"a": 1}), Recording(slots=2), build, progress=False)


def worker_pid() -> int:
    return os.getpid()


@pytest.mark.slow
def test_one_pool_serves_every_stage():
    """Workers start once per run: a second batch of jobs runs in the same processes."""
    with closing(LocalExecutor(workers=2, progress=False)) as executor:
        first = set(executor.run([(worker_pid, ())] * 4, "first"))
        second = set(executor.run([(worker_pid, ())] * 4, "second"))
        assert os.getpid() not in first and second <= first and len(first) <= 2
        assert executor.slots == 2 and not executor.in_process
    assert executor._pool is None


def test_every_worker_starts_with_the_first_job():
    """The pool spawns on demand; a run's second worker would start (and import torch) only when a
    second job came, seconds after the parent. Each worker imports the job modules at once."""
    with closing(LocalExecutor(workers=2, progress=False)) as executor:
        assert executor.submit(worker_pid, ()).result() != os.getpid()
        assert executor._pool is not None and len(executor._pool._processes) == 2


def test_one_worker_runs_in_this_process():
    executor = LocalExecutor(workers=1, progress=False)
    assert executor.in_process and executor.slots == 1
    assert executor.run([(worker_pid, ())] * 2, "jobs") == [os.getpid()] * 2


def test_a_failing_job_is_raised_without_waiting_for_the_test_sets():
    """The test sets build in a daemon thread: a failure (or Ctrl-C) does not wait for them."""
    release = threading.Event()

    def build() -> str:
        release.wait(timeout=60)
        return "sets"

    def broken(name: str) -> str:
        raise RuntimeError(f"{name} failed")

    graph = chain_graph({"a": 2})
    graph.ready[0].fn = broken  # the parent
    started_at = time.perf_counter()
    try:
        with pytest.raises(RuntimeError, match="parent failed"):
            run_graph(graph, Recording(slots=2), build, progress=False)
        assert time.perf_counter() - started_at < 30
    finally:
        release.set()

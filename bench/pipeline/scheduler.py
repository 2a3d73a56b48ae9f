"""A run's jobs as a graph, kept busy on an executor: every core works from the first second to the last.

The graph: the parent; each pruner's cascade steps in order (step k prunes step k - 1's network);
each network's evaluation on every test set, once the network and the test sets exist. Jobs whose
artifacts the store already holds are done before anything starts (a rerun resumes).

List scheduling: at most `executor.slots` jobs are submitted at a time, and when a slot frees,
the ready job that comes first takes it: cascade steps before evaluations (they are the critical
path), among steps the chain with the most steps left (the longest expected), then pruner order.
The test sets are built in this process while the first jobs run (a thread; one slot fewer until
they exist, so the machine is not oversubscribed), where they used to run before any job.

Which worker runs a job, and in which order independent jobs finish, never changes a result:
each job reads its inputs from the store and writes its outputs there (bench.pipeline.jobs).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from bench.pipeline.executors import Executor
from bench.pipeline.jobs import run_eval_job, run_parent_job, run_step_job
from bench.pipeline.specs import NetworkRef
from bench.pipeline.store import Store

__all__ = ["Job", "RunGraph", "build_graph", "run_graph"]

STEP, EVALUATION = 0, 1  # job classes, in priority order
STEPS = "steps"  # the store kind of cascade steps (bench.pipeline.jobs.run_networks)


@dataclass(order=True)
class Job:
    """One node of a run's graph: its priority, what to run, and what it unlocks."""

    priority: tuple[int, ...]
    name: str = field(compare=False)
    fn: Callable[..., Any] = field(compare=False)
    args: tuple[Any, ...] = field(compare=False)
    needs_testsets: bool = field(default=False, compare=False)
    then: list[Job] = field(default_factory=list, compare=False)  # jobs that wait for this one alone


@dataclass
class RunGraph:
    """The jobs of a run still to do: `ready` ones, and the rest hanging off them (`Job.then`)."""

    ready: list[Job]
    total: int  # jobs to run, ready or not


def build_graph(refs: Sequence[NetworkRef], store: Store, config_json: str, data_checksum: str,
                testset_checksums: Callable[[], list[str]], device: str, progress: bool) -> RunGraph:
    """The jobs of the parent and networks `refs` (bench.pipeline.jobs.run_networks order: parent first). A
    cascade step the store lacks is trained; every network is evaluated (its job skips the test sets
    already evaluated). `testset_checksums` gives the run's test sets once they exist."""
    root = str(store.root)
    parent, steps = refs[0], refs[1:]
    order = itertools.count()
    total = 0

    def evaluation(ref: NetworkRef) -> list[Job]:
        nonlocal total
        total += 1
        return [Job((EVALUATION, next(order)), f"evaluate {ref.pruner} {ref.step}", run_eval_job,
                    (config_json, root, data_checksum, ref.kind, ref.key, _Deferred(testset_checksums), device),
                    needs_testsets=True)]

    def chain(ref_index: int, chain_refs: list[NetworkRef], rank: int) -> list[Job]:
        """The jobs of `chain_refs[ref_index:]`: the step (unless stored), its evaluation and the rest."""
        nonlocal total
        if ref_index == len(chain_refs):
            return []
        ref = chain_refs[ref_index]
        rest = chain(ref_index + 1, chain_refs, rank)
        if ref.kind != STEPS or store.done(STEPS, ref.key):  # stored (or an imported network, bench eval)
            return evaluation(ref) + rest
        total += 1
        left = len(chain_refs) - ref_index
        job = Job((STEP, -left, rank), f"{ref.pruner} step {ref.step}", run_step_job,
                  (config_json, root, data_checksum, ref.pruner, parent.key, ref.step, progress, device))
        job.then = evaluation(ref) + rest
        return [job]

    chains: dict[str, list[NetworkRef]] = {}
    for ref in steps:
        chains.setdefault(ref.pruner, []).append(ref)
    after_parent = evaluation(parent)
    for rank, chain_refs in enumerate(chains.values()):
        after_parent += chain(0, chain_refs, rank)
    if store.done("parents", parent.key):
        return RunGraph(ready=after_parent, total=total)
    job = Job((STEP, -(max(map(len, chains.values()), default=0) + 1), -1), "parent", run_parent_job,
              (config_json, root, data_checksum, progress, None, device), then=after_parent)
    return RunGraph(ready=[job], total=total + 1)


class _Deferred:
    """An argument known only once the test sets exist: resolved just before its job is submitted."""

    def __init__(self, value: Callable[[], Any]) -> None:
        self.value = value


def _resolved(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(arg.value() if isinstance(arg, _Deferred) else arg for arg in args)


def _start(build: Callable[[], Any], concurrent: bool) -> Future[Any]:
    """`build()` in a daemon thread of this process (`concurrent`), else right now; its future. A
    daemon, so Ctrl-C or a failing job is not held up for the minutes a big suite takes to build
    (each test set is saved atomically: stopping in between leaves nothing half written)."""
    future: Future[Any] = Future()
    if not concurrent:
        future.set_result(build())
        return future

    def target() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(build())
            except BaseException as exc:  # handed to the scheduler, which raises it
                future.set_exception(exc)

    threading.Thread(target=target, name="testsets", daemon=True).start()
    return future


def run_graph(graph: RunGraph, executor: Executor, build_testsets: Callable[[], Any], progress: bool = True) -> Any:
    """Run every job of `graph` on `executor` (list scheduling, module docstring) while
    `build_testsets()` runs in this process; returns what `build_testsets` returned. The first job
    that fails raises its exception, after the running ones finish (nothing else is started)."""
    slots = executor.slots  # read once: Ray asks its cluster
    ready = list(graph.ready)
    heapq.heapify(ready)
    waiting: list[Job] = []  # ready but for the test sets
    running: dict[Future[Any], Job] = {}
    testsets = _start(build_testsets, concurrent=slots > 1)
    with tqdm(total=graph.total, desc="jobs", unit="job", disable=not progress, dynamic_ncols=True) as bar:
        while ready or waiting or running:
            if testsets.done():
                testsets.result()  # a failure to build them raises here
                for job in waiting:
                    heapq.heappush(ready, job)
                waiting.clear()
            free = slots - len(running) - (0 if testsets.done() else 1)
            while ready and free > 0:
                job = heapq.heappop(ready)
                if job.needs_testsets and not testsets.done():
                    waiting.append(job)
                    continue
                running[executor.submit(job.fn, _resolved(job.args))] = job
                free -= 1
            if not running:  # every ready job waits for the test sets
                wait([testsets])
                continue
            pending = [*running, *([] if testsets.done() else [testsets])]
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                if future not in running:
                    continue  # the test sets
                job = running.pop(future)
                if future.exception() is not None:
                    wait(list(running))
                    raise future.exception()  # type: ignore[misc]
                for unlocked in job.then:
                    heapq.heappush(ready, unlocked)
                bar.update(1)
                bar.set_postfix_str(job.name, refresh=False)
        return testsets.result()

"""Jobs on nodes that do not see the driver's job store (bench.pipeline.shipping, `--ray-storage object-store`):
the shipping itself without Ray, then a 2-node Ray cluster on this machine, whole and losing a node."""

import inspect
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.pipeline.executors import RayExecutor, make_executor, ray_storage
from bench.pipeline.job_files import JOB_FILES
from bench.pipeline.jobs import eval_spec, run_eval_job, run_step_job, spec_key
from bench.pipeline.runner import run
from bench.pipeline.shipping import input_files, run_in_scratch_store, write_outputs
from bench.pipeline.store import Store
from tests.test_jobs import cells, sequential_result, small_config  # noqa: F401 (sequential_result: a fixture)


def note_job(tag: str, store_root: str, name: str) -> str:
    """A job for the shipping tests: reads `notes/<name>.txt`, writes `notes/<name>-<tag>.txt`."""
    text = (Path(store_root) / "notes" / f"{name}.txt").read_text()
    (Path(store_root) / "notes" / f"{name}-{tag}.txt").write_text(text + tag)
    return store_root


def test_a_scratch_store_holds_the_inputs_and_returns_only_new_files(tmp_path):
    inputs = {"notes/a.txt": b"hello ", "other/b.bin": b"\x00"}
    returned = run_in_scratch_store(note_job, ("x", str(tmp_path), "a"), inputs)
    assert returned.value == returned.store_root != str(tmp_path)  # the job ran on the scratch store
    assert returned.outputs == {"notes/a-x.txt": b"hello x"}
    assert not Path(returned.store_root).exists()  # deleted afterwards
    assert list(tmp_path.iterdir()) == []  # and the given store was never touched

    with pytest.raises(FileNotFoundError):  # a file the job reads but was not shipped: it fails
        run_in_scratch_store(note_job, ("x", str(tmp_path), "c"), inputs)


def test_outputs_land_in_the_store_and_never_outside_it(tmp_path):
    store = Store(tmp_path / "store")
    write_outputs(store, {"evals/k.json": b"{}", "steps/k.safetensors": b"net"})
    assert (tmp_path / "store" / "evals" / "k.json").read_bytes() == b"{}"
    assert (tmp_path / "store" / "steps" / "k.safetensors").read_bytes() == b"net"
    for bad in ("../escape.json", "/etc/passwd", ""):
        with pytest.raises(ValueError, match="not a path inside the store"):
            write_outputs(store, {bad: b"x"})
    assert not (tmp_path / "escape.json").exists()


def test_declared_inputs_must_be_in_the_store_and_stored_outputs_are_shipped(tmp_path):
    store = Store(tmp_path)
    config = small_config()
    args = (config.model_dump_json(), str(tmp_path), "data", "steps", "net", ["set"], "cpu")
    with pytest.raises(FileNotFoundError, match="run_eval_job reads steps/net, which is not in the job store"):
        input_files(store, run_eval_job, args)
    done_eval = spec_key(eval_spec("net", "set", config))
    write_outputs(store, {"steps/net.json": b"{}", "steps/net.safetensors": b"w", "testsets/set.npz": b"t",
                          f"evals/{done_eval}.json": b"{}"})
    assert sorted(input_files(store, run_eval_job, args)) == [
        f"evals/{done_eval}.json", "steps/net.json", "steps/net.safetensors", "testsets/set.npz"]


def test_a_step_without_its_previous_network_fails_instead_of_recomputing(tmp_path):
    args = (small_config().model_dump_json(), str(tmp_path), "data", "wt", "parentkey", 1, False, "cpu")
    with pytest.raises(RuntimeError, match="is not in the job store yet"):
        run_in_scratch_store(run_step_job, args, {})


def test_every_declaration_takes_its_jobs_arguments():
    for job, declare in JOB_FILES.items():
        assert list(inspect.signature(declare).parameters) == list(inspect.signature(job).parameters), job


def test_the_storage_flag():
    assert ray_storage(None, None) == "shared" and ray_storage(None, "head:6379") == "object-store"
    assert ray_storage("shared", "head:6379") == "shared"
    with pytest.raises(ValueError, match="--ray-storage must be one of object-store, shared"):
        ray_storage("s3", None)
    with pytest.raises(ValueError, match="--ray-storage applies to --executor ray"):
        make_executor("local", ray_storage="shared")


@contextmanager
def two_node_cluster() -> Iterator[tuple]:
    """A Ray cluster of two nodes of one CPU each on this machine (head and worker), connected."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_jobs_run_on_both_nodes_through_the_object_store(sequential_result, tmp_path):  # noqa: F811
    with two_node_cluster():
        executor = RayExecutor(progress=False, storage="object-store")
        path = run(small_config(), tmp_path, progress=False, executor=executor)
    assert cells(path) == cells(sequential_result)
    nodes = [node for node, _ in executor.placements]
    roots = [Path(root) for _, root in executor.placements]
    assert len(nodes) == 10 and len(set(nodes)) == 2  # parent, 4 steps, 5 evaluations, on both nodes
    assert len(set(roots)) == len(roots)  # a store of its own for every task
    assert not any(root.is_relative_to(tmp_path) for root in roots)


def busy(node_id: str) -> bool:
    """Whether a task holds the node's CPU (Ray's per-node resource view, no public API for it; a
    resource in full use is absent from it)."""
    from ray._private.state import available_resources_per_node

    available = available_resources_per_node()
    return node_id in available and available[node_id].get("CPU", 0) < 1


@pytest.mark.slow
def test_a_run_survives_losing_a_node(sequential_result, tmp_path):  # noqa: F811
    with two_node_cluster() as (cluster, worker):
        executor = RayExecutor(progress=False, storage="object-store")
        head = cluster.head_node.node_id
        killed = threading.Event()

        def kill_when_busy() -> None:
            deadline = time.monotonic() + 120
            while not busy(worker.node_id) and time.monotonic() < deadline:
                time.sleep(0.05)
            cluster.remove_node(worker, allow_graceful=False)
            killed.set()

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        path = run(small_config(), tmp_path, progress=False, executor=executor)
        killer.join(timeout=60)
    assert killed.is_set()
    assert cells(path) == cells(sequential_result)
    # killed while running a job, the worker finished none: its job ran again on the head
    assert {node for node, _ in executor.placements} == {head}

"""What each job reads and writes in its store. Executors whose workers do not see the driver's
store (bench.pipeline.shipping: Ray in object-store mode) ship a job exactly the artifacts declared
here; a job that reads anything else fails on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.pipeline.jobs import control_config, run_control_job, run_eval_job, run_parent_job, run_step_job
from bench.pipeline.specs import EXPORTED_KIND, chain_keys, eval_spec, parent_spec, spec_key
from bench.results.schema import RunConfig

Artifact = tuple[str, str]  # (store kind, key)


@dataclass(frozen=True)
class JobFiles:
    """The store artifacts a job reads (each must be in the store) and writes (where one is stored
    already, the job skips it)."""

    reads: tuple[Artifact, ...]
    writes: tuple[Artifact, ...]


def parent_job_files(config_json: str, store_root: str, data_checksum: str, progress: bool = False,
                     data_seed: int | None = None, device: str = "cpu") -> JobFiles:
    """run_parent_job's artifacts: the user's parent checkpoint, if any; the parent."""
    config = RunConfig.model_validate_json(config_json)
    sha256 = config.parent_checkpoint_sha256
    return JobFiles(reads=() if sha256 is None else (("checkpoints", sha256),),
                    writes=(("parents", spec_key(parent_spec(config, data_checksum, device))),))


def control_job_files(config_json: str, store_root: str, data_checksum: str, progress: bool = False,
                      device: str = "cpu") -> JobFiles:
    """run_control_job's artifacts: those of the parent job of control_config."""
    control = control_config(RunConfig.model_validate_json(config_json)).model_dump_json()
    return parent_job_files(control, store_root, data_checksum, progress, device=device)


def step_job_files(config_json: str, store_root: str, data_checksum: str, pruner_name: str, parent_key: str,
                   step: int, progress: bool = False, device: str = "cpu") -> JobFiles:
    """run_step_job's artifacts: the network it prunes and the parent (its nonzero count); the step."""
    keys = chain_keys(RunConfig.model_validate_json(config_json), pruner_name, parent_key, device=device)
    previous = ("parents", parent_key) if step == 1 else ("steps", keys[step - 2])
    return JobFiles(reads=tuple(dict.fromkeys((previous, ("parents", parent_key)))), writes=(("steps", keys[step - 1]),))


def eval_job_files(config_json: str, store_root: str, data_checksum: str, kind: str, network_key: str,
                   testsets: list[str], device: str = "cpu") -> JobFiles:
    """run_eval_job's artifacts: the network (an exported one is a checkpoint) and the test sets;
    one evaluation per test set."""
    config = RunConfig.model_validate_json(config_json)
    network = ("checkpoints", network_key) if kind == EXPORTED_KIND else (kind, network_key)
    return JobFiles(reads=(network, *(("testsets", checksum) for checksum in testsets)),
                    writes=tuple(("evals", spec_key(eval_spec(network_key, c, config, device))) for c in testsets))


# each job function -> its declaration, which takes the job's own arguments
JOB_FILES: dict[Callable[..., Any], Callable[..., JobFiles]] = {
    run_parent_job: parent_job_files,
    run_control_job: control_job_files,
    run_step_job: step_job_files,
    run_eval_job: eval_job_files,
}

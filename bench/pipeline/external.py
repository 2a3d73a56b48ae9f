"""`bench eval`: evaluate a parent and pruned networks that the user brings, on any suites.

No ratio grid and no training: the result file is a normal RunResult whose config has protocol
"external" and records the sha256 of every file given (never its path), so it stays verifiable.

* The parent: a state dict of the config's model (torch.save read with `weights_only=True`,
  safetensors, or a prunebench network file), as `bench run --parent-checkpoint` takes it.
* A **masked** network: a state dict of the same model; its size is its nonzero parameter count.
* An **exported** (physically smaller) network: a torch.export archive `.pt2` (e.g. from `bench
  compress --export-dir`); its size is its parameter count, zeros included (a smaller network
  pays for every entry it stores).

Each network's prune ratio is 1 - size / the parent's nonzero parameters. The networks of one
method form one row (a curve over their ratios), numbered by ratio as a cascade's steps are, so
prune potential, excess error and the leaderboard read the file unchanged. Everything else is the
run's machinery: the parent job, the evaluation jobs and their cache, the networks saved beside
the result file.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from bench.core.io import atomic_path
from bench.data import DataBundle
from bench.pipeline.config import default_config, file_sha256
from bench.pipeline.executors import Executor
from bench.pipeline.exported import EXPORT_SUFFIX, network_size, read_exported
from bench.pipeline.jobs import external_location, external_refs, new_model, run_parent_job
from bench.pipeline.runner import network_results, prepare, result_path, save_networks, write_result
from bench.pipeline.specs import EXPORTED_KIND, NetworkRef
from bench.pipeline.store import NETWORK_SUFFIX, Store
from bench.pruning import check_finite
from bench.results import networks_folder
from bench.results.checkpoints import (
    NetworkFileError,
    checked_bytes,
    decode_checkpoint,
    fit_state,
    shape_signature,
    stored_entries,
)
from bench.results.schema import EXTERNAL, PARENT, ExternalNetwork, NetworkFile, RunConfig

__all__ = ["external_config", "evaluate_networks", "parse_network"]


def parse_network(value: str) -> tuple[str, Path]:
    """`METHOD=PATH` of `bench eval --network` as (method, path)."""
    method, sep, path = value.partition("=")
    if not sep or not method.strip() or not path:
        raise ValueError(f"--network {value!r}: use METHOD=PATH, e.g. mymethod=net.pt")
    if method.strip() == PARENT:
        raise ValueError(f"--network {value!r}: {PARENT!r} names the unpruned network (--parent); choose another method name")
    return method.strip(), Path(path)


def network_format(path: Path) -> Literal["masked", "exported"]:
    """"exported" for a torch.export archive (`.pt2`), else "masked" (a state dict file)."""
    return "exported" if path.name.endswith(EXPORT_SUFFIX) else "masked"


def external_config(parent: Path, networks: Sequence[tuple[str, Path]], **settings: Any) -> RunConfig:
    """The config of `bench eval`: the dataset's defaults (bench.pipeline.config.default_config) at 0 epochs,
    no grid, protocol "external", the sha256 of the parent and of each network. `settings`: the
    other default_config arguments (dataset, model, suites, seed, threads, ...)."""
    if not networks:
        raise ValueError("bench eval needs at least one network (--network METHOD=PATH)")
    recorded = tuple(ExternalNetwork(method=method, sha256=file_sha256(path, f"network {method}"),
                                     format=network_format(path)) for method, path in networks)
    seen: dict[tuple[str, str], Path] = {}
    for (method, path), net in zip(networks, recorded):
        if (method, net.sha256) in seen:
            raise ValueError(f"--network {method}={path}: the same file as {seen[(method, net.sha256)]}")
        seen[(method, net.sha256)] = path
    return default_config(
        pruners=tuple(dict.fromkeys(method for method, _ in networks)), target_ratios=(), epochs=0, retrain_epochs=0,
        parent_checkpoint=parent, protocol=EXTERNAL, external_networks=recorded, **settings,
    )


def _measured(method: str, size: int, parent_nonzero: int, structured: bool, source: Path) -> dict[str, Any]:
    ratio = 1.0 - size / parent_nonzero
    if ratio < 0:
        raise ValueError(f"network {method}={source}: {size} parameters, more than the parent's {parent_nonzero}")
    return {"target_ratio": ratio, "prune_ratio": ratio, "nonzero_params": size, "structured": structured}


def import_network(store: Store, config: RunConfig, data: DataBundle, network: ExternalNetwork, path: Path,
                   parent_key: str, parent_nonzero: int) -> None:
    """Check one network file (its sha256 against the config; its fit to the model, or its output
    shape) and keep it in `store` (bench.pipeline.jobs.external_location) with its measured prune ratio.
    A one-line error naming the file otherwise."""
    payload = checked_bytes(path)
    if hashlib.sha256(payload).hexdigest() != network.sha256:
        raise ValueError(f"network {network.method}={path}: changed since its sha256 was taken")
    kind, key = external_location(config, network, parent_key)
    if network.format == "exported":
        exported = read_exported(payload, str(path))
        check_finite(exported.graph_module, f"network {network.method}={path}")
        with torch.inference_mode():
            logits = exported(data.normalize(next(iter(data.test.batches(1)))[0]))
        if tuple(logits.shape) != (1, data.num_classes):
            raise NetworkFileError(f"{path}: outputs of shape {tuple(logits.shape)} for one image, "
                                   f"expected (1, {data.num_classes})")
        store.save_checkpoint(payload)
        store.write_json(kind, key, _measured(network.method, network_size(exported), parent_nonzero, True, path))
        return
    model = fit_state(new_model(config, data), decode_checkpoint(payload, str(path)), path)
    check_finite(model, f"network {network.method}={path}")
    store.save_network(kind, key, model, _measured(network.method, network_size(model), parent_nonzero, False, path))


def save_exported(store: Store, ref: NetworkRef, folder: Path) -> NetworkFile:
    """Copy an exported network out of the store beside the result file, as the run saves its networks."""
    payload = store.checkpoint_bytes(ref.key)
    name = ref.file_name.removesuffix(NETWORK_SUFFIX) + EXPORT_SUFFIX
    with atomic_path(folder / name) as temporary:
        temporary.write_bytes(payload)
    state = read_exported(payload, name).graph_module.state_dict()
    return NetworkFile(name=name, sha256=ref.key, nonzero=stored_entries(state), shape_signature=shape_signature(state))


def evaluate_networks(config: RunConfig, parent: Path, networks: Sequence[tuple[str, Path]], out_dir: Path,
                      cache_dir: Path | None = None, progress: bool = True, executor: Executor | None = None,
                      device: str = "cpu") -> Path:
    """Evaluate the parent and the networks of `config` (external_config of the same files) on its
    suites and write the validated result file to `out_dir`; returns its path."""
    started = time.perf_counter()
    if config.protocol != EXTERNAL or len(networks) != len(config.external_networks or ()):
        raise ValueError("evaluate_networks needs the external_config of the same networks")
    setup = prepare(config, out_dir, cache_dir, progress, executor, device, parent_checkpoint=Path(parent))
    store, data = setup.store, setup.data
    cfg, root, checksum = config.model_dump_json(), str(store.root), data.checksum
    (parent_key,) = setup.executor.run([(run_parent_job, (cfg, root, checksum, False, None, setup.job_device))],
                                       desc="parent")
    parent_nonzero = store.read_json("parents", parent_key)["nonzero_params"]
    for network, (_, path) in zip(config.external_networks or (), networks):
        import_network(store, config, data, network, Path(path), parent_key, parent_nonzero)
    refs = [NetworkRef("parents", parent_key, PARENT, 0), *external_refs(config, store, parent_key)]
    testsets = setup.run_jobs(refs)
    path = result_path(config, Path(out_dir))
    folder = networks_folder(path)
    files = save_networks(store, [ref for ref in refs if ref.kind != EXPORTED_KIND], folder)
    files |= {ref: save_exported(store, ref, folder) for ref in refs if ref.kind == EXPORTED_KIND}
    cells = network_results(config, store, refs, testsets.checksums, files, setup.job_device)
    return write_result(config, data, testsets.distributions, cells, path, setup.executor.name,
                        time.perf_counter() - started, device)

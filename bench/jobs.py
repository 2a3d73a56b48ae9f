"""Content-addressed jobs: every stage of a run is a pure function of a hashed spec.

A spec holds everything that determines the artifact: the CPU thread count, which changes float
reduction order (it matters only on the CPU, but every spec keeps it so existing keys stay valid),
and, off the CPU, the device type (`device_extras`: a CUDA artifact is never reused by a CPU run, nor
the other way round). Artifacts live in a Store (bench.store: what is stored where, and how every
artifact is checked on use); a job whose artifacts are done is skipped, so a killed run resumes
exactly where it stopped, and a rerun with more suites only adds evaluations. Job functions take
plain strings (the device too, e.g. "cuda") so any executor (processes, Ray) can ship them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench import registry
from bench.checkpoints import decode_checkpoint, fit_state
from bench.config import set_hub_policy
from bench.data import DataBundle, dataset_spec, load_dataset
from bench.devices import device_environment, module_device
from bench.exported import read_exported
from bench.io import canonical_sha256
from bench.models import create_model
from bench.pruning import (
    FAILURE_PROBABILITY,
    Loss,
    PruneContext,
    Pruner,
    calibration_size,
    check_finite,
    classification_loss,
    count_nonzero,
    last_layer_name,
    layer_output_sizes,
    load_pruner,
    parameter_masks,
    prune_to_ratio,
)
from bench.registry import PluginError
from bench.results import load_result
from bench.schema import EXTERNAL, PARENT, ExternalNetwork, RunConfig, RunResult
from bench.store import CHECKPOINT_SUFFIX, NETWORK_SUFFIX, Store
from bench.training import evaluate, train

JOB_VERSION = 5  # bump when a job's computation changes, so old artifacts are not reused
CONTROL_SEED_OFFSET = 1000  # a run's control parent: seed + 1000 (init and data order), the run's split
# store kinds of `bench eval`'s networks (bench.external): masked state dicts of the run's model, and
# torch.export archives, kept as given under their sha256 (Store.save_checkpoint) with a marker here
EXTERNAL_KIND, EXPORTED_KIND = "external", "exported"


def spec_key(spec: Mapping[str, Any]) -> str:
    return canonical_sha256(spec)[:24]


# ---- specs -----------------------------------------------------------------------------------


def parent_spec(config: RunConfig, data_checksum: str, device: str = "cpu") -> dict[str, Any]:
    spec = _parent_spec(config, data_checksum)
    if config.parent_checkpoint_sha256 is not None:  # absent otherwise: existing parents keep their keys
        spec["checkpoint"] = config.parent_checkpoint_sha256
    spec.update(training_extras(config, device))
    return spec


def device_extras(device: str) -> dict[str, str]:
    """The device entry of a job spec: its type (`cuda:1` -> `cuda`), present only off the CPU, so
    every CPU key (and every committed number) stays what it was. The CPU thread count, which the
    specs hold too, matters only on the CPU."""
    kind = torch.device(device).type
    return {} if kind == "cpu" else {"device": kind}


def training_extras(config: RunConfig, device: str) -> dict[str, Any]:
    """Spec entries of the jobs that train (parent, step): the device type off the CPU, the
    precision when it is not fp32 (bf16 trains under autocast) and `compile` when on, so fp32 eager
    CPU keys are unchanged."""
    extras: dict[str, Any] = {**device_extras(device), **compile_extras(config)}
    if config.precision != "fp32":
        extras["precision"] = config.precision
    return extras


def compile_extras(config: RunConfig) -> dict[str, bool]:
    """`{"compile": True}` in the specs of training and evaluation jobs of a `--compile` run, else nothing."""
    return {"compile": True} if config.compile else {}


def _parent_spec(config: RunConfig, data_checksum: str) -> dict[str, Any]:
    return {
        "job": "parent",
        "version": JOB_VERSION,
        "dataset": config.dataset,
        "data": data_checksum,
        "model": config.model,
        "train": config.train.model_dump(mode="json"),
        "seed": config.seed,
        "pretrained": config.pretrained,
        "per_class": config.per_class,
        "channels_last": config.channels_last,
        "threads": config.threads,  # matters only on the CPU; kept everywhere so CPU keys never change
        "torch": torch.__version__,
    }


# the fields of a pruner's identity (schema.PrunerIdentity) that its steps' cache keys hold; the
# others (display name, paper, code URL) are metadata and change no computation
PRUNER_KEY_FIELDS = ("name", "distribution", "version", "source_sha256", "options", "requires")


def pruner_identity(label: str) -> dict[str, Any]:
    """A pruner label's identity (schema.PrunerIdentity): what makes its steps what they are, its
    package and version, a digest of its source code (bench.registry.source_digest) and its
    non-default options (PRUNER_KEY_FIELDS, part of every step's cache key), and its metadata."""
    pruner = load_pruner(label)
    distribution, dist_version = registry.distribution_of(registry.PRUNER_GROUP, pruner.name)
    return {
        "name": pruner.name,
        "distribution": distribution,
        "version": dist_version,
        "source_sha256": registry.source_digest(registry.PRUNER_GROUP, pruner.name, type(pruner)),
        "options": pruner.changed_options(),
        # only where declared: identities (and step keys) of pruners without requirements are unchanged
        **({"requires": registry.installed_versions(pruner.requires)} if pruner.requires else {}),
        **pruner.metadata(),
    }


def keyed_identity(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a pruner identity that its steps' keys hold (PRUNER_KEY_FIELDS), the same whether
    it comes from pruner_identity or from a result file's PrunerIdentity (where an empty `requires`
    is stored as {}: left out, so pruners without requirements keep their keys)."""
    return {key: value for key, value in identity.items()
            if key in PRUNER_KEY_FIELDS and not (key == "requires" and not value)}


def step_spec(config: RunConfig, pruner: str, step: int, previous_key: str,
              identity: Mapping[str, Any] | None = None, device: str = "cpu") -> dict[str, Any]:
    return {
        "job": "step",
        "version": JOB_VERSION,
        "previous": previous_key,
        "pruner": keyed_identity(identity if identity is not None else pruner_identity(pruner)),
        "step": step,
        "target_ratio": config.target_ratios[step - 1],
        "retrain": config.retrain.model_dump(mode="json"),
        "seed": config.seed,
        "calibration_size": config.calibration_size,
        "propagation": config.propagation,
        "threads": config.threads,
        **training_extras(config, device),
    }


def eval_spec(network_key: str, testset_checksum: str, config: RunConfig, device: str = "cpu") -> dict[str, Any]:
    return {"job": "eval", "version": JOB_VERSION, "network": network_key, "testset": testset_checksum,
            "threads": config.threads, "precision": config.precision, **device_extras(device),
            **compile_extras(config)}


def chain_keys(config: RunConfig, pruner: str, parent_key: str,
               identity: Mapping[str, Any] | None = None, device: str = "cpu") -> list[str]:
    """Keys of a pruner's cascade steps on `device`; `identity` defaults to the installed pruner's."""
    keys, previous = [], parent_key
    identity = identity if identity is not None else pruner_identity(pruner)
    for step in range(1, len(config.target_ratios) + 1):
        previous = spec_key(step_spec(config, pruner, step, previous, identity, device))
        keys.append(previous)
    return keys


@dataclass(frozen=True)
class NetworkRef:
    """Where a run's network lives in the store: kind "parents" or "steps", and its key."""

    kind: str
    key: str
    pruner: str  # "parent" for the unpruned network
    step: int

    @property
    def file_name(self) -> str:
        """Its file name in a result's networks folder, e.g. `wt-3.safetensors`. A label with other
        characters than letters, digits, `_.-` (options: `pfp:failure_probability=1e-5`) has them
        replaced and a digest of the label appended, so distinct labels never share a file."""
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", self.pruner)
        if stem != self.pruner:
            stem += "_" + hashlib.sha256(self.pruner.encode()).hexdigest()[:10]
        return f"{stem}-{self.step}{NETWORK_SUFFIX}"


def run_networks(config: RunConfig, data_checksum: str,
                 identities: Mapping[str, Mapping[str, Any]] | None = None, device: str = "cpu") -> list[NetworkRef]:
    """The parent and every cascade step of a run, in result-file order.

    `identities` (pruner name -> identity, as a result file records them) name the networks that a
    finished run evaluated even after its pruners' code changed; default: the installed pruners.
    `device`: the device the run trained on (its type is part of every key off the CPU).
    """
    parent_key = spec_key(parent_spec(config, data_checksum, device))
    refs = [NetworkRef("parents", parent_key, "parent", 0)]
    for pruner in config.pruners:
        identity = (identities or {}).get(pruner)
        refs += [NetworkRef("steps", key, pruner, step)
                 for step, key in enumerate(chain_keys(config, pruner, parent_key, identity, device), start=1)]
    return refs


def load_network(store: Store, config: RunConfig, data: DataBundle, ref: NetworkRef) -> nn.Module:
    if not store.done(ref.kind, ref.key):
        raise FileNotFoundError(f"network {ref.pruner} step {ref.step} is not in {store.root}; rerun `bench run`")
    return load_job_network(store, config, data, ref.kind, ref.key)


def external_location(config: RunConfig, network: ExternalNetwork, parent_key: str) -> tuple[str, str]:
    """(store kind, key) of a `bench eval` network: a masked one is keyed by its file, the parent and
    the model; an exported one is kept as given, under its sha256."""
    if network.format == "exported":
        return EXPORTED_KIND, network.sha256
    return EXTERNAL_KIND, spec_key({"job": "external", "version": JOB_VERSION, "network": network.sha256,
                                    "parent": parent_key, "model": config.model, "channels_last": config.channels_last})


def external_refs(config: RunConfig, store: Store, parent_key: str) -> list[NetworkRef]:
    """The networks of a `bench eval` config (stored by bench.external with their measured ratios),
    as its result lists them: per method, steps 1..k in order of prune ratio (ties: as given)."""
    located = [(n.method, *external_location(config, n, parent_key)) for n in config.external_networks or ()]
    refs = []
    for method in config.pruners:
        mine = sorted(((kind, key) for m, kind, key in located if m == method),
                      key=lambda where: store.read_json(*where)["prune_ratio"])
        refs += [NetworkRef(kind, key, method, step) for step, (kind, key) in enumerate(mine, start=1)]
    return refs


@dataclass(frozen=True)
class FinishedRun:
    """A result file with its job cache and data: what analyses of a finished run start from."""

    result: RunResult
    store: Store
    data: DataBundle

    def refs(self) -> list[NetworkRef]:
        config, device = self.result.config, self.result.provenance.device
        if config.protocol == EXTERNAL:
            parent_key = spec_key(parent_spec(config, self.data.checksum, device))
            return [NetworkRef("parents", parent_key, PARENT, 0), *external_refs(config, self.store, parent_key)]
        identities = {name: p.model_dump(mode="json") for name, p in self.result.provenance.pruners.items()}
        return run_networks(self.result.config, self.data.checksum, identities, self.result.provenance.device)

    def prune_ratio(self, ref: NetworkRef) -> float:
        return next(n.prune_ratio for n in self.result.networks if (n.pruner, n.step) == (ref.pruner, ref.step))

    def label(self, ref: NetworkRef) -> str:
        return PARENT if ref.pruner == PARENT else f"{ref.pruner} {100 * self.prune_ratio(ref):.1f}%"

    def load(self, ref: NetworkRef) -> nn.Module:
        return load_network(self.store, self.result.config, self.data, ref)


def open_run(result: RunResult | str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> FinishedRun:
    """A result file (or loaded result) and its job cache, default `<result folder>/.cache`."""
    if isinstance(result, RunResult):
        if cache_dir is None:
            raise ValueError("a RunResult needs the cache folder of its run")
    else:
        path = Path(result)
        result = load_result(path)
        cache_dir = cache_dir if cache_dir is not None else path.parent / ".cache"
    data = load_checked_dataset(result.config, result.provenance.data_checksum)
    return FinishedRun(result, Store(Path(cache_dir)), data)


# ---- job functions -----------------------------------------------------------------------------


@contextmanager
def job_environment(config: RunConfig, device: str | torch.device = "cpu", autotune: bool = True) -> Iterator[None]:
    """Thread count and hub policy of the config, and `device`'s environment (on CUDA: its GPU the
    current one, cuDNN autotuning as `autotune` says; bench.devices.device_environment) while a job
    runs. Evaluations do not autotune, so their hits repeat on the same GPU model (bench verify)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    set_hub_policy(config.pretrained)
    try:
        with device_environment(device, autotune):
            yield
    finally:
        torch.set_num_threads(previous)


def new_model(config: RunConfig, data: DataBundle, initial: bool = False,
              device: str | torch.device = "cpu") -> nn.Module:
    """The run's architecture on `device` (initialised on the CPU, so a seed gives the same weights
    everywhere); `initial`: the parent's starting point (timm weights if pretrained)."""
    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=data.num_classes, in_chans=data.train.images.shape[1],
                         pretrained=initial and config.pretrained).to(device)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def calibration_indices(config: RunConfig, data: DataBundle, model: nn.Module | None = None) -> list[int]:
    """The S set of every pruner: a seeded random subset of the validation split, sorted.

    |S| follows the reference (bench.pruning.calibration_size: resnet20 on CIFAR gives 183, capped at
    half the validation split), unless `config.calibration_size` sets it. `model`: the run's
    architecture, if one is at hand (only its layer output sizes matter).
    """
    available = len(data.val)
    if available < 2:
        raise ValueError(f"the validation split of {data.name!r} has {available} image(s); pruning needs at least 2 "
                         "for its S set (use more data, e.g. a larger --per-class)")
    if config.calibration_size is not None:
        size = min(config.calibration_size, available)
    else:
        example = data.normalize(data.val.images[:1])
        sizes = layer_output_sizes(model if model is not None else new_model(config, data), example)
        size = calibration_size(sizes, FAILURE_PROBABILITY[data.task], available)
    order = torch.randperm(available, generator=torch.Generator().manual_seed(config.seed))
    return sorted(order[:size].tolist())


def prune_context(config: RunConfig, data: DataBundle, model: nn.Module) -> PruneContext:
    """The S set (on the model's device) and task constants handed to every pruner of a run."""
    s_set = data.val.subset(torch.tensor(calibration_indices(config, data, model)))
    device = module_device(model)
    loss: Loss = classification_loss
    if data.task == "segmentation":
        from bench.segmentation import segmentation_loss

        loss = segmentation_loss
    return PruneContext(
        calibration=data.normalize(s_set.images.to(device)),
        labels=s_set.labels.to(device),
        seed=config.seed,
        last_layer=last_layer_name(model),
        loss=loss,
        failure_probability=FAILURE_PROBABILITY[data.task],
    )


def load_checked_dataset(config: RunConfig, checksum: str, seed: int | None = None) -> DataBundle:
    """The config's data (split drawn with `seed`, default the config's), checked against `checksum`."""
    data = load_dataset(config.dataset, config.seed if seed is None else seed, config.per_class, config.image_size)
    if data.checksum != checksum:
        raise RuntimeError(f"dataset {config.dataset!r} on this worker differs from the run's (checksum mismatch)")
    return data


def run_parent_job(config_json: str, store_root: str, data_checksum: str, progress: bool = False,
                   data_seed: int | None = None, device: str = "cpu") -> str:
    """Train the unpruned network on `device`; `data_seed`: the seed that drew the split
    `data_checksum` names, if not the config's (a control parent trains on its run's split)."""
    config = RunConfig.model_validate_json(config_json)
    store = Store(Path(store_root))
    key = spec_key(parent_spec(config, data_checksum, device))
    if store.done("parents", key):
        return key
    with job_environment(config, device):
        data = load_checked_dataset(config, data_checksum, data_seed)
        model = new_model(config, data, initial=True, device=device)
        if config.parent_checkpoint_sha256 is not None:
            load_parent_checkpoint(store, config.parent_checkpoint_sha256, model)
        if config.parent_checkpoint_sha256 is None or config.train.epochs > 0:
            train(model, data, config.train, config.seed, desc=f"parent {config.model}", progress=progress,
                  precision=config.precision, compile_model=bool(config.compile))
        check_finite(model, f"parent {config.model}, after training")
        store.save_network("parents", key, model, {"nonzero_params": count_nonzero(model)})
    return key


def load_parent_checkpoint(store: Store, sha256: str, model: nn.Module) -> nn.Module:
    """Load the user's parent checkpoint kept in `store` (Store.save_checkpoint) into `model`."""
    source = store.path("checkpoints", sha256, CHECKPOINT_SUFFIX)
    return fit_state(model, decode_checkpoint(store.checkpoint_bytes(sha256), str(source)), source).eval()


def import_parent_checkpoint(store: Store, config: RunConfig, data: DataBundle, path: Path) -> None:
    """Check a user's parent checkpoint file (check_parent_checkpoint) and keep it in `store`, where
    the parent job reads it."""
    store.save_checkpoint(check_parent_checkpoint(config, data, path))


def check_parent_checkpoint(config: RunConfig, data: DataBundle, path: Path) -> bytes:
    """The bytes of a user's parent checkpoint file, checked against the config (its sha256) and the
    run's architecture (keys, shapes, dtypes); a one-line ValueError naming the file otherwise."""
    try:
        payload = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"parent checkpoint {path}: cannot read ({exc.strerror or exc})") from exc
    sha256 = hashlib.sha256(payload).hexdigest()
    if sha256 != config.parent_checkpoint_sha256:
        expected = config.parent_checkpoint_sha256
        raise ValueError(f"parent checkpoint {path}: sha256 {sha256[:12]} differs from the config's "
                         f"parent_checkpoint_sha256 {expected[:12] if expected else None} (build the config "
                         "with default_config(parent_checkpoint=...))")
    check_finite(fit_state(new_model(config, data), decode_checkpoint(payload, str(path)), Path(path)),
                 f"parent checkpoint {path}")
    return payload


def control_config(config: RunConfig) -> RunConfig:
    """The config whose parent is the run's control: same recipe, another init and data-order seed.

    A parent from the user's checkpoint (`--parent-checkpoint`, `bench eval`) has no recipe that
    prunebench knows; reloading the checkpoint would make the control the parent itself, so its
    control is trained from scratch with the dataset's default recipe."""
    update: dict[str, object] = {"seed": config.seed + CONTROL_SEED_OFFSET}
    if config.parent_checkpoint_sha256 is not None:
        update |= {"parent_checkpoint_sha256": None, "train": dataset_spec(config.dataset).train}
    if config.protocol == EXTERNAL:
        # `bench eval`: the control is a plain parent job; a cascade config needs a grid and a pruner,
        # which no parent job reads (parent_spec keys the recipe, seed, data and model only)
        update |= {"protocol": None, "external_networks": None, "target_ratios": (0.5,), "pruners": ("wt",)}
    return config.model_copy(update=update)


def run_control_job(config_json: str, store_root: str, data_checksum: str, progress: bool = False,
                    device: str = "cpu") -> str:
    """The parent job of `control_config` on the run's own split (the data checksum pins it, so the
    parent spec addresses the control: a store kind "parents" artifact like any other)."""
    config = RunConfig.model_validate_json(config_json)
    return run_parent_job(control_config(config).model_dump_json(), store_root, data_checksum, progress,
                          data_seed=config.seed, device=device)


def run_step_job(config_json: str, store_root: str, data_checksum: str, pruner_name: str, parent_key: str,
                 step: int, progress: bool = False, device: str = "cpu") -> str:
    """Cascade step `step` (1-based) of `pruner_name` on `device`: the previous step's network (the
    parent's for step 1) pruned to the step's target ratio and retrained; returns the step's key.
    A stored step is not run again. Steps of one chain run in order (bench.scheduler), each in
    whichever worker is free: everything a step needs is in the store."""
    config = RunConfig.model_validate_json(config_json)
    store = Store(Path(store_root))
    keys = chain_keys(config, pruner_name, parent_key, device=device)
    key = keys[step - 1]
    if store.done("steps", key):
        return key
    previous = ("parents", parent_key) if step == 1 else ("steps", keys[step - 2])
    if not store.done(*previous):
        raise RuntimeError(f"{pruner_name} step {step}: the network it prunes ({previous[0]} {previous[1][:12]}) "
                           "is not in the job store yet")
    with job_environment(config, device):
        data = load_checked_dataset(config, data_checksum)
        pruner = load_pruner(pruner_name)
        model = store.load_weights(*previous, new_model(config, data, device=device))
        parent_nonzero = store.read_json("parents", parent_key)["nonzero_params"]
        ctx = prune_context(config, data, model)
        try:
            run_step(store, key, model, pruner, step, config, data, ctx, parent_nonzero, progress)
        except PluginError as exc:
            distribution, dist_version = registry.distribution_of(registry.PRUNER_GROUP, pruner.name)
            raise PluginError(f"{exc} (package {distribution} {dist_version})") from exc
    return key


def prune_and_retrain(model: nn.Module, pruner: Pruner, step: int, config: RunConfig, data: DataBundle,
                      ctx: PruneContext, parent_nonzero: int, progress: bool = False) -> dict[str, Any]:
    """One cascade step in place: prune `model` to the step's target ratio, retrain it with the
    pruned entries held at zero, and return the step's record (ratios, nonzero count, keep knob)."""
    target = config.target_ratios[step - 1]
    where = f"{pruner.name} step {step} (target ratio {target:.4f})"
    outcome = prune_to_ratio(model, pruner, target, parent_nonzero, ctx, progress=progress,
                             propagation=config.propagation)
    check_finite(model, f"{where}, after pruning")
    masks = parameter_masks(model)
    train(model, data, config.retrain, config.seed + step, masks=masks, desc=f"retrain {pruner.name} {target:.3f}",
          progress=progress, precision=config.precision, compile_model=bool(config.compile))
    check_finite(model, f"{where}, after retraining")
    nonzero = count_nonzero(model)
    return {
        "pruner": pruner.name,
        "step": step,
        "target_ratio": target,
        "prune_ratio": 1.0 - nonzero / parent_nonzero,
        "nonzero_params": nonzero,
        "structured": pruner.structured,
        "keep_knob": outcome.keep_knob,
    }


def run_step(store: Store, key: str, model: nn.Module, pruner: Pruner, step: int, config: RunConfig,
             data: DataBundle, ctx: PruneContext, parent_nonzero: int, progress: bool) -> None:
    meta = prune_and_retrain(model, pruner, step, config, data, ctx, parent_nonzero, progress)
    store.save_network("steps", key, model, meta)


def load_job_network(store: Store, config: RunConfig, data: DataBundle, kind: str, key: str,
                     device: str = "cpu") -> nn.Module:
    """A network of the store on `device`, in eval mode: the config's model with stored weights, or
    (kind EXPORTED_KIND) the torch.export archive kept under its sha256 `key`."""
    if kind == EXPORTED_KIND:
        source = store.path("checkpoints", key, CHECKPOINT_SUFFIX)
        return read_exported(store.checkpoint_bytes(key), str(source)).to(device)
    return store.load_weights(kind, key, new_model(config, data, device=device))


def run_eval_job(config_json: str, store_root: str, data_checksum: str, kind: str, network_key: str,
                 testsets: list[str], device: str = "cpu") -> None:
    """Evaluate one network on `device` on every listed test set that has no evaluation artifact yet."""
    config = RunConfig.model_validate_json(config_json)
    store = Store(Path(store_root))
    todo = [c for c in testsets if not store.done("evals", spec_key(eval_spec(network_key, c, config, device)))]
    if not todo:
        return
    with job_environment(config, device, autotune=False):
        data = load_checked_dataset(config, data_checksum)
        model = load_job_network(store, config, data, kind, network_key, device)
        for checksum in todo:
            outcome = evaluate(model, data, store.load_testset(checksum), precision=config.precision,
                               compile_model=bool(config.compile))
            store.write_json("evals", spec_key(eval_spec(network_key, checksum, config, device)), outcome)


# ---- what each job reads and writes in its store -------------------------------------------------
# Executors whose workers do not see the driver's store (bench.shipping: Ray in object-store mode)
# ship a job exactly the artifacts declared here; a job that reads anything else fails on it.

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

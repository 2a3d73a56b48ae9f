"""Content-addressed jobs: every stage of a run is a pure function of a hashed spec.

A spec holds everything that determines the artifact: the CPU thread count, which changes float
reduction order (it matters only on the CPU, but every spec keeps it so existing keys stay valid),
and, off the CPU, the device type (`device_extras`: a CUDA artifact is never reused by a CPU run, nor
the other way round). Artifacts live in a Store (bench.pipeline.store: what is stored where, and how every
artifact is checked on use); a job whose artifacts are done is skipped, so a killed run resumes
exactly where it stopped, and a rerun with more suites only adds evaluations. Job functions take
plain strings (the device too, e.g. "cuda") so any executor (processes, Ray) can ship them.

The specs and keys: bench.pipeline.specs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core import registry
from bench.core.devices import device_environment, module_device
from bench.core.registry import PluginError
from bench.data import DataBundle, dataset_spec, load_dataset
from bench.models import create_model
from bench.pipeline.config import set_hub_policy
from bench.pipeline.exported import read_exported
from bench.pipeline.specs import (
    CONTROL_SEED_OFFSET,
    EXPORTED_KIND,
    EXTERNAL_KIND,
    JOB_VERSION,
    NetworkRef,
    chain_keys,
    eval_spec,
    parent_spec,
    run_networks,
    spec_key,
)
from bench.pipeline.store import CHECKPOINT_SUFFIX, Store
from bench.pipeline.training import evaluate, train
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
from bench.results import load_result
from bench.results.checkpoints import decode_checkpoint, fit_state
from bench.results.schema import EXTERNAL, PARENT, ExternalNetwork, RunConfig, RunResult


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
    """The networks of a `bench eval` config (stored by bench.pipeline.external with their measured ratios),
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
    current one, cuDNN autotuning as `autotune` says; bench.core.devices.device_environment) while a job
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
        from bench.data.segmentation import segmentation_loss

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
        model = trained_parent(config, data, device, progress, store)
        check_finite(model, f"parent {config.model}, after training")
        store.save_network("parents", key, model, {"nonzero_params": count_nonzero(model)})
    return key


def trained_parent(config: RunConfig, data: DataBundle, device: str = "cpu", progress: bool = False,
                   store: Store | None = None) -> nn.Module:
    """The unpruned network on `device`: the config's model from its seeded initialisation (or the
    user's parent checkpoint, kept in `store`), trained by the config's recipe (a checkpoint with
    0 epochs is kept as it is). Call inside `job_environment(config, device)`."""
    model = new_model(config, data, initial=True, device=device)
    if config.parent_checkpoint_sha256 is not None:
        if store is None:
            raise ValueError(f"parent {config.model}: its checkpoint {config.parent_checkpoint_sha256[:12]} is "
                             "kept in a job store, and none was given")
        load_parent_checkpoint(store, config.parent_checkpoint_sha256, model)
    if config.parent_checkpoint_sha256 is None or config.train.epochs > 0:
        train(model, data, config.train, config.seed, desc=f"parent {config.model}", progress=progress,
              precision=config.precision, compile_model=bool(config.compile))
    return model


def why_parent_cannot_be_retrained(result: RunResult) -> str | None:
    """Why the result's parent cannot be re-trained from its seed (None if it can): a user's
    checkpoint or `bench eval`'s parent was trained elsewhere."""
    if result.config.protocol == EXTERNAL:
        return "its networks come from `bench eval`, whose parent was trained elsewhere"
    if result.config.parent_checkpoint_sha256 is not None:
        return "its parent started from a user's checkpoint (--parent-checkpoint), which the result does not hold"
    return None


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
    A stored step is not run again. Steps of one chain run in order (bench.pipeline.scheduler), each in
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

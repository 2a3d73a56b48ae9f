"""Job specs and their keys: what determines each artifact of a run (parent, cascade step,
evaluation), hashed into the store key, and the pruner identity that step keys hold.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from bench.core import registry
from bench.core.io import canonical_sha256
from bench.pipeline.store import NETWORK_SUFFIX
from bench.pruning import load_pruner
from bench.results.schema import RunConfig

JOB_VERSION = 6  # bump when a job's computation changes, so old artifacts are not reused
CONTROL_SEED_OFFSET = 1000  # a run's control parent: seed + 1000 (init and data order), the run's split
# store kinds of `bench eval`'s networks (bench.pipeline.external): masked state dicts of the run's model, and
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
    package and version, a digest of its source code (bench.core.registry.source_digest) and its
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



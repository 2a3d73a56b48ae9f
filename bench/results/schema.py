"""Pydantic models of a run's configuration and of the result file it writes.

Result files are data: every leaderboard number is recomputed from `networks[*].accuracy` by the
reader (bench.results.metrics.derive); nothing derived is stored. Files are durable: `schema_version` is
explicit and bench.results upgrades every older version on read; the integrity digest covers the
JSON as stored, so a field added later (with a default) leaves existing files valid.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from bench.core.io import canonical_sha256

SCHEMA_VERSION: Final = 3  # bench.results.UPGRADES reads every older version
PARENT = "parent"  # pruner name of the unpruned network


def pack_hits(hits: np.ndarray) -> str:
    """Per-image correctness (bool vector) as base64 of its packed bits."""
    return base64.b64encode(np.packbits(np.asarray(hits, dtype=bool)).tobytes()).decode("ascii")


def unpack_hits(packed: str, count: int) -> np.ndarray:
    try:
        raw = base64.b64decode(packed.encode("ascii"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"hits are not valid base64 ({exc})") from exc
    if len(raw) != (count + 7) // 8:
        raise ValueError(f"hits hold {8 * len(raw)} bits, expected {count} examples")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=count).astype(bool)


class Strict(BaseModel):
    """The one pydantic base of every stored document: unknown fields are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Recipe(Strict):
    """A training schedule; used for the parent and (with its own epochs) for every retrain."""

    epochs: int = Field(ge=0)
    batch_size: int = Field(gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["cosine", "multistep", "constant", "poly"] = "cosine"  # poly: (1 - t/T)^0.9
    milestones: tuple[int, ...] = ()
    gamma: float = Field(default=0.1, gt=0)
    warmup_epochs: int = Field(default=0, ge=0)
    augment: Literal["none", "crop-flip", "shift"] = "none"
    # generalization-aware (re)training, the paper's Mix1: each image is replaced with probability
    # 5/6 by one of these corruptions at a uniform severity 1-5 of `corruption_table`
    corruption_mix: tuple[str, ...] = ()
    corruption_table: Literal["cifar10-c", "imagenet-c"] = "cifar10-c"


SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
EXTERNAL: Final = "external"  # RunConfig.protocol of `bench eval`: networks brought by the user


class ExternalNetwork(Strict):
    """A network that `bench eval` evaluated: the method (the row it is ranked in) and its file."""

    method: str = Field(min_length=1)
    sha256: str = Field(pattern=SHA256_PATTERN)  # of the file as given; its path is never recorded
    # "masked": a state dict of the run's model; "exported": a smaller network as a torch.export archive
    format: Literal["masked", "exported"]


def ratio_grid_problem(ratios: Sequence[float]) -> str | None:
    """What is wrong with a cascade's grid of target prune ratios (each strictly between 0 and 1,
    strictly increasing), or None: the one rule RunConfig and `bench run --ratios` apply."""
    outside = [r for r in ratios if not 0.0 < r < 1.0]
    if outside:
        return f"prune ratios must lie strictly between 0 and 1, got {outside[0]:g} in {list(ratios)}"
    if list(ratios) != sorted(set(ratios)):
        return f"prune ratios must be strictly increasing (a cascade), got {list(ratios)}"
    return None


class RunConfig(Strict):
    dataset: str
    model: str
    pruners: tuple[str, ...] = Field(min_length=1)
    suites: tuple[str, ...] = ()
    target_ratios: tuple[float, ...]  # the cascade's grid; empty for protocol "external"
    train: Recipe
    retrain: Recipe
    seed: int = Field(ge=0)
    calibration_size: int | None = Field(default=None, gt=0)  # |S|; None: the reference's formula
    # the propagation step after masking (bench.pruning.propagate_compression): "once", one pass as
    # the reference does; "fixpoint", repeated until nothing changes (a protocol option)
    propagation: Literal["once", "fixpoint"] = "once"
    delta: float = Field(default=0.005, ge=0, lt=1)
    channels_last: bool = True  # NHWC memory format: ~2x faster CPU evaluation, same fp32 math
    threads: int = Field(default=1, gt=0)  # CPU threads per job: part of the numerics (reduction order)
    precision: Literal["fp32", "bf16"] = "fp32"  # evaluation under bf16 autocast on request
    pretrained: bool = False  # parent from timm pretrained weights (then fine-tuned for train.epochs)
    per_class: int | None = Field(default=None, gt=0)  # class-balanced subset of folder datasets
    image_size: int | None = Field(default=None, gt=0)  # evaluation crop of segmentation data (VOC: 513)
    corruptions: tuple[str, ...] | None = None  # keep only these corruptions of the suites
    severities: tuple[int, ...] | None = None  # keep only these severities of the suites
    # sha256 of a user's trained parent (`bench run --parent-checkpoint`): the parent is that file's
    # state, fine-tuned for train.epochs; the file's path is machine-specific and never recorded
    parent_checkpoint_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    # `bench eval` (bench.pipeline.external): no cascade, no training; the user's networks, in result order
    protocol: Literal["external"] | None = None
    external_networks: tuple[ExternalNetwork, ...] | None = None
    # `bench run --compile`: training and evaluation through torch.compile (other float results);
    # None: eager
    compile: Literal[True] | None = None

    # fields added after result files were published: left out of every dump while None, so the
    # config hash (and protocol hash) of every config that does not use them is unchanged
    _OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("parent_checkpoint_sha256", "protocol", "external_networks",
                                                     "compile")

    @model_serializer(mode="wrap")
    def _omit_unset_additions(self, handler: SerializerFunctionWrapHandler) -> Any:
        dumped = handler(self)
        if isinstance(dumped, dict):
            for name in self._OMITTED_WHEN_NONE:
                if dumped.get(name, 0) is None:
                    del dumped[name]
        return dumped

    @model_validator(mode="after")
    def _check_ratios(self) -> RunConfig:
        if self.protocol == EXTERNAL:
            return self._check_external()
        if not self.target_ratios:
            raise ValueError("target ratios: the cascade needs at least one")
        problem = ratio_grid_problem(self.target_ratios)
        if problem is not None:
            raise ValueError(problem)
        if self.parent_checkpoint_sha256 is not None and self.pretrained:
            raise ValueError("a parent checkpoint and pretrained weights exclude each other: choose one")
        return self

    def _check_external(self) -> RunConfig:
        if self.target_ratios:
            raise ValueError("protocol 'external' has no ratio grid: target ratios must be empty")
        if not self.external_networks or self.parent_checkpoint_sha256 is None:
            raise ValueError("protocol 'external' needs a parent checkpoint and at least one network")
        methods = tuple(dict.fromkeys(n.method for n in self.external_networks))
        if methods != self.pruners:
            raise ValueError(f"pruners {list(self.pruners)} must be the external networks' methods {list(methods)}")
        return self

    def config_hash(self) -> str:
        return canonical_sha256(self.model_dump(mode="json"))

    def protocol_hash(self) -> str:
        """What must match for two runs to be ranked together: everything but pruner, suites, seed
        (and, for `bench eval`, the networks: evaluations against one parent rank together)."""
        excluded = {"pruners", "suites", "seed", "external_networks"}
        return canonical_sha256(self.model_dump(mode="json", exclude=excluded))[:12]


class PrunerIdentity(Strict):
    """A pruner's package, version, source digest and options: what its cached steps are keyed on."""

    name: str
    distribution: str
    version: str
    source_sha256: str
    options: dict[str, Any] = {}
    requires: dict[str, str] = {}  # distribution -> version the method computes with (Pruner.requires)
    # metadata the pruner class declares (bench.pruning.Pruner): shown on the leaderboard, not
    # part of any cache key (it does not change what the pruner computes)
    display_name: str | None = None
    paper: str | None = None  # citation or URL of the method's paper
    code_url: str | None = None  # the method's reference code


class Provenance(Strict):
    config_hash: str
    seed: int
    packages: dict[str, str]  # python, torch, timm, prunebench, ... and each pruner's provider
    pruners: dict[str, PrunerIdentity] = {}  # pruner name -> identity
    calibration_indices: list[int] = []  # the S set: indices into the validation split
    data_checksum: str  # sha256 over train/val/test splits
    distribution_checksums: dict[str, str]  # sha256 of every evaluated test set
    platform: str
    git_commit: str | None = None
    created_at: datetime
    wall_time_s: float = Field(ge=0)
    # the device every job ran on (bench.core.devices.device_description); defaults: files written before
    # devices were recorded ran on the CPU
    device: str = "cpu"  # its type: cpu, cuda or mps
    device_name: str | None = None  # e.g. the GPU's name
    cuda_version: str | None = None  # CUDA and cuDNN versions torch was built with (CUDA runs)
    cudnn_version: str | None = None


class Distribution(Strict):
    name: str
    suite: str  # "nominal" for the clean test set
    corruption: str | None = None
    severity: int | None = None
    level: float | None = None
    n_examples: int = Field(gt=0)

    @property
    def nominal(self) -> bool:
        return self.suite == "nominal"


class NetworkFile(Strict):
    """A network saved beside its result file (bench.results.checkpoints): what `bench verify` checks first."""

    # in the result's networks folder: prunebench's sparse format, or (`bench eval`) a torch.export archive
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.(safetensors|pt2)$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    nonzero: int = Field(ge=0)  # stored entries (nonzero bit patterns) over every floating tensor, buffers too
    shape_signature: str  # bench.results.checkpoints.shape_signature of its state dict


class NetworkResult(Strict):
    pruner: str
    step: int = Field(ge=0)  # position in the cascade, 0 = parent
    target_ratio: float = Field(ge=0, lt=1)
    prune_ratio: float = Field(ge=0, le=1)  # measured on the retrained network
    nonzero_params: int = Field(ge=0)
    structured: bool
    accuracy: dict[str, float]  # distribution name -> top-1 accuracy (or 1 - error metric)
    # distribution name -> per-example correctness (pack_hits), for bootstrap over test images;
    # absent for metrics that are not a mean over examples (e.g. dataset-level mIoU)
    hits: dict[str, str] = {}
    file: NetworkFile | None = None  # absent in files written before schema version 2

    @model_validator(mode="after")
    def _check_accuracy(self) -> NetworkResult:
        bad = {k: v for k, v in self.accuracy.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"accuracies must lie in [0, 1], got {bad}")
        return self


class PrunerMetrics(Strict):
    pruner: str
    nominal_potential: float
    robust_potential_mean: float | None  # None without shifted distributions
    robust_potential_min: float | None
    monotone_nominal_potential: float
    monotone_robust_potential_mean: float | None
    monotone_robust_potential_min: float | None
    potential_by_distribution: dict[str, float]
    delta_excess_error: list[float]  # per cascade step: excess error of pruned minus parent's


class Derived(Strict):
    delta: float
    parent_excess_error: float
    pruners: list[PrunerMetrics]


class RunResult(Strict):
    schema_version: Literal[3] = SCHEMA_VERSION
    config: RunConfig
    provenance: Provenance
    distributions: list[Distribution]
    networks: list[NetworkResult]
    metric: Literal["top1", "miou"] = "top1"  # what networks[*].accuracy holds; error = 1 - metric
    # sha256 of the canonical JSON of everything else as stored (bench.results.content_digest): a
    # check against corruption and careless edits, not against forgery (that is `bench verify`'s job)
    integrity: str = ""

    @model_validator(mode="after")
    def _check_cells(self) -> RunResult:
        names = [d.name for d in self.distributions]
        if len(set(names)) != len(names):
            raise ValueError("distribution names must be unique")
        if sum(d.nominal for d in self.distributions) != 1:
            raise ValueError("exactly one distribution must have suite 'nominal'")
        parents = [n for n in self.networks if n.pruner == PARENT]
        if len(parents) != 1:
            raise ValueError(f"exactly one network must be the parent, found {len(parents)}")
        sizes = {d.name: d.n_examples for d in self.distributions}
        for net in self.networks:
            missing = set(names) - set(net.accuracy)
            extra = set(net.accuracy) - set(names)
            if missing or extra:
                raise ValueError(
                    f"network {net.pruner} step {net.step}: accuracy keys do not match the distributions "
                    f"(missing {sorted(missing)[:3]}, unknown {sorted(extra)[:3]})"
                )
            for name, packed in net.hits.items():
                if name not in sizes:
                    raise ValueError(f"network {net.pruner} step {net.step}: hits for unknown distribution {name!r}")
                hits = unpack_hits(packed, sizes[name])
                if abs(hits.mean() - net.accuracy[name]) > 1e-9:
                    raise ValueError(
                        f"network {net.pruner} step {net.step}: accuracy on {name!r} is {net.accuracy[name]} "
                        f"but its per-example hits give {hits.mean()}"
                    )
        return self

    @property
    def parent(self) -> NetworkResult:
        return next(n for n in self.networks if n.pruner == PARENT)

    @property
    def nominal(self) -> Distribution:
        return next(d for d in self.distributions if d.nominal)


class VerifyReport(Strict):
    """What `bench verify` wrote beside a result file: the leaderboard's "verified" mark."""

    result: str  # the result file's name
    integrity: str  # the verified file's integrity digest: a report of another content does not count
    passed: bool
    networks_checked: int = Field(ge=0)
    hits_compared: int = Field(ge=0)
    # `bench verify --sample K`: the (network, test set) pairs compared; None: every pair. The board
    # marks a file verified only by a report of every pair
    sample: int | None = Field(default=None, ge=1)
    reproduced: list[str] = []
    disagreements: list[str] = []
    # examples whose hit differs here only because the network's top two logits are within float
    # noise (bench.pipeline.verify.TIE_MARGIN): honest hardware differences, reported apart from disagreements
    ties: list[str] = []
    prunebench: str
    platform: str
    # the device it re-evaluated on: the GPU's name, or the CPU's model and code path (bench.core.devices.cpu_name),
    # so a report says which CPU the hits held on; None in reports written before it was recorded
    device_name: str | None = None
    verified_at: datetime
    seconds: float = Field(ge=0)

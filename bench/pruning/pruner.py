"""The pruner API: `Pruner` (the contract), its `PrunerOptions`, the `PruneContext` it sees, and
pruner labels (`name:key=value,...`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from bench.core import registry
from bench.pruning.masks import (
    FAILURE_PROBABILITY,
    Loss,
    MaskPlan,
    Masks,
    classification_loss,
)


@dataclass(frozen=True)
class PruneContext:
    """What a pruner may use besides the weights (handed to `Pruner.plan` and `Pruner.reconstruct`).

    A data-free pruner (``uses_data = False``) sees ``calibration`` and ``labels`` with 0 rows (their
    other dimensions kept, e.g. to build an example input), so its masks cannot depend on S.
    """

    # the S set: normalised validation images, float (N, C, H, W), on the model's device; the same
    # images for every pruner and step of a run (docs/pruners.md, "S set")
    calibration: torch.Tensor
    labels: torch.Tensor  # their labels on the same device: class ids (N,), or (N, H, W) masks for segmentation
    seed: int  # the run's seed: draw a pruner's random numbers from it (torch.Generator().manual_seed(seed))
    last_layer: str  # last compressible layer in module order: the output layer; FT never prunes its outputs
    # the task's loss, loss(model(images), labels) -> scalar: cross-entropy for classification, the
    # segmentation loss for segmentation; the propagation pass differentiates it too
    loss: Loss = classification_loss
    failure_probability: float = FAILURE_PROBABILITY["classification"]  # PFP's delta
    batch_size: int = 64  # forward S in batches of this size (memory)

    @property
    def device(self) -> torch.device:
        """Where the model and the S set are: create a pruner's tensors there."""
        return self.calibration.device


class PrunerOptions(BaseModel):
    """Base of a pruner's options model (``Pruner.Options``): unknown keys are errors, values frozen.
    Every option needs a default; write them as ``name:key=value,key=value`` on the command line."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Pruner(ABC):
    """Base class of every pruner, and the one statement of the pruner contract.

    Third-party pruners import only from `bench.api`, subclass `Pruner` and register the class under
    the `prunebench.pruners` entry-point group; docs/plugins.md has a worked example. The size search
    (`bench.pruning.prune_to_ratio`) enforces the contract: a breach stops the run with one line
    naming the pruner, the layer and the pruner's package (`bench --debug run ...` shows the
    traceback).

    Example:

        class Magnitude(Pruner):
            name = "magnitude"

            def plan(self, model, ctx):
                scores = {n: l.weight.detach().abs() for n, l in compressible_layers(model).items()}
                return lambda keep: global_topk(scores, keep)

    * **Name**: the entry point's name must be the class's `name` (else loading fails naming both);
      two installed packages registering one name is an error that lists both.
    * **Class attributes**: `structured = True` if the masks remove whole filters/channels (selects
      structured propagation); `uses_data = True` if the pruner reads `ctx.calibration` /
      `ctx.labels`; `weight_budget = True` if `plan(keep)` keeps round(keep * total) compressible
      weights (the size search then runs the reference's budget search, else a bisection);
      `requires`: distributions it computes with (e.g. "torch-pruning"), whose installed versions are
      part of its identity.
    * **Options**: a nested `class Options(PrunerOptions)` (a pydantic model; unknown keys are
      errors) whose fields all have defaults; the instance holds the validated values as
      `self.options`, and an `__init__` of your own must call `super().__init__(**options)`. On the
      command line `--pruner refit:ridge=0.01,refit=false,wt` gives two pruners (a `key=value` item
      belongs to the pruner before it); strings are coerced by pydantic. An unknown key or a bad value
      stops the run with one line naming the pruner and listing its valid keys with their types and
      defaults (exit 2). The **label** is the bare name when every option is at its default, else
      `name:key=value,...` with the non-default options sorted by key (`refit:ridge=0.01`): it is
      what the config holds (so adding an option with a default changes no config hash), what the
      step cache keys and the result file (`provenance.pruners[label].options`, the networks'
      `pruner`) record, and the row the leaderboard ranks: different options are a different row.
    * **Metadata**: `display_name`, `paper` (citation or URL) and `code_url` are recorded in the
      result file (`provenance.pruners`) for the leaderboard; they are no part of any cache key.
    * **`plan(model, ctx)`** scores the network once per prune step and returns a mask plan, a
      function keep knob in [0, 1] -> masks. It sees the network before this step's masking (in a
      cascade the retrained previous step; already-zero weights stay zero whatever the masks say),
      in eval mode with gradients enabled (a Taylor or Hessian criterion may call backward; the
      harness clears the gradients after). It must not change the model: parameters and buffers are
      compared after `plan` and after every call of the plan, and a change stops the run naming the
      pruner. Keep what later calls need (scores, copies of weights) in the closure or on `self`.
    * **Masks**: a dict whose keys are compressible layer names (as `compressible_layers(model)`
      names them: Conv2d with groups 1 and Linear, first layer and classifier included) with a
      `torch.bool` tensor shaped like that layer's weight, and/or parameter names (`"fc.bias"`,
      `"bn1.weight"`) with a `torch.bool` tensor shaped like that parameter. False = pruned (set to
      +0.0); names left out are not masked. Masking a BN γ and β is how a channel-slimming method
      removes a channel; biases and BN entries of dead units need no masks, since propagation zeroes
      them (unstructured) or their consumers' columns (structured). The plan must be **monotone**: a
      larger knob never prunes more entries (checked on every call); prunebench bisects the knob so
      the measured ratio, after propagation, hits each target.
    * **`ctx`** (`PruneContext`): `calibration`, the S set (normalised validation images
      (N, C, H, W), the same for every pruner and step of a run; docs/pruners.md, "S set");
      `labels`, their class ids (N,) or segmentation masks (N, H, W); `loss(outputs, labels)`, the
      task's loss; `device`, where the model and S are; `seed`, the run's seed for any random
      numbers; `last_layer`, the last compressible layer in module order (the output layer);
      `batch_size`, the batch size for passes over S; `failure_probability`, the task's δ. A pruner
      with `uses_data = False` sees `calibration` and `labels` with 0 rows (other dimensions kept,
      e.g. for an example input `torch.zeros(1, *ctx.calibration.shape[1:], device=ctx.device)`),
      so a data-free pruner's masks provably do not depend on S.
    * **`reconstruct(model, masks, ctx)`** (optional): updates the remaining weights in place after
      masking (OBS / SparseGPT-style). It runs once per step, after the size search settled (not
      inside it: it changes values, not which entries are kept), on the masked and propagated model,
      eval mode, gradients enabled; `masks` holds every compressible layer's kept weight entries.
      Afterwards every entry that was zero before it is zeroed again and propagation runs again, so
      nothing pruned regrows and the measured ratio holds; then the network is retrained as usual.
      It may not change shapes.
    * **Identity**: the pruner's package and version, a sha256 of its source (the defining module
      for the built-ins, every module of its top-level package for a plugin) and its non-default
      options are part of every cached step's key and recorded in the result file: editing one line
      of a pruner recomputes its steps and nothing else. Non-finite weights after pruning or
      retraining stop the run naming the step.
    """

    name: ClassVar[str]
    structured: ClassVar[bool] = False  # masks whole filters/channels (selects structured propagation)
    # plan(keep) keeps round(keep * total) compressible weights, a global weight budget (WT, SiPP): the
    # size search then runs the reference's budget search (reference_keep_ratio), else a bisection
    weight_budget: ClassVar[bool] = False
    uses_data: ClassVar[bool] = False  # reads ctx.calibration / ctx.labels; else they are empty
    Options: ClassVar[type[BaseModel]] = PrunerOptions
    # distributions the method computes with (e.g. "torch-pruning"): their installed versions are part
    # of its identity, so upgrading one recomputes its steps, and the result records them
    requires: ClassVar[tuple[str, ...]] = ()
    # metadata recorded in result files (PrunerIdentity) and shown on the leaderboard; no cache key
    display_name: ClassVar[str | None] = None
    paper: ClassVar[str | None] = None  # citation or URL of the method's paper
    code_url: ClassVar[str | None] = None  # the method's reference code

    options: BaseModel

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        required = [key for key, field in cls.Options.model_fields.items() if field.is_required()]
        if required:
            raise TypeError(f"{cls.__qualname__}.Options: option(s) {', '.join(required)} need a default "
                            "(a pruner's bare name means all options at their defaults)")

    def __init__(self, **options: Any) -> None:
        """`options`: values of `Options` fields (strings are coerced); a one-line ValueError naming
        the pruner and its valid options if a key is unknown or a value invalid."""
        self.options = validated_options(type(self), options)

    @abstractmethod
    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        """Score `model` once and return keep knob -> masks (see the class docstring for the rules)."""

    def reconstruct(self, model: nn.Module, masks: Masks, ctx: PruneContext) -> None:
        """Optional: update the remaining weights of the masked `model` in place (OBS/SparseGPT-style).

        `masks`: every compressible layer's kept weight entries after masking and propagation. Runs
        once per step, after the size search; entries pruned before it are zeroed again after it.
        The default keeps the weights as masked.
        """
        return None

    def changed_options(self) -> dict[str, Any]:
        """The options that differ from their defaults, as JSON values, sorted by key: what the
        pruner's label, its cache keys and result files record (so defaults leave them unchanged)."""
        current = self.options.model_dump(mode="json")
        defaults = type(self).Options().model_dump(mode="json")
        return {key: value for key, value in sorted(current.items()) if value != defaults.get(key)}

    @property
    def label(self) -> str:
        """The canonical label: the bare name when every option is at its default, else
        ``name:key=value,...`` with the non-default options sorted by key."""
        label = format_pruner_label(self.name, self.changed_options())
        try:
            readable = type(self)(**parse_pruner_label(label)[1]).changed_options() == self.changed_options()
        except ValueError:
            readable = False
        if not readable:
            raise ValueError(f"pruner {self.name!r}: options {self.changed_options()} cannot be written as a "
                             "label (use scalar values without commas)")
        return label

    def metadata(self) -> dict[str, str | None]:
        """Display name, paper and code URL, as result files record them."""
        return {"display_name": self.display_name, "paper": self.paper, "code_url": self.code_url}


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def option_help(pruner: type[Pruner]) -> str:
    """'valid options: key: type = default, ...' or 'it takes no options'."""
    fields = pruner.Options.model_fields
    if not fields:
        return "it takes no options"
    return "valid options: " + ", ".join(f"{key}: {_type_name(field.annotation)} = {field.default!r}"
                                         for key, field in sorted(fields.items()))


def validated_options(pruner: type[Pruner], values: Mapping[str, Any]) -> BaseModel:
    """`pruner.Options` validated from `values` (strings coerced by pydantic's lax mode); unknown keys
    and bad values are one-line ValueErrors naming the pruner and listing its valid options."""
    name = getattr(pruner, "name", pruner.__qualname__)
    unknown = sorted(set(values) - set(pruner.Options.model_fields))
    if unknown:
        raise ValueError(f"pruner {name!r}: unknown option {unknown[0]!r}; {option_help(pruner)}")
    try:
        return pruner.Options.model_validate(dict(values))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ValueError(f"pruner {name!r}: option {key}={error.get('input')!r}: {error['msg']}; "
                         f"{option_help(pruner)}") from None


def _format_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def format_pruner_label(name: str, options: Mapping[str, Any]) -> str:
    """`name`, or ``name:key=value,...`` with `options` sorted by key (JSON values, strings bare)."""
    if not options:
        return name
    return f"{name}:" + ",".join(f"{key}={_format_value(value)}" for key, value in sorted(options.items()))


def parse_pruner_label(label: str) -> tuple[str, dict[str, str]]:
    """``name`` or ``name:key=value,key=value`` -> (name, {key: value as written})."""
    name, _, rest = label.partition(":")
    options: dict[str, str] = {}
    for item in (part.strip() for part in rest.split(",")):
        key, equals, value = (part.strip() for part in item.partition("="))
        if not item:
            continue
        if not (equals and key and value):
            raise ValueError(f"pruner {label!r}: bad option {item!r}; write name:key=value,key=value")
        if key in options:
            raise ValueError(f"pruner {label!r}: option {key!r} given twice")
        options[key] = value
    if not name.strip():
        raise ValueError(f"pruner {label!r}: no pruner name before the options")
    return name.strip(), options


def _is_option(item: str) -> bool:
    """``key=value``, as opposed to a pruner (``name`` or ``name:key=value``)."""
    key, equals, _ = item.partition("=")
    return bool(equals) and ":" not in key


def split_pruner_labels(text: str) -> tuple[str, ...]:
    """A ``--pruner`` value -> pruner labels. Items are comma-separated; a ``key=value`` item adds an
    option to the pruner before it: ``wt,sipp`` -> (wt, sipp); ``pfp:failure_probability=1e-5,wt``
    -> (pfp:failure_probability=1e-5, wt); ``x:a=1,b=2,wt`` -> (x:a=1,b=2, wt)."""
    labels: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if not _is_option(item):
            labels.append(item)
        elif not labels:
            raise ValueError(f"pruner option {item!r} comes before any pruner name (write name:{item})")
        else:
            labels[-1] += ("," if ":" in labels[-1] else ":") + item
    return tuple(labels)


def load_pruner(label: str) -> Pruner:
    """The installed pruner a label names (``name`` or ``name:key=value,...``), options validated."""
    name, options = parse_pruner_label(label)
    return registry.load_class(registry.PRUNER_GROUP, name, Pruner)(**options)


def canonical_pruner_label(label: str) -> str:
    """The canonical form of a label (`Pruner.label`): what RunConfig.pruners, cache keys, result
    files and leaderboard rows hold. ``x:a=1`` with the default a = 1 -> ``x``;
    ``pfp:failure_probability=0.00001`` -> ``pfp:failure_probability=1e-05``."""
    return load_pruner(label).label


def require_canonical_label(label: str) -> None:
    """Load the pruner a config names (unknown names and bad options fail) and check the label is
    canonical, so that one pruner with one set of options has one config hash and one row."""
    canonical = canonical_pruner_label(label)
    if canonical != label:
        raise ValueError(f"pruner {label!r}: write it as {canonical!r} (options sorted, defaults left out; "
                         "bench.pipeline.config.default_config does this)")


def pruner_context(pruner: Pruner, ctx: PruneContext) -> PruneContext:
    """What `pruner` sees: the context as is, or for a data-free pruner an empty S set."""
    if pruner.uses_data:
        return ctx
    return replace(ctx, calibration=ctx.calibration[:0], labels=ctx.labels[:0])


"""Shared pruning machinery: compressible layers, masks, the S set, propagation, measured prune ratio.

A pruner turns a network into a *mask plan*: a function from a keep knob in [0, 1]
(monotone: more knob keeps more) to weight masks. `prune_to_ratio` applies a plan, then the
reference's propagation step over the S set (`propagate_compression`), and searches the knob
so the **measured** prune ratio, 1 - nnz(all parameters of the pruned net) / nnz(parent),
lands on the target, whatever the pruner's own size model assumes. Masks are zeroed
parameters; nothing is physically removed, as in the paper (Liebenwein et al., torchprune).

The pruner contract (what `plan` may do, the mask rules, options, the `reconstruct` hook) is
stated once, in `Pruner`'s docstring; `prune_to_ratio` enforces it.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from itertools import chain
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from scipy.optimize import brentq
from torch import nn
from tqdm.auto import tqdm

from bench import registry
from bench.devices import module_device
from bench.registry import PluginError

__all__ = [
    "FAILURE_PROBABILITY",
    "Masks",
    "MaskPlan",
    "ParameterMasks",
    "PruneContext",
    "PruneOutcome",
    "Pruner",
    "PrunerOptions",
    "apply_masks",
    "calibration_size",
    "canonical_pruner_label",
    "classifier_name",
    "compressible_layers",
    "count_nonzero",
    "current_masks",
    "enforce_parameter_masks",
    "global_topk",
    "last_layer_name",
    "layer_output_sizes",
    "load_pruner",
    "parameter_masks",
    "parse_pruner_label",
    "propagate_compression",
    "propagation_pass",
    "prune_to_ratio",
    "pruner_context",
    "split_pruner_labels",
    "top_units",
]

# "<layer name>" -> bool mask shaped like that layer's weight, or "<parameter name>" (e.g. "fc.bias",
# "bn1.weight") -> bool mask shaped like that parameter; True = kept
Masks = dict[str, torch.Tensor]
MaskPlan = Callable[[float], Masks]
ParameterMasks = dict[str, torch.Tensor]  # "<parameter name>" -> bool mask, False = pruned (stays 0)
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# The reference's failure probability deltaS (torchprune experiment/param/default.yaml; its VOC
# configuration overrides it to 1e-5). PFP's bound uses it as is; the |S| formula divides it by eta.
FAILURE_PROBABILITY = {"classification": 1e-16, "segmentation": 1e-5}
_S_CONSTANT = 3.0  # C in |S| = ceil(C ln(8 eta* / (delta / eta))) ("C=3 for ICLR experiments")
_S_MAX_FRACTION = 0.5  # |S| is capped at half of the validation split


Layer = nn.Conv2d | nn.Linear  # a compressible layer


def compressible_layers(model: nn.Module) -> dict[str, Layer]:
    """Conv2d (groups == 1) and Linear layers, first conv and classifier included."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
    }


def classifier_name(model: nn.Module) -> str:
    """Name of the output layer (timm's get_classifier(), else the last compressible layer)."""
    layers = compressible_layers(model)
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        for name, module in layers.items():
            if module is head:
                return name
    return list(layers)[-1]


def last_layer_name(model: nn.Module) -> str:
    """The last compressible layer in module order: the layer whose outputs FT never prunes in
    the reference (for DeepLabV3 with an aux head that is the aux head's last conv)."""
    return list(compressible_layers(model))[-1]


def count_nonzero(model: nn.Module) -> int:
    """Nonzero parameters, all of them (weights, biases, norm affine); buffers excluded."""
    return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))


def current_masks(model: nn.Module) -> Masks:
    """Layer name -> bool mask of the nonzero entries of its weight."""
    return {name: layer.weight.detach() != 0 for name, layer in compressible_layers(model).items()}


def parameter_masks(model: nn.Module) -> ParameterMasks:
    """Parameter name -> bool mask of its nonzero entries, for every parameter that has a zero:
    weights, biases and norm affine alike, so retraining keeps every pruned entry at zero."""
    return {name: p.detach() != 0 for name, p in model.named_parameters() if not bool(p.detach().all())}


def mask_targets(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a mask may name: every compressible layer (its weight) and every parameter by name."""
    return {**dict(model.named_parameters()), **{name: layer.weight for name, layer in compressible_layers(model).items()}}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the masked-out entries of the named compressible layers' weights and of the named
    parameters (always +0.0: a multiply would leave -0.0 whose sign depends on kernel choice, and
    saved networks are compared bitwise). Masks are moved to the tensors' device."""
    targets = mask_targets(model)
    for name, mask in masks.items():
        target = targets[name]
        target.masked_fill_(~mask.to(target.device).bool(), 0.0)


@torch.no_grad()
def enforce_parameter_masks(model: nn.Module, masks: ParameterMasks) -> None:
    """Zero the masked-out entries of the named parameters (after every optimizer step), as +0.0."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].masked_fill_(~mask, 0.0)


def global_topk(scores: dict[str, torch.Tensor], keep: float) -> Masks:
    """Keep the round(keep * total) highest-scoring weights over all layers together."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = round(min(max(keep, 0.0), 1.0) * flat.numel())
    keep_flat = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        keep_flat[torch.topk(flat, k, sorted=False).indices] = True
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep_flat[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks


def top_units(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool vector keeping the `count` highest-scoring units (at least one, at most all)."""
    count = min(max(count, 1), scores.numel())
    kept = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    kept[torch.topk(scores, count, sorted=False).indices] = True
    return kept


def layer_output_sizes(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Output neurons per image (C_out * positions) of each compressible layer that runs, from one
    forward pass of one image (moved to the model's device) in eval mode."""
    layers = compressible_layers(model)
    sizes: dict[str, int] = {}
    handles = [
        layer.register_forward_hook(lambda _m, _a, out, name=name: sizes.__setitem__(name, out[0].numel()))
        for name, layer in layers.items()
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1].to(module_device(model)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return sizes


def calibration_size(output_sizes: dict[str, int], failure_probability: float, available: int) -> int:
    """|S| = ceil(3 ln(8 eta* / (delta / eta))), capped at half of the `available` validation images
    (but at least 2).

    eta = output neurons per image summed over the compressible layers, eta* = the largest layer's
    (torchprune's experiment/evaluator.py; resnet20 on 32x32 images gives 183)."""
    eta, eta_max = sum(output_sizes.values()), max(output_sizes.values())  # cap: the reference's ceil(|val| / 2)
    wanted = math.ceil(_S_CONSTANT * math.log(8 * eta_max / (failure_probability / eta)))
    # at least 2 images where there are: propagation tells constant channels by comparing images
    return max(min(wanted, math.ceil(_S_MAX_FRACTION * available)), min(2, available))


def classification_loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, labels)


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
                         "bench.config.default_config does this)")


def pruner_context(pruner: Pruner, ctx: PruneContext) -> PruneContext:
    """What `pruner` sees: the context as is, or for a data-free pruner an empty S set."""
    if pruner.uses_data:
        return ctx
    return replace(ctx, calibration=ctx.calibration[:0], labels=ctx.labels[:0])


@dataclass(frozen=True)
class PruneOutcome:
    target_ratio: float
    prune_ratio: float  # measured
    nonzero_params: int
    keep_knob: float


REFERENCE_S_BATCH = 4  # torchprune's S loader: batches of min(4, test batch size) images


class _ConstantInputs:
    """Forward hooks recording, per compressible layer, which input channels are identical for every
    image and position seen (compared with the first image's): channels of pruned filters."""

    def __init__(self, layers: Mapping[str, nn.Module]) -> None:
        self.first: dict[str, torch.Tensor] = {}
        self.constant: dict[str, torch.Tensor] = {}
        self.handles = [layer.register_forward_hook(self._hook(name)) for name, layer in layers.items()]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(layer: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            x = args[0].detach()
            # Linear: tokens folded into the batch, as the reference does; (rows, channels, positions)
            x = x.reshape(-1, x.shape[-1], 1) if isinstance(layer, nn.Linear) else x.flatten(2)
            first = self.first.setdefault(name, x[:1].clone())
            same = (x == first).all(2).all(0)
            self.constant[name] = same if name not in self.constant else self.constant[name] & same

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def propagation_pass(model: nn.Module, ctx: PruneContext, structured: bool) -> None:
    """One pass of the reference's propagation step (see propagate_compression), on the model's
    device (the S set's batches are moved there); masks are applied with masked_fill_, so nothing is
    read back from the device."""
    layers = compressible_layers(model)
    device = module_device(model)
    model.zero_grad(set_to_none=True)
    constant = _ConstantInputs(layers) if structured else None
    # the reference feeds S in batches of 4 and skips a batch of fewer than 2 images: a last single one
    used = len(ctx.calibration) - (1 if len(ctx.calibration) % REFERENCE_S_BATCH == 1 else 0)
    try:
        with torch.enable_grad():
            for images, labels in zip(ctx.calibration[:used].split(ctx.batch_size), ctx.labels[:used].split(ctx.batch_size)):
                ctx.loss(model(images.to(device)), labels.to(device)).backward()
    finally:
        if constant is not None:
            constant.remove()
    with torch.no_grad():
        if structured:
            assert constant is not None
            for layer in layers.values():
                weight = layer.weight
                if weight.grad is not None:
                    dead = weight.grad.flatten(1).abs().sum(1) == 0  # output filters without gradient
                    weight.masked_fill_(dead.view(-1, *([1] * (weight.ndim - 1))), 0.0)
            for name, channels in constant.constant.items():
                weight = layers[name].weight  # input columns of channels constant over S
                weight.masked_fill_(channels.view(1, -1, *([1] * (weight.ndim - 2))), 0.0)
        else:
            for p in model.parameters():
                if p.grad is not None:
                    p.masked_fill_(p.grad == 0, 0.0)
    model.zero_grad(set_to_none=True)


# RunConfig.propagation -> passes of the propagation step: the reference's one, or until nothing changes
PROPAGATION_PASSES: dict[str, int] = {"once": 1, "fixpoint": 10}


def propagate_compression(model: nn.Module, ctx: PruneContext, structured: bool, max_passes: int = 1) -> int:
    """The reference's propagation step after masking (torchprune `CompressedNet._propagate_compression`).

    Forward + backward passes of the loss over the S set (eval mode, gradients summed over batches;
    like the reference, whose batches of 4 skip a last single image, without that image), then:

    * unstructured (WeightNet): every parameter entry, weights, biases and norm affine alike, whose
      gradient is exactly zero is zeroed;
    * structured (FilterNet): every conv/linear output filter whose gradient is exactly zero is
      zeroed, and every consumer input column ``W[:, c]`` whose input channel c was constant over S
      (e.g. a pruned filter's relu(beta') through BN + ReLU, residual sums included) is zeroed.

    One pass, as the reference does (the default protocol). With ``max_passes`` > 1 (protocol option
    ``--propagation fixpoint``: ``PROPAGATION_PASSES``) passes repeat until nothing changes: zeroing
    a constant channel's columns shifts later pre-activations, and a channel that this turns
    constant (or a parameter whose gradient it turns zero) is removed too, which changes what FT
    is. Parameters without a gradient (layers the forward pass does not reach) are left alone.
    Returns the model's nonzero parameter count.
    """
    if structured and len(ctx.calibration) < 2:
        raise ValueError("structured propagation needs at least 2 S-set images to tell constant channels")
    was_training = model.training
    model.eval()
    try:
        nonzero = count_nonzero(model)
        for _ in range(max_passes):
            propagation_pass(model, ctx, structured)
            nonzero, before = count_nonzero(model), nonzero
            if nonzero == before:
                break
    finally:
        model.train(was_training)
    return nonzero


T = TypeVar("T")


def _plugin_call(pruner: Pruner, what: str, call: Callable[[], T]) -> T:
    """Run pruner code; any exception becomes a one-line PluginError naming the pruner."""
    try:
        return call()
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"pruner {pruner.name!r} failed in {what}: {type(exc).__name__}: {exc}") from exc


def checked_masks(pruner: Pruner, masks: object, layers: Mapping[str, nn.Conv2d | nn.Linear],
                  parameters: Mapping[str, torch.Tensor] | None = None) -> Masks:
    """A plan's masks, checked against the mask rules: a dict of compressible layer name -> a
    torch.bool tensor shaped like the layer's weight, or parameter name (of `parameters`) -> a
    torch.bool tensor shaped like the parameter (PluginError naming pruner and layer if not)."""
    if not isinstance(masks, Mapping):
        raise PluginError(f"pruner {pruner.name!r}: its plan returned {type(masks).__name__}, "
                          "expected a dict of layer name -> bool mask")
    parameters = parameters or {}
    for name, mask in masks.items():
        if name not in layers and name not in parameters:
            raise PluginError(f"pruner {pruner.name!r}: mask for {name!r}, which is not a compressible layer "
                              f"(e.g. {', '.join(list(layers)[:3])}) nor a parameter name")
        what, shape = (("layer", layers[name].weight.shape) if name in layers
                       else ("parameter", parameters[name].shape))
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            kind = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise PluginError(f"pruner {pruner.name!r}: mask of {what} {name!r} is {kind}; masks must be torch.bool")
        if mask.shape != shape:
            raise PluginError(f"pruner {pruner.name!r}: mask of {what} {name!r} has shape {tuple(mask.shape)}, "
                              f"its {'weight' if what == 'layer' else 'parameter'} {tuple(shape)}")
    return dict(masks)


class NonFiniteWeights(RuntimeError):
    """A network with NaN or infinite parameters (diverged training or a broken pruner)."""


def check_finite(model: nn.Module, where: str) -> None:
    """Raise NonFiniteWeights naming `where` and the first parameters or floating buffers (BatchNorm
    statistics) that are not finite."""
    bad = [name for name, t in _state(model).items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteWeights(f"{where}: non-finite weights (NaN or inf) in {', '.join(bad[:3])}"
                               f"{' ...' if len(bad) > 3 else ''}")


State = dict[str, torch.Tensor]  # parameter and buffer name -> tensor


def _state(model: nn.Module) -> State:
    return dict(chain(model.named_parameters(), model.named_buffers()))


def _snapshot(model: nn.Module) -> State:
    return {name: t.detach().clone() for name, t in _state(model).items()}


@torch.no_grad()
def _restore(model: nn.Module, snapshot: State) -> None:
    current = _state(model)
    for name, saved in snapshot.items():
        current[name].copy_(saved)


def _check_unchanged(pruner: Pruner, model: nn.Module, snapshot: State, what: str) -> None:
    """PluginError naming the pruner if `model`'s parameters or buffers differ from `snapshot`."""
    current = _state(model)
    changed = [name for name, saved in snapshot.items()
               if name not in current or current[name].shape != saved.shape or current[name].dtype != saved.dtype
               or current[name].device != saved.device or not torch.equal(current[name], saved)]
    changed += [name for name in current if name not in snapshot]
    if changed:
        raise PluginError(f"pruner {pruner.name!r}: {what} changed the model ({', '.join(changed[:3])}"
                          f"{' ...' if len(changed) > 3 else ''}); a plan must leave the model as it found it")


def _call_in_eval_mode(pruner: Pruner, model: nn.Module, what: str, call: Callable[[], T]) -> T:
    """Pruner code as the contract promises: model in eval mode, gradients enabled; gradients left
    behind are cleared."""
    model.eval()
    with torch.enable_grad():
        result = _plugin_call(pruner, what, call)
    model.zero_grad(set_to_none=True)
    return result


def _pruned_count(masks: Masks) -> int:
    return sum(int(mask.numel() - mask.count_nonzero()) for mask in masks.values())


def _check_monotone(pruner: Pruner, seen: dict[float, int], knob: float, pruned: int) -> None:
    """PluginError if the plan pruned more at a larger knob than at a smaller one (`seen`: knob ->
    entries pruned so far, updated)."""
    for other, count in seen.items():
        (low, low_count), (high, high_count) = sorted([(other, count), (knob, pruned)])
        if high_count > low_count:
            raise PluginError(f"pruner {pruner.name!r}: its plan is not monotone: plan({high:.4g}) prunes "
                              f"{high_count} entries, plan({low:.4g}) only {low_count}; a larger keep knob must "
                              "never prune more")
    seen[knob] = pruned


def _reconstruct(model: nn.Module, pruner: Pruner, seen: PruneContext, ctx: PruneContext, snapshot: State,
                 passes: int) -> int:
    """Run the pruner's reconstruct hook on the masked model, zero every entry that was zero before
    it again (no pruned entry regrows), propagate again; return the nonzero count."""
    zeros = parameter_masks(model)
    masks = current_masks(model)
    _call_in_eval_mode(pruner, model, "reconstruct(model, masks, ctx)", lambda: pruner.reconstruct(model, masks, seen))
    current = _state(model)
    moved = [name for name, saved in snapshot.items() if name not in current or current[name].shape != saved.shape]
    if moved:
        raise PluginError(f"pruner {pruner.name!r}: reconstruct changed the model's structure ({', '.join(moved[:3])}); "
                          "it may only update values in place")
    enforce_parameter_masks(model, zeros)
    return propagate_compression(model, ctx, pruner.structured, passes)


def reference_keep_ratio(gap_at: Callable[[float], float], keep: float, start_keep: float) -> float:
    """torchprune's size search (``CompressedNet.compress``): the keep ratio kr (nonzeros over the
    parent's) whose network keeps ``keep``.

    ``gap_at(kr)`` is the kept fraction after masking and propagation minus ``keep``; a gap within
    0.5 % of ``keep`` counts as 0. The first try is kr = keep, which halves the bracket
    [0.4 keep, max(keep, 0.999 start_keep)]; then brentq (20 iterations, xtol = rtol = 5e-3, so it
    may stop outside that 0.5 %), else the best kr tried."""
    gaps: dict[float, float] = {}

    def gap(kr: float) -> float:
        if kr not in gaps:
            diff = gap_at(kr)
            gaps[kr] = 0.0 if abs(diff) < 0.005 * keep else diff
        return gaps[kr]

    low, high = 0.4 * keep, max(keep, 0.999 * start_keep)
    first = gap(keep)
    if first == 0.0:
        return keep
    low, high = (low, keep) if first > 0 else (keep, high)
    try:
        return float(brentq(gap, low, high, maxiter=20, xtol=5e-3, rtol=5e-3, disp=True))
    except (ValueError, RuntimeError):  # no sign change in the bracket, or no convergence
        return min(gaps, key=lambda kr: abs(gaps[kr]))


def _budget_search(model: nn.Module, layers: Mapping[str, nn.Conv2d | nn.Linear], nonzero_at: Callable[[float], int],
                   keep: float, parent_nonzero: int) -> float:
    """The knob of a weight-budget pruner found as the reference finds it: kr -> budget
    ``B = int(kr * parent nonzeros) - nonzeros outside compressible weights`` (clipped to the
    compressible weights still alive), knob ``B / compressible weights``, searched by
    :func:`reference_keep_ratio`. At the same B the masks equal the reference's."""
    total = sum(layer.weight.numel() for layer in layers.values())
    alive = sum(int(layer.weight.count_nonzero()) for layer in layers.values())
    start_nonzero = count_nonzero(model)
    others = start_nonzero - alive  # biases and norm affine entries of the starting network

    def knob(kr: float) -> float:
        return min(max(int(kr * float(parent_nonzero)) - others, 0), alive) / total

    kr = reference_keep_ratio(lambda kr: nonzero_at(knob(kr)) / parent_nonzero - keep, keep,
                              start_nonzero / parent_nonzero)
    return knob(kr)


def _bisection(nonzero_at: Callable[[float], int], target_nonzero: int, tolerance: float, max_steps: int) -> float:
    """The knob whose nonzero count is closest to ``target_nonzero`` among a bisection's tries, which
    stops within ``tolerance`` nonzeros (pruners whose knob is not a weight budget: FT, PFP, tp-*)."""
    low, high = 0.0, 1.0
    best_knob, best_gap = 1.0, float("inf")
    for _ in range(max_steps):
        knob = (low + high) / 2
        nonzero = nonzero_at(knob)
        gap = abs(nonzero - target_nonzero)
        if gap < best_gap:
            best_knob, best_gap = knob, gap
        if gap <= tolerance:
            break
        if nonzero > target_nonzero:
            high = knob
        else:
            low = knob
    return best_knob


def prune_to_ratio(
    model: nn.Module,
    pruner: Pruner,
    target_ratio: float,
    parent_nonzero: int,
    ctx: PruneContext,
    tolerance: float = 1e-3,
    max_steps: int = 30,
    progress: bool = False,
    propagation: str = "once",
) -> PruneOutcome:
    """Prune `model` in place so its measured prune ratio, after propagation over S, is as close to
    `target_ratio` as the pruner's granularity allows. Already-zero parameters stay zero (cascade).

    Enforces the pruner contract (`Pruner`): the plan and each plan(knob) run in eval mode with
    gradients enabled on the unmasked model, which they must leave unchanged; masks are checked; the
    plan must be monotone. The optional reconstruct hook runs once, after the search settled.

    The size search: a weight-budget pruner (``weight_budget``: WT, SiPP) is searched as the reference
    searches (:func:`reference_keep_ratio`: brentq over the keep ratio, within 0.5 % of the kept
    fraction), so its masks equal the reference's; any other pruner's knob by bisection, stopping
    within `tolerance` of the parent's nonzero count. `propagation`: "once" (the reference) or
    "fixpoint" (PROPAGATION_PASSES)."""
    if not 0.0 <= target_ratio < 1.0:
        raise ValueError(f"target prune ratio must be in [0, 1), got {target_ratio}")
    seen = pruner_context(pruner, ctx)
    before = _snapshot(model)
    layers = compressible_layers(model)
    parameters = dict(model.named_parameters())
    target_nonzero = round((1.0 - target_ratio) * parent_nonzero)
    pruned_by_knob: dict[float, int] = {}
    passes = PROPAGATION_PASSES[propagation]

    def call(what: str, code: Callable[[], T]) -> T:
        result = _call_in_eval_mode(pruner, model, what, code)
        _check_unchanged(pruner, model, before, what)
        return result

    def attempt(knob: float) -> int:
        _restore(model, before)  # every call of the plan sees the unmasked model
        masks = checked_masks(pruner, call(f"its plan({knob:.4g})", lambda: plan(knob)), layers, parameters)
        _check_monotone(pruner, pruned_by_knob, knob, _pruned_count(masks))
        apply_masks(model, masks)
        return propagate_compression(model, ctx, pruner.structured, passes)

    was_training = model.training
    try:
        plan = call("plan(model, ctx)", lambda: pruner.plan(model, seen))
        with tqdm(total=max_steps, desc=f"size search {pruner.name} {target_ratio:.3f}", unit="try", leave=False,
                  disable=not progress) as bar:

            def tried(knob: float) -> int:
                nonzero = attempt(knob)
                bar.update(1)
                bar.set_postfix(ratio=f"{1 - nonzero / parent_nonzero:.4f}")
                return nonzero

            if pruner.weight_budget:
                best_knob = _budget_search(model, layers, tried, 1.0 - target_ratio, parent_nonzero)
            else:
                best_knob = _bisection(tried, target_nonzero, tolerance * parent_nonzero, max_steps)
        nonzero = attempt(best_knob)
        if type(pruner).reconstruct is not Pruner.reconstruct:  # optional hook: skip its extra propagation
            nonzero = _reconstruct(model, pruner, seen, ctx, before, passes)
    finally:
        model.train(was_training)
    return PruneOutcome(
        target_ratio=target_ratio,
        prune_ratio=1.0 - nonzero / parent_nonzero,
        nonzero_params=nonzero,
        keep_knob=best_knob,
    )

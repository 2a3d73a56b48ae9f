"""Shared pruning machinery: compressible layers, masks, the S set, propagation, measured prune ratio.

A pruner turns a network into a *mask plan*: a function from a keep knob in [0, 1]
(monotone: more knob keeps more) to weight masks. `prune_to_ratio` applies a plan, then the
reference's propagation step over the S set (`propagate_compression`), and searches the knob
so the **measured** prune ratio, 1 - nnz(all parameters of the pruned net) / nnz(parent),
lands on the target, whatever the pruner's own size model assumes. Masks are zeroed
parameters; nothing is physically removed, as in the paper (Liebenwein et al., torchprune).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

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
    "apply_masks",
    "calibration_size",
    "classifier_name",
    "compressible_layers",
    "count_nonzero",
    "current_masks",
    "enforce_parameter_masks",
    "global_topk",
    "last_layer_name",
    "layer_output_sizes",
    "parameter_masks",
    "propagate_compression",
    "propagation_pass",
    "prune_to_ratio",
    "top_units",
]

Masks = dict[str, torch.Tensor]  # "<layer name>" -> bool mask shaped like that layer's weight
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


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the masked-out weights of the named compressible layers (always +0.0: a multiply would
    leave -0.0 whose sign depends on kernel choice, and saved networks are compared bitwise).
    Masks are moved to the weights' device."""
    layers = compressible_layers(model)
    for name, mask in masks.items():
        weight = layers[name].weight
        weight.masked_fill_(~mask.to(weight.device).bool(), 0.0)


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
    eta, eta_max = sum(output_sizes.values()), max(output_sizes.values())
    wanted = math.ceil(_S_CONSTANT * math.log(8 * eta_max / (failure_probability / eta)))
    # at least 2 images where there are: propagation tells constant channels by comparing images
    return max(min(wanted, int(_S_MAX_FRACTION * available)), min(2, available))


def classification_loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, labels)


@dataclass(frozen=True)
class PruneContext:
    """What a pruner may use besides the weights: the S set and the task's constants."""

    calibration: torch.Tensor  # normalised S-set images, float (N, C, H, W), on the model's device
    labels: torch.Tensor  # their labels (class ids, or (N, H, W) masks for segmentation)
    seed: int
    last_layer: str  # last compressible layer in module order; FT never prunes its outputs
    loss: Loss = classification_loss  # of the propagation pass
    failure_probability: float = FAILURE_PROBABILITY["classification"]  # PFP's delta
    batch_size: int = 64


class Pruner(ABC):
    """Base class of every pruner; third-party pruners subclass it and register an entry point
    in the `prunebench.pruners` group.

    Example::

        class Magnitude(Pruner):
            name = "magnitude"

            def plan(self, model, ctx):
                scores = {n: l.weight.detach().abs() for n, l in compressible_layers(model).items()}
                return lambda keep: global_topk(scores, keep)

    Options set in ``__init__`` (public attributes) are part of the pruner's identity: results
    and cache keys record them.
    """

    name: ClassVar[str]
    structured: ClassVar[bool] = False  # masks whole filters/channels
    uses_data: ClassVar[bool] = False  # scores depend on the calibration set

    @abstractmethod
    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        """Score `model` once and return keep-knob -> masks (layer name -> bool weight mask)."""

    def options(self) -> dict[str, Any]:
        """The pruner's settings (its public instance attributes), recorded with its results."""
        return {key: value for key, value in sorted(vars(self).items()) if not key.startswith("_")}


@dataclass(frozen=True)
class PruneOutcome:
    target_ratio: float
    prune_ratio: float  # measured
    nonzero_params: int
    keep_knob: float


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
    try:
        with torch.enable_grad():
            for images, labels in zip(ctx.calibration.split(ctx.batch_size), ctx.labels.split(ctx.batch_size)):
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


def propagate_compression(model: nn.Module, ctx: PruneContext, structured: bool, max_passes: int = 10) -> int:
    """The reference's propagation step after masking (torchprune `CompressedNet._propagate_compression`).

    Forward + backward passes of the loss over the whole S set (eval mode, gradients summed over
    batches), then:

    * unstructured (WeightNet): every parameter entry, weights, biases and norm affine alike, whose
      gradient is exactly zero is zeroed;
    * structured (FilterNet): every conv/linear output filter whose gradient is exactly zero is
      zeroed, and every consumer input column ``W[:, c]`` whose input channel c was constant over S
      (e.g. a pruned filter's relu(beta') through BN + ReLU, residual sums included) is zeroed.

    Unlike the reference's single pass, passes repeat until nothing changes: zeroing a constant
    channel's columns shifts later pre-activations, and a channel that this turns constant (or a
    parameter whose gradient it turns zero) is removed too. Parameters without a gradient (layers
    the forward pass does not reach) are left alone. Returns the model's nonzero parameter count.
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


def checked_masks(pruner: Pruner, masks: object, layers: Mapping[str, nn.Conv2d | nn.Linear]) -> Masks:
    """A plan's masks, checked against the mask rules: a dict of compressible layer name -> a
    torch.bool tensor shaped like the layer's weight (PluginError naming pruner and layer if not)."""
    if not isinstance(masks, Mapping):
        raise PluginError(f"pruner {pruner.name!r}: its plan returned {type(masks).__name__}, "
                          "expected a dict of layer name -> bool mask")
    for name, mask in masks.items():
        if name not in layers:
            raise PluginError(f"pruner {pruner.name!r}: mask for {name!r}, which is not a compressible layer "
                              f"(e.g. {', '.join(list(layers)[:3])})")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            kind = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise PluginError(f"pruner {pruner.name!r}: mask of layer {name!r} is {kind}; masks must be torch.bool")
        if mask.shape != layers[name].weight.shape:
            raise PluginError(f"pruner {pruner.name!r}: mask of layer {name!r} has shape {tuple(mask.shape)}, "
                              f"its weight {tuple(layers[name].weight.shape)}")
    return dict(masks)


class NonFiniteWeights(RuntimeError):
    """A network with NaN or infinite parameters (diverged training or a broken pruner)."""


def check_finite(model: nn.Module, where: str) -> None:
    """Raise NonFiniteWeights naming `where` and the first parameters that are not finite."""
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise NonFiniteWeights(f"{where}: non-finite weights (NaN or inf) in {', '.join(bad[:3])}"
                               f"{' ...' if len(bad) > 3 else ''}")


def prune_to_ratio(
    model: nn.Module,
    pruner: Pruner,
    target_ratio: float,
    parent_nonzero: int,
    ctx: PruneContext,
    tolerance: float = 1e-3,
    max_steps: int = 30,
    progress: bool = False,
) -> PruneOutcome:
    """Prune `model` in place so its measured prune ratio, after propagation over S, is as close to
    `target_ratio` as the pruner's granularity allows. Already-zero parameters stay zero (cascade)."""
    if not 0.0 <= target_ratio < 1.0:
        raise ValueError(f"target prune ratio must be in [0, 1), got {target_ratio}")
    params = dict(model.named_parameters())
    before = {name: p.detach().clone() for name, p in params.items()}
    layers = compressible_layers(model)
    plan = _plugin_call(pruner, "plan(model, ctx)", lambda: pruner.plan(model, ctx))
    target_nonzero = round((1.0 - target_ratio) * parent_nonzero)

    def attempt(knob: float) -> int:
        masks = checked_masks(pruner, _plugin_call(pruner, f"its plan({knob:.4g})", lambda: plan(knob)), layers)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(before[name])
        apply_masks(model, masks)
        return propagate_compression(model, ctx, pruner.structured)

    low, high = 0.0, 1.0
    best_knob, best_gap = 1.0, float("inf")
    with tqdm(total=max_steps, desc=f"size search {pruner.name} {target_ratio:.3f}", unit="try", leave=False,
              disable=not progress) as bar:
        for _ in range(max_steps):
            knob = (low + high) / 2
            nonzero = attempt(knob)
            bar.update(1)
            bar.set_postfix(ratio=f"{1 - nonzero / parent_nonzero:.4f}")
            gap = abs(nonzero - target_nonzero)
            if gap < best_gap:
                best_knob, best_gap = knob, gap
            if gap <= tolerance * parent_nonzero:
                break
            if nonzero > target_nonzero:
                high = knob
            else:
                low = knob
    nonzero = attempt(best_knob)
    return PruneOutcome(
        target_ratio=target_ratio,
        prune_ratio=1.0 - nonzero / parent_nonzero,
        nonzero_params=nonzero,
        keep_knob=best_knob,
    )

"""Shared pruning machinery: compressible layers, masks, measured prune ratio, the Pruner API.

A pruner turns a network into a *mask plan*: a function from a keep knob in [0, 1]
(monotone: more knob keeps more) to weight masks. `prune_to_ratio` searches the knob so the
**measured** prune ratio, 1 - nnz(all parameters of the pruned net) / nnz(parent), lands on
the target, whatever the pruner's own size model assumes. Masks are zeroed weights; nothing is
physically removed, as in the paper.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

Masks = dict[str, torch.Tensor]  # "<layer name>" -> bool mask shaped like that layer's weight
MaskPlan = Callable[[float], Masks]


def compressible_layers(model: nn.Module) -> dict[str, nn.Module]:
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


def count_nonzero(model: nn.Module) -> int:
    """Nonzero parameters, all of them (weights, biases, norm affine); buffers excluded."""
    return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))


def current_masks(model: nn.Module) -> Masks:
    return {name: layer.weight.detach() != 0 for name, layer in compressible_layers(model).items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    layers = compressible_layers(model)
    for name, mask in masks.items():
        layers[name].weight.mul_(mask)


def global_topk(scores: dict[str, torch.Tensor], keep: float) -> Masks:
    """Keep the round(keep * total) highest-scoring weights over all layers together."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = round(min(max(keep, 0.0), 1.0) * flat.numel())
    keep_flat = torch.zeros(flat.numel(), dtype=torch.bool)
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
    kept = torch.zeros(scores.numel(), dtype=torch.bool)
    kept[torch.topk(scores, count, sorted=False).indices] = True
    return kept


@dataclass(frozen=True)
class PruneContext:
    """What a pruner may use besides the weights."""

    calibration: torch.Tensor  # normalised S-set images, float (N, C, H, W)
    seed: int
    classifier: str  # name of the output layer
    batch_size: int = 64


class Pruner(ABC):
    """Base class of every pruner; third-party pruners subclass it and register an entry point
    in the `prunebench.pruners` group."""

    name: ClassVar[str]
    structured: ClassVar[bool] = False  # masks whole filters/channels
    uses_data: ClassVar[bool] = False  # plan depends on the calibration set

    @abstractmethod
    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        """Score `model` once and return keep-knob -> masks (layer name -> bool weight mask)."""


@dataclass(frozen=True)
class PruneOutcome:
    target_ratio: float
    prune_ratio: float  # measured
    nonzero_params: int
    keep_knob: float


def zero_dead_filters(model: nn.Module, calibration: torch.Tensor, seed: int) -> None:
    """Zero output filters whose weight gradient is exactly zero on the calibration batch.

    After a structured mask, a filter whose output no later layer reads receives no
    gradient; removing it keeps the function and makes e.g. PFP's pruned input channels
    remove the filters that produced them, on any topology (residual sums keep theirs).
    """
    layers = compressible_layers(model)
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = model(calibration)
        probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
        (out * probe).sum().backward()
    with torch.no_grad():
        for layer in layers.values():
            grad = layer.weight.grad
            if grad is None:
                continue
            dead = grad.flatten(1).abs().amax(1) == 0
            layer.weight[dead] = 0
    model.zero_grad(set_to_none=True)
    model.train(was_training)


def prune_to_ratio(
    model: nn.Module,
    pruner: Pruner,
    target_ratio: float,
    parent_nonzero: int,
    ctx: PruneContext,
    tolerance: float = 1e-3,
    max_steps: int = 30,
) -> PruneOutcome:
    """Prune `model` in place so its measured prune ratio is as close to `target_ratio` as the
    pruner's granularity allows. Already-zero weights stay zero (cascade pruning)."""
    if not 0.0 <= target_ratio < 1.0:
        raise ValueError(f"target prune ratio must be in [0, 1), got {target_ratio}")
    layers = compressible_layers(model)
    before = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    plan = pruner.plan(model, ctx)
    target_nonzero = round((1.0 - target_ratio) * parent_nonzero)
    calibration = ctx.calibration[: ctx.batch_size]

    def attempt(knob: float) -> int:
        masks = plan(knob)
        with torch.no_grad():
            for name, layer in layers.items():
                mask = masks.get(name)
                layer.weight.copy_(before[name] if mask is None else before[name] * mask)
        if pruner.structured:
            zero_dead_filters(model, calibration, ctx.seed)
        return count_nonzero(model)

    low, high = 0.0, 1.0
    best_knob, best_gap = 1.0, float("inf")
    for _ in range(max_steps):
        knob = (low + high) / 2
        nonzero = attempt(knob)
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

"""Compressible layers, masks and their primitives, and the S set's size: what every pruner and the
size search share.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.devices import module_device

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



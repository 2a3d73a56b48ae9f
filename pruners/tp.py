"""Torch-Pruning criteria: group L1/L2 magnitude, Taylor and Hessian (OBD) importance as masks.

Torch-Pruning (Fang et al. 2023, "DepGraph: Towards Any Structural Pruning",
https://github.com/VainF/Torch-Pruning; install ``prunebench[torch-pruning]``) couples every conv/linear
layer's output channels with everything that must shrink with them (BN, the consumers' input columns,
residual partners) into one *group*, and scores each group's channels by a group importance (mean over
the group's layers, divided by the group's mean: TP's defaults). These pruners do exactly that on
the network's DependencyGraph (traced on an input shaped like the S images) and turn it into masks
the way TP's ``BasePruner`` prunes by default (``global_pruning=False``): every group keeps the same
fraction, ``int(channels * keep)``, of its channels, the highest-scoring ones. The masks zero every
parameter row TP's physical pruning would remove with a channel (the filters and biases of the
group's conv/linear layers, its BN affine), so a pruned channel is exactly 0, and prunebench's
propagation step then zeroes the consumers' columns, as TP removes them. The network's output layers
are ignored (never pruned), as TP users do. In a cascade the channels pruned before stay pruned and
the fraction is of the channels still alive. A model whose channels TP couples wrongly
(parameter-free channel ops such as option-A zero-padding shortcuts) is refused with a one-line error.
"""

from __future__ import annotations

import importlib
import math
from abc import abstractmethod
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from pydantic import Field
from torch import nn

from bench.api import MaskPlan, Masks, PruneContext, Pruner, PrunerOptions, compressible_layers, top_units
from bench.pruning import classifier_name
from bench.registry import PluginError

_STAGGER = 1e-6  # equal-width groups step at slightly different knobs, so the size search moves one channel at a time


def torch_pruning(pruner: str) -> ModuleType:
    """The torch_pruning module, or a one-line PluginError saying how to install it."""
    try:
        return importlib.import_module("torch_pruning")
    except ImportError as exc:
        raise PluginError(f"pruner {pruner!r} needs Torch-Pruning: pip install 'prunebench[torch-pruning]'") from exc


@dataclass(frozen=True)
class ChannelGroup:
    """One TP group: its channel scores (alive channels only, dead ones -inf) and, per parameter of
    the layers whose output channels it prunes, the group channel of each of its rows."""

    scores: torch.Tensor
    alive: int
    rows: dict[str, torch.Tensor]  # parameter name -> group channel of each row (conv filters, BN entries, ...)


class TorchPruningPruner(Pruner):
    """Shared mechanism of the tp-* pruners; a subclass only names its Torch-Pruning importance and
    prepares the gradients it reads."""

    structured = True
    requires = ("torch-pruning",)
    paper = "Fang et al. 2023, DepGraph: Towards Any Structural Pruning (CVPR)"
    code_url = "https://github.com/VainF/Torch-Pruning"

    @abstractmethod
    def importance(self, tp: ModuleType, model: nn.Module, ctx: PruneContext) -> Any:
        """The Torch-Pruning importance to score groups with; may leave gradients in `model` for it."""

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        tp = torch_pruning(self.name)
        # tracing reads shapes only (a data-free pruner's S set has 0 images)
        example = torch.zeros(1, *ctx.calibration.shape[1:], dtype=ctx.calibration.dtype, device=ctx.device)
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        layers = compressible_layers(model)
        outputs = [layers[name] for name in {classifier_name(model), ctx.last_layer}]
        parameters = dict(model.named_parameters())
        names = {id(module): name for name, module in model.named_modules()}
        tp_groups = list(graph.get_all_groups(ignored_layers=outputs, root_module_types=[nn.Conv2d, nn.Linear]))
        for group in tp_groups:
            self._check_covered(group, graph, names)
        importance = self.importance(tp, model, ctx)
        groups = [g for g in (self._channel_group(group, importance, graph, names) for group in tp_groups) if g]
        model.zero_grad(set_to_none=True)  # gradients a criterion left for TP's importance

        def masks(keep: float) -> Masks:
            out: Masks = {}
            for index, group in enumerate(groups):
                # TP's BasePruner keeps int(channels * (1 - pruning_ratio)) channels of each group
                kept = top_units(group.scores, math.floor(keep * group.alive + _STAGGER * (index + 1)))
                for name, channel_of_row in group.rows.items():
                    shape = parameters[name].shape
                    out[name] = kept[channel_of_row].view(-1, *([1] * (len(shape) - 1))).expand(shape)
            return out

        return masks

    def _check_covered(self, group: Any, graph: Any, names: dict[int, str]) -> None:
        """Refuse a group that holds only part of a layer's output channels: TP then prunes channels
        that a parameter-free op (e.g. option-A zero padding) maps to others, and breaks the model."""
        for dep, idxs in group:
            if not graph.is_out_channel_pruning_fn(dep.handler) or not isinstance(dep.target.module, nn.Module):
                continue
            channels = graph.get_out_channels(dep.target.module)
            if channels is not None and len(idxs) != channels:
                root, layer = (names.get(id(m), "?") for m in (group[0].dep.target.module, dep.target.module))
                raise PluginError(
                    f"pruner {self.name!r}: Torch-Pruning cannot prune this model: the channel group of {root!r} "
                    f"holds {len(idxs)} of the {channels} output channels of {layer!r} (channels coupled through a "
                    "parameter-free op such as an option-A zero-padding shortcut)")

    @staticmethod
    def _channel_group(group: Any, importance: Any, graph: Any, names: dict[int, str]) -> ChannelGroup | None:
        """The group's scores and row -> channel maps of every parameter that TP's physical pruning of
        the group's output channels shrinks (conv/linear filters and biases, BN affine), so a pruned
        channel is exactly 0 (None if TP gives the group no score)."""
        scores = importance(group)
        if scores is None:
            return None
        rows: dict[str, torch.Tensor] = {}
        for item in group:
            module = item.dep.target.module
            if id(module) not in names or not graph.is_out_channel_pruning_fn(item.dep.handler):
                continue
            channel_of_row = torch.empty(len(item.idxs), dtype=torch.long)
            channel_of_row[torch.tensor(item.idxs)] = torch.tensor(item.root_idxs)
            for key, parameter in module.named_parameters(recurse=False):
                if parameter.ndim and parameter.shape[0] == len(channel_of_row):
                    rows[f"{names[id(module)]}.{key}".lstrip(".")] = channel_of_row.to(scores.device)
        root = group[0].dep.target.module.weight.detach()
        alive = root.flatten(1).ne(0).any(1).to(scores.device)  # filters pruned by an earlier cascade step
        return ChannelGroup(scores.float().masked_fill(~alive, -math.inf), int(alive.sum()), rows)


class GroupMagnitude(TorchPruningPruner):
    """Group magnitude importance: mean over the group's layers of each channel's |W|^p summed."""

    p: int

    def importance(self, tp: ModuleType, model: nn.Module, ctx: PruneContext) -> Any:
        return tp.importance.GroupMagnitudeImportance(p=self.p)


class GroupL1(GroupMagnitude):
    name = "tp-l1"
    display_name = "TP group L1"
    p = 1


class GroupL2(GroupMagnitude):
    name = "tp-l2"
    display_name = "TP group L2"
    p = 2


def mean_loss_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ctx: PruneContext) -> None:
    """Leave in every parameter's .grad the gradient of the mean loss over `images` (in batches)."""
    model.zero_grad(set_to_none=True)
    for batch, batch_labels in zip(images.split(ctx.batch_size), labels.split(ctx.batch_size)):
        (ctx.loss(model(batch), batch_labels) * (len(batch) / len(images))).backward()


def mean_squared_sample_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                                  ctx: PruneContext) -> None:
    """Leave in every parameter's .grad the mean over `images` of the squared per-image loss gradient:
    the empirical Fisher diagonal, the Hessian estimate of TP's GroupHessianImportance (accumulated
    here: its accumulate_grad keeps only the last image's in Torch-Pruning 1.6.1). One image per
    backward pass (eval mode, so BN does not mix images): per-image backward passes through a whole
    batch's graph would cost batch-size times more."""
    params = [p for p in model.parameters() if p.requires_grad]
    squares = [torch.zeros_like(p) for p in params]
    for image, label in zip(images.split(1), labels.split(1)):
        grads = torch.autograd.grad(ctx.loss(model(image), label), params, allow_unused=True)
        for square, grad in zip(squares, grads):
            if grad is not None:
                square.add_(grad.square())
    for p, square in zip(params, squares):
        p.grad = square / len(images)


class GradientCriterion(TorchPruningPruner):
    """A criterion reading loss gradients on the S set (its first `batches` batches, option)."""

    uses_data = True

    class Options(PrunerOptions):
        # gradients over the first `batches` batches of ctx.batch_size S images; None: all of S
        batches: int | None = Field(default=None, ge=1)

    options: Options

    def scoring_set(self, ctx: PruneContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The S images and labels the gradients are taken over."""
        count = len(ctx.calibration) if self.options.batches is None else self.options.batches * ctx.batch_size
        return ctx.calibration[:count], ctx.labels[:count]


class GroupTaylor(GradientCriterion):
    """First-order Taylor importance |W * dL/dW| (Molchanov et al. 2019), L the mean loss over S."""

    name = "tp-taylor"
    display_name = "TP group Taylor"

    def importance(self, tp: ModuleType, model: nn.Module, ctx: PruneContext) -> Any:
        mean_loss_gradients(model, *self.scoring_set(ctx), ctx)
        return tp.importance.GroupTaylorImportance()


class GroupHessian(GradientCriterion):
    """Optimal Brain Damage importance W^2 * H (LeCun et al. 1989), H the empirical Fisher over S."""

    name = "tp-hessian"
    display_name = "TP group Hessian (OBD)"

    def importance(self, tp: ModuleType, model: nn.Module, ctx: PruneContext) -> Any:
        mean_squared_sample_gradients(model, *self.scoring_set(ctx), ctx)
        return tp.importance.GroupHessianImportance()

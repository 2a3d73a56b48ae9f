"""random: unstructured pruning with seeded uniform scores, a sanity baseline."""

from __future__ import annotations

import torch
from torch import nn

from bench.api import MaskPlan, PruneContext, Pruner, compressible_layers, global_topk


class RandomPruner(Pruner):
    name = "random"
    weight_budget = True  # plan(keep): the global top round(keep * total) weights
    display_name = "Random (sanity baseline)"

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        generator = torch.Generator().manual_seed(ctx.seed)
        scores = {
            name: torch.rand(layer.weight.shape, generator=generator).to(layer.weight.device) * (layer.weight.detach() != 0)
            for name, layer in compressible_layers(model).items()
        }
        return lambda keep: global_topk(scores, keep)

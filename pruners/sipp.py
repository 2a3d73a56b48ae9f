"""SiPP (deterministic): sensitivity-informed weight pruning (Baykal et al. 2019).

Each weight is scored by its largest (over calibration images) patch-averaged relative
contribution to its neuron's same-sign pre-activation; the global top fraction is kept.
Unstructured; first layer and classifier included.
"""

from __future__ import annotations

from torch import nn

from bench.api import (
    MaskPlan,
    PruneContext,
    Pruner,
    compressible_layers,
    global_topk,
    layer_sensitivities,
    sipp_layer_scores,
)


class SiPP(Pruner):
    name = "sipp"
    uses_data = True
    weight_budget = True  # plan(keep): the global top round(keep * total) weights
    display_name = "SiPP"
    paper = "Baykal et al. 2021, SiPPing Neural Networks: Sensitivity-informed Provable Pruning of Neural Networks"
    code_url = "https://github.com/lucaslie/torchprune"  # the paper's reference implementation

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        layers = compressible_layers(model)
        scores = layer_sensitivities(model, layers, ctx.calibration, sipp_layer_scores, ctx.batch_size)
        return lambda keep: global_topk(scores, keep)

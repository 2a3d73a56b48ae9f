"""WT: global weight thresholding (magnitude pruning, Renda et al. 2020 as used in the paper).

Scores every conv/linear weight by |W| and keeps the global top fraction; first layer and
classifier included, no data used. In cascade mode |W| is that of the retrained weights.
"""

from __future__ import annotations

from torch import nn

from bench.api import MaskPlan, PruneContext, Pruner, compressible_layers, global_topk


class WeightThresholding(Pruner):
    name = "wt"
    weight_budget = True  # plan(keep): the global top round(keep * total) weights
    display_name = "WT (global weight thresholding)"
    paper = "Renda et al. 2020, Comparing Rewinding and Fine-tuning in Neural Network Pruning"
    code_url = "https://github.com/lucaslie/torchprune"  # the paper's reference implementation

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        scores = {name: layer.weight.detach().abs() for name, layer in compressible_layers(model).items()}
        return lambda keep: global_topk(scores, keep)

"""FT: filter thresholding (Li et al. 2017 as used in the paper).

Scores each output filter by the l1 norm of its weights and keeps the same fraction of the
still-alive filters in every layer (at least one). As in the reference, the outputs of the last
compressible layer in module order are never pruned (the classifier; for DeepLabV3 with an aux
head, the aux head's last conv). The scores use no data; the shared propagation step then zeroes
the consumer columns that read a pruned filter's constant output.
"""

from __future__ import annotations

import math

from torch import nn

from bench.api import MaskPlan, Masks, PruneContext, Pruner, compressible_layers, top_units


class FilterThresholding(Pruner):
    name = "ft"
    structured = True
    display_name = "FT (filter thresholding)"
    paper = "Li et al. 2017, Pruning Filters for Efficient ConvNets"
    code_url = "https://github.com/lucaslie/torchprune"  # the paper's reference implementation

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        weights = {
            name: layer.weight.detach()
            for name, layer in compressible_layers(model).items()
            if name != ctx.last_layer
        }
        norms = {name: w.abs().flatten(1).sum(1) for name, w in weights.items()}
        alive = {name: int((n > 0).sum()) for name, n in norms.items()}

        def masks(keep: float) -> Masks:
            out: Masks = {}
            for index, (name, w) in enumerate(weights.items()):
                # round(keep * alive), with layers of equal width stepping at slightly different
                # knobs so the size search can move one filter at a time
                count = math.floor(keep * alive[name] + 0.5 - 1e-6 * (index + 1))
                kept = top_units(norms[name], count)
                out[name] = kept.view(-1, *([1] * (w.ndim - 1))).expand_as(w)
            return out

        return masks

"""PFP (deterministic): provable filter pruning (Liebenwein et al. 2020).

Scores each input channel c of every layer by s_c, its largest relative contribution over
calibration images, output filters, kernel offsets and patches. One global epsilon sets every
layer's budget through PFP's sample-complexity bound, so layers whose total sensitivity is
larger keep more channels:

    kappa_l = S_l * 2 C ln(8 (P_l + 1) K_l / delta),   S_l = sum_c s_c,  p_c = s_c / S_l
    m_l(eps) = ceil(3 (6 + 2 eps) kappa_l / eps^2)
    keep_l  = ceil(sum_c 1 - (1 - p_c)^m_l)   channels with the largest s_c (>= 1)

with C = 3 and delta = the reference's failure probability deltaS (1e-16; 1e-5 for segmentation;
option `failure_probability` overrides it), as in torchprune (the division by the neurons per image
belongs to the |S| formula only). delta enters each layer's budget through ln(8 (P_l + 1) K_l / delta),
so it shifts channels between layers of different P_l K_l; C scales every layer alike, which the
size search cancels, so it is no option.
Dropping input channel c of layer l+1 leaves the filter producing it unread; the shared
propagation step then zeroes it.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from bench.api import (
    MaskPlan,
    Masks,
    PruneContext,
    Pruner,
    PrunerOptions,
    compressible_layers,
    layer_output_sizes,
    layer_sensitivities,
    pfp_layer_scores,
    top_units,
)

SAMPLE_CONSTANT = 3.0
LOG10_EPS_RANGE = (12.0, -6.0)  # keep knob 0 -> 1 maps log10(eps) from 12 (one channel) to -6 (all)


def expected_distinct(probabilities: torch.Tensor, samples: float) -> int:
    """ceil(sum_c 1 - (1 - p_c)^m): channels hit at least once in m draws."""
    hit = -torch.expm1(samples * torch.log1p(-probabilities.clamp(max=1 - 1e-12).double()))
    return math.ceil(float(hit.sum()) - 1e-9)


class PFP(Pruner):
    name = "pfp"
    structured = True
    uses_data = True
    display_name = "PFP (provable filter pruning)"
    paper = "Liebenwein et al. 2020, Provable Filter Pruning for Efficient Neural Networks"
    code_url = "https://github.com/lucaslie/torchprune"  # the paper's reference implementation

    class Options(PrunerOptions):
        # delta of the bound; None: the task's (ctx.failure_probability, the reference's deltaS)
        failure_probability: float | None = Field(default=None, gt=0, lt=1)

    options: Options

    def plan(self, model: nn.Module, ctx: PruneContext) -> MaskPlan:
        layers = compressible_layers(model)
        scores = layer_sensitivities(model, layers, ctx.calibration, pfp_layer_scores, ctx.batch_size)
        neurons = layer_output_sizes(model, ctx.calibration)
        delta = ctx.failure_probability if self.options.failure_probability is None else self.options.failure_probability
        coefficients: dict[str, float] = {}
        for name, s in scores.items():
            layer = layers[name]
            kernel = layer.weight[0, 0].numel()
            patches = neurons[name] // layer.weight.shape[0]
            log_term = math.log(8 * (patches + 1) * kernel / delta)
            coefficients[name] = float(s.sum()) * 2 * SAMPLE_CONSTANT * log_term
        probabilities = {name: s / s.sum().clamp_min(1e-30) for name, s in scores.items()}

        def masks(keep: float) -> Masks:
            high, low = LOG10_EPS_RANGE
            eps = 10.0 ** (high + keep * (low - high))
            out: Masks = {}
            for name, s in scores.items():
                samples = math.ceil(3 * (6 + 2 * eps) * coefficients[name] / eps**2)
                kept = top_units(s, expected_distinct(probabilities[name], samples))
                w = layers[name].weight
                out[name] = kept.view(1, -1, *([1] * (w.ndim - 2))).expand_as(w)
            return out

        return masks

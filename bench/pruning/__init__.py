"""Shared pruning machinery: compressible layers, masks, the S set, propagation, measured prune ratio.

A pruner turns a network into a *mask plan*: a function from a keep knob in [0, 1]
(monotone: more knob keeps more) to weight masks. `prune_to_ratio` applies a plan, then the
reference's propagation step over the S set (`propagate_compression`), and searches the knob
so the **measured** prune ratio, 1 - nnz(all parameters of the pruned net) / nnz(parent),
lands on the target, whatever the pruner's own size model assumes. Masks are zeroed
parameters; nothing is physically removed, as in the paper (Liebenwein et al., torchprune).

The pruner contract (what `plan` may do, the mask rules, options, the `reconstruct` hook) is
stated once, on `Pruner`; `prune_to_ratio` enforces it.

Layer: pruning (`masks`, the pruner API in `pruner`, `propagation`, the size search in `search`,
`sensitivity`). May import: bench.core.
"""

from bench.pruning.masks import (
    FAILURE_PROBABILITY,
    Layer,
    Loss,
    MaskPlan,
    Masks,
    ParameterMasks,
    apply_masks,
    calibration_size,
    classification_loss,
    classifier_name,
    compressible_layers,
    count_nonzero,
    current_masks,
    enforce_parameter_masks,
    global_topk,
    last_layer_name,
    layer_output_sizes,
    mask_targets,
    parameter_masks,
    top_units,
)
from bench.pruning.propagation import (
    PROPAGATION_PASSES,
    REFERENCE_S_BATCH,
    propagate_compression,
    propagation_pass,
)
from bench.pruning.pruner import (
    PruneContext,
    Pruner,
    PrunerOptions,
    canonical_pruner_label,
    format_pruner_label,
    load_pruner,
    option_help,
    parse_pruner_label,
    pruner_context,
    require_canonical_label,
    split_pruner_labels,
    validated_options,
)
from bench.pruning.search import (
    NonFiniteWeights,
    PruneOutcome,
    State,
    check_finite,
    checked_masks,
    prune_to_ratio,
    reference_keep_ratio,
)

__all__ = [
    "apply_masks",
    "calibration_size",
    "canonical_pruner_label",
    "check_finite",
    "checked_masks",
    "classification_loss",
    "classifier_name",
    "compressible_layers",
    "count_nonzero",
    "current_masks",
    "enforce_parameter_masks",
    "FAILURE_PROBABILITY",
    "format_pruner_label",
    "global_topk",
    "last_layer_name",
    "Layer",
    "layer_output_sizes",
    "load_pruner",
    "Loss",
    "mask_targets",
    "MaskPlan",
    "Masks",
    "NonFiniteWeights",
    "option_help",
    "parameter_masks",
    "ParameterMasks",
    "parse_pruner_label",
    "propagate_compression",
    "propagation_pass",
    "PROPAGATION_PASSES",
    "prune_to_ratio",
    "PruneContext",
    "PruneOutcome",
    "Pruner",
    "pruner_context",
    "PrunerOptions",
    "reference_keep_ratio",
    "REFERENCE_S_BATCH",
    "require_canonical_label",
    "split_pruner_labels",
    "State",
    "top_units",
    "validated_options",
]

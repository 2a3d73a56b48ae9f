"""The public plugin API of prunebench: everything a pruner or suite package may import.

Third-party pruners and suites import only from this module; its names are kept stable within
an `API_VERSION` (a change that breaks a plugin bumps it). The size search, propagation over the
S set, training and evaluation are internals (bench.pruning, bench.jobs, bench.training) and may
change without notice.

A pruner (register it under the ``prunebench.pruners`` entry-point group; the pruner contract is
stated once, in `Pruner`'s docstring; docs/plugins.md has a worked example)::

    from pydantic import Field
    from bench.api import Pruner, PrunerOptions, compressible_layers, global_topk

    class Magnitude(Pruner):
        name = "magnitude"

        class Options(PrunerOptions):  # `bench run --pruner magnitude:power=2`
            power: float = Field(default=1.0, gt=0)

        options: Options

        def plan(self, model, ctx):
            scores = {n: l.weight.detach().abs() ** self.options.power
                      for n, l in compressible_layers(model).items()}
            return lambda keep: global_topk(scores, keep)

API_VERSION 2 (from 1): options are an `Options` model (no longer public attributes set in
``__init__``), `plan` must leave the model unchanged and be monotone (checked), masks may name
parameters, data-free pruners see an empty S set, and `reconstruct` is an optional hook.

A suite (``prunebench.suites``): subclass `Suite` (return `TestDistribution`s built from the
dataset's test set) or `CorruptionSuite` (a table corruption -> level per severity).

A model (``prunebench.models``): register its builder with timm and name a `ModelConfig` instance
(input size, classes, classifier, reference parameter count, paper) declared beside it.
"""

from __future__ import annotations

from bench.corruptions import corrupt, seed_for
from bench.data import DataBundle, ImageSet, TestSource
from bench.model_config import ModelConfig
from bench.pruning import (
    MaskPlan,
    Masks,
    PruneContext,
    Pruner,
    PrunerOptions,
    compressible_layers,
    global_topk,
    layer_output_sizes,
    top_units,
)
from bench.sensitivity import layer_sensitivities, pfp_layer_scores, sipp_layer_scores
from bench.suite import EVERYTHING, CorruptionSuite, Selection, Suite, TestDistribution

API_VERSION = 2

__all__ = [
    "API_VERSION",
    "EVERYTHING",
    "CorruptionSuite",
    "DataBundle",
    "ImageSet",
    "MaskPlan",
    "Masks",
    "ModelConfig",
    "PruneContext",
    "Pruner",
    "PrunerOptions",
    "Selection",
    "Suite",
    "TestDistribution",
    "TestSource",
    "compressible_layers",
    "corrupt",
    "global_topk",
    "layer_output_sizes",
    "layer_sensitivities",
    "pfp_layer_scores",
    "seed_for",
    "sipp_layer_scores",
    "top_units",
]

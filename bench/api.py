"""The public plugin API of prunebench: everything a pruner or suite package may import.

Third-party pruners and suites import only from this module; its names are kept stable within
an `API_VERSION` (a change that breaks a plugin bumps it). The size search, propagation over the
S set, training and evaluation are internals (bench.pruning, bench.pipeline.jobs, bench.pipeline.training) and may
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
dataset's test set) or `CorruptionSuite` (a table corruption -> level per severity). A suite that
reads published test sets (CIFAR-10-C, CIFAR-10.1, ImageNet-C) uses the data-file helpers below:
the data root, checked archives and manifests, `.npy` readers, and the corruption tables.

Plugins report their own failures (a missing optional dependency) with `PluginError`.

A model (``prunebench.models``): register its builder with timm and name a `ModelConfig` instance
(input size, classes, classifier, reference parameter count, paper) declared beside it.
"""

from __future__ import annotations

from bench.core.registry import PluginError
from bench.corruptions import corrupt, seed_for
from bench.corruptions.tables import CIFAR10_C, IMAGENET_C, MNIST_C_GEOMETRIC, MNIST_C_STROKES, Constant
from bench.data import DataBundle, ImageSet, TestSource, folder_images
from bench.data.files import (
    Archive,
    DataInvalid,
    DataMissing,
    data_root,
    download_allowed,
    fetch_archive,
    load_json,
    local_manifest,
    verify_files,
)
from bench.data.make_c import PARAMETERS as MAKE_C_PARAMETERS
from bench.data.readers import ImageFiles, NpyRows, check_npy_images, check_npy_labels
from bench.data.suite import EVERYTHING, CorruptionSuite, Selection, Suite, TestDistribution
from bench.models.config import ModelConfig
from bench.pruning import (
    MaskPlan,
    Masks,
    PruneContext,
    Pruner,
    PrunerOptions,
    classifier_name,
    compressible_layers,
    global_topk,
    layer_output_sizes,
    top_units,
)
from bench.pruning.sensitivity import layer_sensitivities, pfp_layer_scores, sipp_layer_scores

API_VERSION = 2

__all__ = [
    "API_VERSION",
    "Archive",
    "CIFAR10_C",
    "Constant",
    "CorruptionSuite",
    "DataBundle",
    "DataInvalid",
    "DataMissing",
    "EVERYTHING",
    "IMAGENET_C",
    "ImageFiles",
    "ImageSet",
    "MAKE_C_PARAMETERS",
    "MNIST_C_GEOMETRIC",
    "MNIST_C_STROKES",
    "MaskPlan",
    "Masks",
    "NpyRows",
    "PluginError",
    "ModelConfig",
    "PruneContext",
    "Pruner",
    "PrunerOptions",
    "Selection",
    "Suite",
    "TestDistribution",
    "TestSource",
    "check_npy_images",
    "check_npy_labels",
    "classifier_name",
    "compressible_layers",
    "corrupt",
    "data_root",
    "download_allowed",
    "fetch_archive",
    "folder_images",
    "global_topk",
    "layer_output_sizes",
    "layer_sensitivities",
    "load_json",
    "local_manifest",
    "pfp_layer_scores",
    "seed_for",
    "sipp_layer_scores",
    "top_units",
    "verify_files",
]

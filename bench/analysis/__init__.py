"""Beyond test accuracy: how similar pruned networks stay to their parent (Lost in Pruning, §5).

Two analyses of the networks of one `bench run`, read back from its store:

* functional similarity under noise (`similarity`): every network sees the same noisy copies of
  the test images; per (network, ε) the label agreement with the parent, the mean softmax ℓ2
  distance to the parent and the accuracy, and per (pruner, ε) the noise prune potential;
* informative features (`features`): each network's 10 % most informative pixels per image, and
  every network's confidence in the true class when only those pixels are kept.

Both also run an independently trained parent ("control": same data split and recipe, another
init and data-order seed), a parent job of the run's store (`networks`). Each writes a validated
report (`reports`: `SimilarityReport`, `FeatureReport`; by default `<result folder>/analysis/<result
stem>.similarity.json` / `.features.json`), from which `bench plot` draws its figures (`figures`).

Layer: analysis. May import: bench.core, bench.corruptions, bench.results, bench.reports, bench.data,
bench.models, bench.pruning, bench.pipeline.
"""

from bench.analysis.features import (
    DEFAULT_FEATURE_IMAGES,
    DEFAULT_KEEP_FRACTION,
    REFINE_SWAPS,
    backward_selection,
    features_analysis,
    gradient_saliency,
    informative_features,
    pixel_mask,
)
from bench.analysis.figures import (
    features_figure,
    report_figure,
    save_features_plot,
    save_similarity_plot,
    similarity_figure,
)
from bench.analysis.networks import (
    CONTROL,
    CONTROL_KIND,
    CONTROL_SEED_OFFSET,
    AnalysisNetwork,
    RunNetworks,
    control_network,
    control_spec,
    load_run_networks,
)
from bench.analysis.reports import (
    MASK_VALUE,
    NOISE_MODEL,
    REPORT_MODELS,
    REPORTS_FOLDER,
    Analysis,
    FeatureReport,
    NoisePotential,
    Report,
    ReportFileError,
    Saliency,
    SimilarityCell,
    SimilarityReport,
    Target,
    features_table,
    find_report_files,
    load_report,
    load_reports,
    report_path,
    save_report,
    similarity_table,
)
from bench.analysis.similarity import (
    DEFAULT_DRAWS,
    DEFAULT_EPSILONS,
    draw_seed,
    functional_similarity,
    noise_potentials,
    noisy_inputs,
    similarity_analysis,
)

__all__ = [
    "CONTROL",
    "CONTROL_KIND",
    "CONTROL_SEED_OFFSET",
    "DEFAULT_DRAWS",
    "DEFAULT_EPSILONS",
    "DEFAULT_FEATURE_IMAGES",
    "DEFAULT_KEEP_FRACTION",
    "MASK_VALUE",
    "NOISE_MODEL",
    "REFINE_SWAPS",
    "REPORTS_FOLDER",
    "REPORT_MODELS",
    "Analysis",
    "AnalysisNetwork",
    "FeatureReport",
    "NoisePotential",
    "Report",
    "ReportFileError",
    "RunNetworks",
    "Saliency",
    "SimilarityCell",
    "SimilarityReport",
    "Target",
    "backward_selection",
    "control_network",
    "control_spec",
    "draw_seed",
    "features_analysis",
    "features_figure",
    "features_table",
    "find_report_files",
    "functional_similarity",
    "gradient_saliency",
    "informative_features",
    "load_report",
    "load_reports",
    "load_run_networks",
    "noise_potentials",
    "noisy_inputs",
    "pixel_mask",
    "report_figure",
    "report_path",
    "save_features_plot",
    "save_report",
    "save_similarity_plot",
    "similarity_analysis",
    "similarity_figure",
    "similarity_table",
]

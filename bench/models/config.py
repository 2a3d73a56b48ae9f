"""`ModelConfig`: what prunebench knows about one model besides its builder.

A package registers a model by naming one `ModelConfig` instance under the `prunebench.models`
entry-point group, with the config's `name` as the entry point's name, declared beside the model's
builder (importing the module that defines the config registers the builder, e.g. with timm).
prunebench's own models (bench.models, bench.models.segmentation) are registered the same way in its
pyproject, and the tests build every registered model and check it against its config.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core import registry


@dataclass(frozen=True)
class ModelConfig:
    """One model's metadata.

    `input_size`: (channels, height, width) of the images it is designed for; `num_classes`: its
    default number of classes; `classifier`: the module name of its output layer, the last layer
    the pruners keep (`bench.pruning.classifier_name`); `reference_params`: its parameter count when
    built with `num_classes` classes and `input_size[0]` input channels, as the paper or reference
    implementation gives it; `paper`: a citation or URL of the paper and the reference code (None
    for prunebench's own networks).
    """

    name: str
    input_size: tuple[int, int, int]
    classifier: str
    reference_params: int
    num_classes: int = 10
    paper: str | None = None

    def __post_init__(self) -> None:
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise ValueError(f"model config {self.name!r}: input_size must be (channels, height, width), "
                             f"got {self.input_size}")
        if self.reference_params < 1 or self.num_classes < 1:
            raise ValueError(f"model config {self.name!r}: reference_params and num_classes must be positive")

    @property
    def in_chans(self) -> int:
        """The default number of input channels, `input_size[0]`."""
        return self.input_size[0]


def model_config(name: str) -> ModelConfig:
    """The config an installed package registers under `name` (`prunebench.models` entry points);
    an unknown name is a one-line ValueError suggesting close matches."""
    if name not in registry.available(registry.MODEL_GROUP):
        raise ValueError(f"unknown model {name!r}.{registry.alternatives(registry.MODEL_GROUP, name)}")
    return registry.load_instance(registry.MODEL_GROUP, name, ModelConfig)

"""Default training recipes per (dataset, model): the parent schedule and the retrain budget."""

from __future__ import annotations

from bench.schema import Recipe

DIGITS_TRAIN = Recipe(epochs=30, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=5e-4, schedule="cosine")
DIGITS_RETRAIN = DIGITS_TRAIN.model_copy(update={"epochs": 8, "lr": 1e-3})

# The paper's CIFAR ResNet schedule (torchprune training/cifar/resnet.yaml), also used for retraining.
CIFAR_RESNET = Recipe(
    epochs=182, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
    schedule="multistep", milestones=(91, 136), gamma=0.1, warmup_epochs=5, augment="crop-flip",
)

RECIPES: dict[str, tuple[Recipe, Recipe]] = {
    "digits": (DIGITS_TRAIN, DIGITS_RETRAIN),
    "cifar10": (CIFAR_RESNET, CIFAR_RESNET),
}


def default_recipes(dataset: str, model: str) -> tuple[Recipe, Recipe]:
    if dataset not in RECIPES:
        raise ValueError(f"no default recipe for dataset {dataset!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[dataset]

"""Models: the networks prunebench trains and prunes, each with a `ModelConfig` beside its builder
(`config`), registered with timm and under the `prunebench.models` entry points: the CIFAR-style
and small classifiers (`classifiers`) and the segmentation networks (`segmentation`).

Layer: models. May import: bench.core, bench.data.
"""

from __future__ import annotations

import difflib

import timm
from torch import nn

from bench.models.classifiers import (
    BENCH_MODELS,
    DIGITS_CNN,
    FASHION_CNN,
    RESNET20_CIFAR,
    RESNET20_CIFAR_A,
    RESNET56_CIFAR,
    RESNET56_CIFAR_A,
    RESNET110_CIFAR,
    RESNET110_CIFAR_A,
    VGG16_BN_CIFAR,
    VGG16BN,
    WRN16_8_CIFAR,
    CifarResNet,
    DigitsCNN,
    FashionCNN,
    WideResNet,
    digits_cnn,
    fashion_cnn,
    resnet20_cifar,
    resnet20_cifar_a,
    resnet56_cifar,
    resnet56_cifar_a,
    resnet110_cifar,
    resnet110_cifar_a,
    vgg16_bn_cifar,
    wrn16_8_cifar,
)


def create_model(name: str, num_classes: int, in_chans: int = 3, pretrained: bool = False) -> nn.Module:
    """``name`` from timm's registry (bench models or timm built-ins), randomly initialised or with
    timm's pretrained weights (fetched from the Hugging Face hub unless HF_HUB_OFFLINE=1 and cached)."""
    from bench.models.segmentation import SEGMENTATION_MODELS, create_segmentation_model

    if name in SEGMENTATION_MODELS:  # torchvision segmentation nets (DeepLabV3 ...), aux head included
        return create_segmentation_model(name, num_classes=num_classes, pretrained=pretrained)
    if not timm.is_model(name):
        matches = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" Close matches: {', '.join(matches)}." if matches else ""
        raise ValueError(
            f"Unknown model '{name}'.{hint} Bench models: {', '.join(BENCH_MODELS)}."
        )
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise RuntimeError(
            f"pretrained weights for {name!r} are not reachable ({type(exc).__name__}: {exc}); connect to the "
            "Hugging Face hub once (unset HF_HUB_OFFLINE) so timm caches them, or drop --pretrained"
        ) from exc


__all__ = [
    "create_model",
    "BENCH_MODELS",
    "CifarResNet",
    "DIGITS_CNN",
    "digits_cnn",
    "DigitsCNN",
    "FASHION_CNN",
    "fashion_cnn",
    "FashionCNN",
    "RESNET110_CIFAR",
    "resnet110_cifar",
    "RESNET110_CIFAR_A",
    "resnet110_cifar_a",
    "RESNET20_CIFAR",
    "resnet20_cifar",
    "RESNET20_CIFAR_A",
    "resnet20_cifar_a",
    "RESNET56_CIFAR",
    "resnet56_cifar",
    "RESNET56_CIFAR_A",
    "resnet56_cifar_a",
    "VGG16_BN_CIFAR",
    "vgg16_bn_cifar",
    "VGG16BN",
    "WideResNet",
    "WRN16_8_CIFAR",
    "wrn16_8_cifar",
]

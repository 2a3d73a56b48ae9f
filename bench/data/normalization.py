"""Per-channel input standardisation and the channel statistics of the supported data sets."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the dataset specs stay torch-free
    import torch
__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "channel_stats", "standardize"]

# The paper's CIFAR normalisation (torchprune training/cifar/common.yaml)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
# ImageNet statistics, also those of torchvision's segmentation weights
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def standardize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (x / 255 - mean) / std per channel, on the images' device."""
    import torch

    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.float().div_(255.0).sub_(mean_t).div_(std_t)  # in place: the same values, no temporaries


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (unbiased, at least 1e-3) of uint8 (N, C, H, W) images
    scaled to [0, 1]: the normalisation of a dataset spec that names none.

    Computed exactly, from each channel's integer histogram, and rounded once, so the statistics are
    the same bits on every CPU and at every thread count. A float32 reduction is not: its summation
    order follows the thread count (Fashion-MNIST seed 0's mean moved by one float32 ulp between one
    and two threads, and a parent trained on either differs)."""
    import torch

    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"channel_stats needs uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
    count = images.shape[0] * images.shape[2] * images.shape[3]
    means, stds = [], []
    for channel in images.unbind(1):
        histogram = torch.bincount(channel.reshape(-1), minlength=256).tolist()
        total = sum(value * n for value, n in enumerate(histogram))
        squares = sum(value * value * n for value, n in enumerate(histogram))
        means.append(total / (255 * count))  # int / int: the correctly rounded quotient
        variance = (count * squares - total * total) / (255 * 255 * count * max(count - 1, 1))
        stds.append(max(math.sqrt(variance), 1e-3))
    return tuple(means), tuple(stds)

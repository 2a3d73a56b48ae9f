"""Noise corruptions: gaussian_noise, shot_noise, impulse_noise, speckle_noise, uniform_noise.

Each is a :data:`~bench.corruptions.CorruptionFn` on float (N, C, H, W) batches in [0, 1],
applied element-wise (each channel separately), clamped to [0, 1]; ``level`` is one number.
"""

from __future__ import annotations

import torch

from bench.corruptions._exact import poisson
from bench.corruptions._levels import Level, scalar_level
from bench.corruptions._random import (
    Generators,
    rand_like,
    randn_like,
    uniform,
)

__all__ = ["gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise", "uniform_noise"]


def gaussian_noise(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Additive Gaussian noise ``x + N(0, level)``; ``level`` is the standard deviation sigma (float64)."""
    noisy = x.to(torch.float64) + scalar_level(level, "gaussian_noise") * randn_like(x, generator)
    return noisy.to(x.dtype).clamp_(0.0, 1.0)


def shot_noise(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Poisson noise: ``Poisson(x * level) / level`` with ``level`` photons at full intensity.

    Counts by inversion of exact Poisson tables (:func:`bench.corruptions._exact.poisson`, one
    float64 uniform per element, rates up to 700), not ``torch.poisson``, whose libm calls may
    differ between platforms.  The tables and the search run on the CPU (one distinct rate per
    grey level), so like jpeg_compression it reads the images on the host and cannot run on the
    ``meta`` device.
    """
    photons = scalar_level(level, "shot_noise")
    if photons <= 0:
        raise ValueError(f"shot_noise needs a positive photon count, got {photons}")
    rate = x.to(torch.float64) * photons
    uniforms = uniform(generator, x.shape[0], x.shape[1:], 0.0, 1.0, torch.device("cpu"))
    counts = poisson(rate.cpu(), uniforms).to(x.device)
    return (counts / photons).to(x.dtype).clamp_(0.0, 1.0)


def impulse_noise(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Salt and pepper: each element becomes 0 w.p. ``level/2`` and 1 w.p. ``level/2``.

    Follows skimage ``random_noise(mode='s&p', salt_vs_pepper=0.5)`` as the library calls it:
    every element (each channel separately) is replaced independently with probability
    ``level`` (the amount), half of the replacements by 0 and half by 1.
    """
    amount = scalar_level(level, "impulse_noise")
    u = rand_like(x, generator)
    salted = torch.where(u < amount, torch.ones_like(x), x)
    return torch.where(u < 0.5 * amount, torch.zeros_like(x), salted).clamp_(0.0, 1.0)


def speckle_noise(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Multiplicative Gaussian noise ``x + x * N(0, level)``; ``level`` is sigma (float64)."""
    x64 = x.to(torch.float64)
    noisy = x64 + x64 * (scalar_level(level, "speckle_noise") * randn_like(x, generator))
    return noisy.to(x.dtype).clamp_(0.0, 1.0)


def uniform_noise(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Additive uniform noise ``x + U(-level, level)``; ``level`` is the half width.

    Ours: not one of the CIFAR-10-C / ImageNet-C corruptions (the library has no equivalent).
    """
    half_width = scalar_level(level, "uniform_noise")
    return (x + half_width * (2.0 * rand_like(x, generator) - 1.0)).clamp_(0.0, 1.0)

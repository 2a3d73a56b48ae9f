"""Randomness of the corruptions: explicit torch generators, one per batch or one per image, and seeds.

Every corruption draws only from the ``generator`` it is given (the global torch RNG is never
used): one ``torch.Generator`` for the whole batch, or a sequence of N generators, one per
image.  Draws are made on the generator's device (:func:`corrupt` makes CPU generators) and then
moved to the images' device, so a seed gives the same numbers on every device.  With one generator per image, each image draws its own numbers, so its result does
not depend on which other images share the batch (:func:`bench.data.make_c.make_c` relies on it).
The random fields are drawn and processed in float64.  Uniform draws are torch's (integer bits
scaled by a power of two: exact everywhere); normal draws go through the engine's own Box-Muller
(:func:`bench.corruptions._exact.box_muller`), not ``torch.randn``, whose float32 path differs
between CPU instruction sets.

The draws follow the distributions of imagecorruptions 1.1.2 but come from torch, so results
equal the library's in distribution, never bit for bit.  The deterministic part of every
random corruption is therefore a private function that takes the draws explicitly
(``_glass_blur``, ``_snow``, ``_frost``, ``_fog``, ``_spatter``, ``_elastic`` and
:func:`~bench.corruptions._operators.motion_blur_at_angles`); the parity tests feed the
library's own numpy draws to them.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch

from bench.core.io import seed_for  # the one seed derivation, re-exported here
from bench.corruptions._exact import box_muller

__all__ = [
    "Generators",
    "draw",
    "generator_device",
    "generators_for_seed",
    "integers",
    "normal",
    "per_image_generators",
    "rand_like",
    "randn_like",
    "seed_for",
    "uniform",
]

Generators = torch.Generator | Sequence[torch.Generator]


def per_image_generators(generator: Generators, n: int) -> list[torch.Generator] | None:
    """None for a single generator, else the per-image generators (checked against N)."""
    if isinstance(generator, torch.Generator):
        return None
    generators = list(generator)
    if len(generators) != n:
        raise ValueError(f"got {len(generators)} generators for a batch of {n} images")
    return generators


def generator_device(generator: torch.Generator | None) -> torch.device:
    """Where a generator draws (the CPU for None)."""
    return torch.device("cpu") if generator is None else generator.device


def draw(
    generator: Generators,
    n: int,
    shape: Sequence[int],
    sampler: Callable[[torch.Generator | None, tuple[int, ...]], torch.Tensor],
) -> torch.Tensor:
    """(n, *shape) draws: one call on a single generator, or one (*shape) call per image generator.

    ``sampler(g, shape)`` draws on ``generator_device(g)``; the result stays there."""
    generators = per_image_generators(generator, n)
    if generators is None:
        return sampler(generator, (n, *shape))  # type: ignore[arg-type]
    if n == 0:
        return sampler(None, (0, *shape))
    return torch.stack([sampler(g, tuple(shape)) for g in generators])


def uniform(
    generator: Generators, n: int, shape: Sequence[int], low: float, high: float, device: torch.device
) -> torch.Tensor:
    """float64 uniform on ``[low, high)``, shape (n, *shape), on ``device``."""
    u = draw(generator, n, shape,
             lambda g, s: torch.rand(s, generator=g, device=generator_device(g), dtype=torch.float64))
    return (low + (high - low) * u).to(device)


def _standard_normal(g: torch.Generator | None, shape: tuple[int, ...]) -> torch.Tensor:
    """float64 standard normal draws by the engine's own Box-Muller (the same bits on every CPU)."""
    u = torch.rand((2, *shape), generator=g, device=generator_device(g), dtype=torch.float64)
    return box_muller(u[0], u[1])


def normal(
    generator: Generators, n: int, shape: Sequence[int], mean: float, std: float, device: torch.device
) -> torch.Tensor:
    """float64 normal(mean, std), shape (n, *shape), on ``device``."""
    return (mean + std * draw(generator, n, shape, _standard_normal)).to(device)


def integers(
    generator: Generators, n: int, shape: Sequence[int], low: int, high: int, device: torch.device
) -> torch.Tensor:
    """int64 uniform on ``[low, high)`` (numpy ``randint`` convention), shape (n, *shape), on ``device``."""
    drawn = draw(generator, n, shape, lambda g, s: torch.randint(low, high, s, generator=g, device=generator_device(g)))
    return drawn.to(device)


def randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal draws of x's shape, as float64 on x's device."""
    return draw(generator, x.shape[0], x.shape[1:], _standard_normal).to(x.device)


def rand_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Uniform ``[0, 1)`` draws of x's shape, dtype and device."""
    return draw(
        generator, x.shape[0], x.shape[1:],
        lambda g, s: torch.rand(s, generator=g, device=generator_device(g), dtype=x.dtype),
    ).to(x.device)


def generators_for_seed(seed: object, n: int) -> Generators:
    """One CPU generator for an integer seed, else one per image from a sequence of N seeds (CPU
    generators whatever the images' device: the draws are moved there, so results do not depend on
    the device's random number generator)."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return torch.Generator().manual_seed(int(seed))
    seeds = seed.tolist() if isinstance(seed, (torch.Tensor, np.ndarray)) else seed
    if not isinstance(seeds, Sequence) or isinstance(seeds, (str, bytes)):
        raise TypeError(f"seed must be an integer or a sequence of N integers, got {type(seed).__name__}")
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {n} images")
    return [torch.Generator().manual_seed(int(s)) for s in seeds]




"""Batched, seeded torch implementations of the 19 CIFAR-10-C / ImageNet-C corruptions, uniform_noise and MNIST-C's geometric ones.

Every corruption is a :data:`CorruptionFn` ``fn(x, level, generator) -> y``: ``x`` is a float32
batch (N, C, H, W) in [0, 1]; ``level`` is that corruption's full constant at one severity (a
number, or a tuple for the multi-parameter ones, whose fields each function's docstring names;
the CIFAR-10-C and ImageNet-C values are in :mod:`bench.corruptions.tables`); ``generator`` is
the only source of randomness (one ``torch.Generator`` for the batch, or one per image).
Outputs are clamped to [0, 1] and keep the input's shape and dtype.  :func:`corrupt` applies a
corruption by name to a uint8 batch with a seed (or one seed per image); :func:`seed_for`
derives stable seeds.

Semantics follow Hendrycks' ``make_cifar_c.py`` / ``make_imagenet_c.py`` as implemented in the
``imagecorruptions`` package (1.1.2), including its quirks; each corruption's docstring states
its deliberate choices and known differences.  Random corruptions match the library in
distribution, not bit for bit (see :mod:`bench.corruptions._random`).

Modules, by ImageNet-C's categories:

* :mod:`~bench.corruptions.noise`: gaussian_noise, shot_noise, impulse_noise, speckle_noise,
  uniform_noise (ours);
* :mod:`~bench.corruptions.blur`: gaussian_blur, defocus_blur, glass_blur, motion_blur, zoom_blur;
* :mod:`~bench.corruptions.weather`: snow, frost, fog, brightness, spatter;
* :mod:`~bench.corruptions.digital`: contrast, elastic_transform, pixelate, jpeg_compression,
  saturate, and MNIST-C's canny_edges;
* :mod:`~bench.corruptions.geometric`: MNIST-C's shear, scale, rotate, translate;
* :mod:`~bench.corruptions.overlay`: strokes after MNIST-C: stripe, dotted_line, zigzag;
* :mod:`~bench.corruptions.tables`: the per-severity constants;
* internals: ``_levels`` (constants), ``_random`` (generators, seeds), ``_operators`` (shared
  linear operators and sampling), ``_opencv`` (OpenCV routines re-implemented), ``_registry``
  (:data:`CORRUPTIONS` and :func:`corrupt`).

The names below load on first use (PEP 562), so that importing :mod:`bench.corruptions.tables`,
as ``bench --help`` does, does not import torch.

Layer: corruptions. May import: bench.core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.corruptions._levels import Level, normalize_level
    from bench.corruptions._random import Generators, seed_for
    from bench.corruptions._registry import (
        CORRUPTIONS,
        FAMILIES,
        RANDOM_CORRUPTIONS,
        CorruptionFn,
        corrupt,
    )
    from bench.corruptions.blur import (
        defocus_blur,
        gaussian_blur,
        glass_blur,
        motion_blur,
        zoom_blur,
    )
    from bench.corruptions.digital import (
        canny_edges,
        contrast,
        elastic_transform,
        jpeg_compression,
        pixelate,
        saturate,
    )
    from bench.corruptions.geometric import rotate, scale, shear, translate
    from bench.corruptions.noise import (
        gaussian_noise,
        impulse_noise,
        shot_noise,
        speckle_noise,
        uniform_noise,
    )
    from bench.corruptions.overlay import dotted_line, stripe, zigzag
    from bench.corruptions.weather import brightness, fog, frost, snow, spatter

__all__ = [
    "CORRUPTIONS",
    "FAMILIES",
    "RANDOM_CORRUPTIONS",
    "CorruptionFn",
    "Generators",
    "Level",
    "brightness",
    "canny_edges",
    "contrast",
    "corrupt",
    "defocus_blur",
    "dotted_line",
    "elastic_transform",
    "fog",
    "frost",
    "gaussian_blur",
    "gaussian_noise",
    "glass_blur",
    "impulse_noise",
    "jpeg_compression",
    "motion_blur",
    "normalize_level",
    "pixelate",
    "rotate",
    "saturate",
    "scale",
    "seed_for",
    "shear",
    "shot_noise",
    "snow",
    "spatter",
    "speckle_noise",
    "stripe",
    "translate",
    "uniform_noise",
    "zigzag",
    "zoom_blur",
]

# the submodules whose ``__all__`` hold the names above
_SUBMODULES = ("_levels", "_random", "_registry", "noise", "blur", "weather", "digital", "geometric", "overlay")


def __getattr__(name: str) -> Any:
    """Load a public name from its submodule on first access and keep it here."""
    if name in __all__:
        for submodule in _SUBMODULES:
            module = importlib.import_module(f"{__name__}.{submodule}")
            if name in module.__all__:
                value = globals()[name] = getattr(module, name)
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

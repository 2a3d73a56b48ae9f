"""The corruptions by name, and :func:`corrupt`, which applies one to a uint8 batch with a seed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from bench.core.devices import float64_device
from bench.corruptions import blur, digital, geometric, noise, overlay, weather
from bench.corruptions._levels import Level, normalize_level
from bench.corruptions._operators import to_uint8
from bench.corruptions._random import Generators, generators_for_seed

__all__ = ["CORRUPTIONS", "FAMILIES", "RANDOM_CORRUPTIONS", "CorruptionFn", "corrupt"]

CorruptionFn = Callable[[torch.Tensor, Level, Generators], torch.Tensor]

CORRUPTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "speckle_noise": noise.speckle_noise,
    "uniform_noise": noise.uniform_noise,
    "gaussian_blur": blur.gaussian_blur,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "contrast": digital.contrast,
    "brightness": weather.brightness,
    "saturate": digital.saturate,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    "elastic_transform": digital.elastic_transform,
    "spatter": weather.spatter,
    "shear": geometric.shear,
    "scale": geometric.scale,
    "rotate": geometric.rotate,
    "translate": geometric.translate,
    "stripe": overlay.stripe,
    "dotted_line": overlay.dotted_line,
    "zigzag": overlay.zigzag,
    "canny_edges": digital.canny_edges,
}

# corruption -> family, as ImageNet-C groups them (the module that defines each: noise, blur,
# weather, digital), plus MNIST-C's geometric and overlay (strokes) ones; figures plot one panel per family
FAMILIES: dict[str, str] = {name: fn.__module__.rsplit(".", 1)[-1] for name, fn in CORRUPTIONS.items()}

# corruptions whose output depends on the seed (the others ignore the generator)
RANDOM_CORRUPTIONS = frozenset(
    {
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "speckle_noise",
        "uniform_noise",
        "glass_blur",
        "motion_blur",
        "snow",
        "frost",
        "fog",
        "elastic_transform",
        "spatter",
        "shear",
        "rotate",
        "translate",
        "stripe",
        "dotted_line",
        "zigzag",
    }
)


def corrupt(images: torch.Tensor, name: str, level: Level, seed: int | Sequence[int]) -> torch.Tensor:
    """Apply corruption ``name`` with per-severity constant ``level`` to a uint8 (N, C, H, W) batch.

    ``level`` is a number or a tuple (see the corruption's docstring and
    :mod:`bench.corruptions.tables`).  Deterministic for a fixed ``seed``: randomness comes only
    from fresh CPU ``torch.Generator``s, one seeded with ``seed`` for the whole batch, or, if
    ``seed`` is a sequence of N integers, one per image (an image's result then does not depend
    on the rest of the batch); the corruption runs on the images' device, its draws moved there
    (on the CPU for MPS, which lacks the float64 the engine computes in: ``float64_device``).  The
    result is rounded to nearest (not truncated) back to uint8.  Unknown names raise ``ValueError``.
    """
    fn = CORRUPTIONS.get(name)
    if fn is None:
        raise ValueError(f"unknown corruption {name!r}; known corruptions: {', '.join(sorted(CORRUPTIONS))}")
    if images.dtype != torch.uint8:
        raise TypeError(f"corrupt expects uint8 images, got {images.dtype}")
    if images.dim() != 4:
        raise ValueError(f"corrupt expects an (N, C, H, W) batch, got shape {tuple(images.shape)}")
    constant = normalize_level(level)
    generator = generators_for_seed(seed, images.shape[0])
    if isinstance(generator, list) and len(generator) > PER_IMAGE_CHUNK:
        # each image draws from its own generator, so chunks give the same bytes as one batch, and
        # bound the memory: fog's 256 x 256 float64 fractals alone take 5 GB for 10,000 images at once
        return torch.cat([_apply(fn, images[i:i + PER_IMAGE_CHUNK], constant, generator[i:i + PER_IMAGE_CHUNK])
                          for i in range(0, len(generator), PER_IMAGE_CHUNK)])
    return _apply(fn, images, constant, generator)


PER_IMAGE_CHUNK = 256  # images per call when every image has its own seed


def _apply(fn: CorruptionFn, images: torch.Tensor, constant: Level, generator: Generators) -> torch.Tensor:
    engine = float64_device(images.device)
    with torch.no_grad():
        out = fn(images.to(engine, torch.float32) / 255.0, constant, generator)
    return to_uint8(out).to(images.device)

"""Geometric corruptions of MNIST-C (Mu & Gilmer 2019, google-research/mnist-c): shear, scale, rotate, translate.

Each is a :data:`~bench.corruptions.CorruptionFn` on float (N, C, H, W) batches in [0, 1]: an affine
warp like MNIST-C's ``skimage.transform.warp(x, inverse_map=AffineTransform(...))``, order 1
(bilinear), ``mode='constant'`` with 0 outside the image.  The map takes an output pixel
``(col, row)`` to its source ``A @ (col, row) + t``; shear, rotate and scale keep the image centre
``((W - 1) / 2, (H - 1) / 2)`` fixed (MNIST-C's 13.5 for 28 x 28).  shear and rotate turn either
way, translate shifts either way on each axis, with a sign drawn per image like MNIST-C's
``np.random.choice([-1, 1])``; scale is deterministic.  Sines and cosines come from
:func:`~bench.corruptions._exact.sin_cos_turns`, so the warps are the same on every machine.
"""

from __future__ import annotations

import math

import torch

from bench.corruptions._exact import sin_cos_turns
from bench.corruptions._levels import Level, scalar_level
from bench.corruptions._operators import bilinear_sample
from bench.corruptions._random import Generators, integers

__all__ = ["affine_warp", "rotate", "scale", "shear", "translate"]


def affine_warp(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Sample x at ``matrix @ (col, row) + offset`` per output pixel, bilinear, 0 outside.

    ``matrix`` (N, 2, 2) and ``offset`` (N, 2) in (col, row) order, float64; without ``offset``
    the image centre stays fixed."""
    n, _, h, w = x.shape
    matrix = matrix.to(torch.float64)
    centre = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], dtype=torch.float64)
    if offset is None:  # t = c - A c: MNIST-C's 13.5 * (1 - a1 - a2), 13.5 * (1 - b1 - b2)
        offset = centre - (matrix[:, :, 0] * centre[0] + matrix[:, :, 1] * centre[1])
    cols = torch.arange(w, dtype=torch.float64)[None, None, :]
    rows = torch.arange(h, dtype=torch.float64)[None, :, None]

    def source(axis: int) -> torch.Tensor:
        a, b, t = (v[:, None, None] for v in (matrix[:, axis, 0], matrix[:, axis, 1], offset[:, axis]))
        return a * cols + b * rows + t

    return bilinear_sample(x, source(1).to(x.device), source(0).to(x.device), "constant").clamp_(0.0, 1.0)


def _signs(generator: Generators, n: int, shape: tuple[int, ...] = ()) -> torch.Tensor:
    """float64 -1 or +1 per image (and per ``shape`` entry), uniform."""
    return integers(generator, n, shape, 0, 2, torch.device("cpu")).to(torch.float64) * 2.0 - 1.0


def shear(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Shear by ``level`` radians either way: ``AffineTransform(shear=s)`` as skimage defined it when
    MNIST-C was made (2019, skimage 0.15): ``A = [[1, -sin s], [0, cos s]]`` (skimage >= 0.19 makes it
    ``[[1, -tan s], [0, 1]]``).

    MNIST-C's constants: 0.2, 0.4, 0.6, 0.8, 1.0."""
    angle = scalar_level(level, "shear") * _signs(generator, x.shape[0])
    sin, cos = sin_cos_turns(angle / (2.0 * math.pi))
    matrix = torch.stack([torch.stack([torch.ones_like(sin), -sin], -1),
                          torch.stack([torch.zeros_like(sin), cos], -1)], -2)
    return affine_warp(x, matrix)


def rotate(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Rotate by ``level`` radians either way about the centre: ``A = [[cos, -sin], [sin, cos]]``.

    MNIST-C's constants: 0.2, 0.4, 0.6, 0.8, 1.0 (11 to 57 degrees)."""
    angle = scalar_level(level, "rotate") * _signs(generator, x.shape[0])
    sin, cos = sin_cos_turns(angle / (2.0 * math.pi))
    matrix = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    return affine_warp(x, matrix)


def scale(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Shrink about the centre: source ``level * (p - c) + c``, so the content is ``1 / level`` its size.

    MNIST-C's constants: 1 / 0.9, 1 / 0.8, 1 / 0.7, 1 / 0.6, 1 / 0.5."""
    factor = scalar_level(level, "scale")
    if factor <= 0:
        raise ValueError(f"scale needs a positive factor, got {factor}")
    return affine_warp(x, torch.eye(2, dtype=torch.float64).expand(x.shape[0], 2, 2) * factor)


def translate(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Shift by ``level`` pixels along each axis, each way at random: output pixel p shows source ``p + (dx, dy)``.

    MNIST-C's constants: 1, 2, 3, 4, 5 pixels."""
    offset = scalar_level(level, "translate") * _signs(generator, x.shape[0], (2,))
    return affine_warp(x, torch.eye(2, dtype=torch.float64).expand(x.shape[0], 2, 2), offset)

"""Blur corruptions: gaussian_blur, defocus_blur, glass_blur, motion_blur, zoom_blur.

Each is a :data:`~bench.corruptions.CorruptionFn` on float (N, C, H, W) batches in [0, 1],
clamped to [0, 1].  The linear blurs are separable operator products (see
:mod:`bench.corruptions._operators`).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from bench.corruptions._levels import Level, scalar_level, unpack_level
from bench.corruptions._operators import (
    apply_separable,
    clipped_zoom_operator,
    filter_operator,
    gather_pixels,
    gaussian_filter,
    gaussian_filter_scipy_order,
    gaussian_taps,
    kernel2d_terms,
    motion_blur_at_angles,
)
from bench.corruptions._random import Generators, integers, uniform

__all__ = ["defocus_blur", "gaussian_blur", "glass_blur", "motion_blur", "zoom_blur"]


def gaussian_blur(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Gaussian filter with sigma ``level`` over H, W; replicate borders, truncate 4.0.

    Equals skimage ``gaussian`` / scipy ``gaussian_filter`` with ``sigma=level`` over H and W,
    ``mode='nearest'`` and ``truncate=4.0``.
    """
    sigma = scalar_level(level, "gaussian_blur")
    if sigma <= 0:
        return x.clone().clamp_(0.0, 1.0)
    return gaussian_filter(x, sigma).clamp_(0.0, 1.0)


def _disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """imagecorruptions' ``disk()``: normalised binary disk, then a small anti-alias Gaussian."""
    if radius < 0:
        raise ValueError(f"defocus radius must be >= 0, got {radius}")
    grid: np.ndarray
    if radius <= 8:
        grid, blur_radius = np.arange(-8, 8 + 1), 1
    else:
        grid, blur_radius = np.arange(-radius, radius + 1), 2
    coords = torch.as_tensor(grid, dtype=torch.float64)
    disk = ((coords[:, None] ** 2 + coords[None, :] ** 2) <= radius**2).to(torch.float64)
    disk /= disk.sum()
    if alias_blur <= 0:
        return disk
    taps, offsets = gaussian_taps(alias_blur, blur_radius)
    smooth = filter_operator(taps, offsets, len(grid), "reflect")
    return apply_separable(disk, [(smooth, smooth)])  # smooth @ disk @ smooth.T, exactly


def defocus_blur(x: torch.Tensor, level: Level, generator: Generators, alias_blur: float = 0.5) -> torch.Tensor:
    """Correlation with the anti-aliased disk; ``level`` is ``(radius, alias_blur)`` or a bare radius.

    The kernel is the library's ``disk()``: a binary disk ``X**2 + Y**2 <= r**2`` on the grid
    ``L = arange(-8, 9)`` for ``r <= 8`` (``arange(-r, r + 1)`` above), normalised, then
    anti-aliased with a 3x3 (5x5 for ``r > 8``) Gaussian of sigma ``alias_blur`` with
    reflect-101 borders (``cv2.GaussianBlur``), and applied like ``cv2.filter2D`` (reflect-101
    borders, i.e. torch/numpy ``'reflect'``).  A bare radius uses ``alias_blur = 0.5``; any
    radius < 1 then yields the same kernel (a pure 3x3 Gaussian), so the CIFAR-10-C radii
    0.3/0.4/0.5 need their (radius, alias_blur) pairs, as in the tables.  The library's
    anti-alias blur uses reflect-101 borders on the kernel grid, which adds mass once the disk
    reaches within one pixel of the grid edge (radius >= 7): the kernel then sums to
    1.003-1.015 and brightens images slightly.  This quirk is kept for parity.
    """
    if isinstance(level, numbers.Real):
        radius = float(level)
    else:
        radius, alias_blur = unpack_level(level, "defocus_blur", ("radius", "alias_blur"))
    height, width = x.shape[-2:]
    terms = kernel2d_terms(_disk_kernel(radius, alias_blur), height, width, "reflect")
    return apply_separable(x, terms).clamp_(0.0, 1.0)


def _glass_sources(offsets: torch.Tensor, height: int, width: int, delta: int) -> torch.Tensor:
    """(N, H*W) source pixel of every pixel after the library's sequential in-place pixel copies.

    ``offsets`` (N, iterations, V, 2) holds ``(dx, dy)`` for the V visited pixels in visiting
    order.  Within one sweep, visiting p sets ``v[p] = current[target(p)]``, which is the new
    value of the target if it was visited earlier in the sweep and its value before the sweep
    otherwise; following those links to their end (pointer jumping) gives every pixel's
    source, and sweeps compose as index maps.  Links strictly decrease the visiting rank, so
    chains are shorter than V and ``V.bit_length()`` jumps reach every end (further jumps
    change nothing): a fixed count, with no read-back from the device.
    """
    n, iterations = offsets.shape[:2]
    pixels = height * width
    device = offsets.device
    rows = torch.arange(height - delta, delta, -1, device=device)
    cols = torch.arange(width - delta, delta, -1, device=device)
    visited = (rows[:, None] * width + cols[None, :]).flatten()
    rank = torch.full((pixels,), pixels, dtype=torch.long, device=device)
    rank[visited] = torch.arange(len(visited), device=device)
    identity = torch.arange(pixels, device=device).expand(n, pixels)
    total = identity.clone()
    for sweep in range(iterations):
        target = identity.clone()
        target[:, visited] = visited + offsets[:, sweep, :, 1] * width + offsets[:, sweep, :, 0]
        pointer = torch.where(rank[target] < rank, target, identity)
        for _ in range(len(visited).bit_length()):
            pointer = pointer.gather(1, pointer)
        total = total.gather(1, target.gather(1, pointer))
    return total


def _glass_blur(x: torch.Tensor, sigma: float, delta: int, offsets: torch.Tensor) -> torch.Tensor:
    """glass_blur with explicit ``(dx, dy)`` draws (N, iterations, V, 2); see :func:`glass_blur`."""
    h, w = x.shape[-2:]
    exact = torch.round(x.to(torch.float64) * 255.0) / 255.0  # the library starts from uint8 / 255
    quantized = torch.floor(gaussian_filter_scipy_order(exact, sigma) * 255.0).clamp_(0, 255)
    if offsets.shape[2]:
        quantized = gather_pixels(quantized, _glass_sources(offsets, h, w, delta))
    out = gaussian_filter_scipy_order(quantized / 255.0, sigma)
    return out.clamp_(0.0, 1.0).to(x.dtype)


def glass_blur(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Blur, locally scramble pixels ``iterations`` times within ``max_delta``, blur again.

    ``level`` is ``(sigma, max_delta, iterations[, swap_probability])``; MNIST-C's variant visits
    each pixel with probability 0.5 (``swap_probability``, default 1: every visit, as ImageNet-C).  Gaussian blur (sigma), truncation to
    uint8, then ``iterations`` sweeps over the pixels ``h = H - d ... d + 1``,
    ``w = W - d ... d + 1`` (descending, row-major) with ``(dx, dy)`` uniform in ``[-d, d - 1]``
    (numpy ``randint(-d, d)``), then the blur again.  The library's "swap"
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on numpy views is in fact a copy
    ``x[h, w] = x[h', w']`` (the second assignment writes back the value just copied), and it
    is sequential: a pixel may copy one that was already overwritten in the same sweep.  This
    is reproduced exactly, batched, by pointer jumping over the sweep's dependency chains.
    Both blurs follow scipy's own operation order in float64 (bit-identical), because the
    truncation in between makes flat regions sensitive to the last bit; the input is snapped
    to the uint8 grid first (the library starts from uint8).
    """
    sigma, delta_f, iterations_f, probability = unpack_level(
        level, "glass_blur", ("sigma", "max_delta", "iterations", "swap_probability"), (1.0,))
    delta, iterations = int(delta_f), int(iterations_f)
    if delta < 1 or iterations < 0 or not 0 <= probability <= 1:
        raise ValueError(f"glass_blur needs max_delta >= 1, iterations >= 0 and a probability in [0, 1], got {level!r}")
    n, _, h, w = x.shape
    visited = max(0, h - 2 * delta) * max(0, w - 2 * delta)
    offsets = integers(generator, n, (iterations, visited, 2), -delta, delta, x.device)
    if probability < 1:  # MNIST-C: each visit copies only if a coin says so (a (0, 0) offset copies nothing)
        copies = uniform(generator, n, (iterations, visited), 0.0, 1.0, x.device) < probability
        offsets = offsets * copies.unsqueeze(-1)
    return _glass_blur(x, sigma, delta, offsets)


def motion_blur(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """One-sided Gaussian motion blur ``(radius, sigma)`` at a uniform random angle in [-45, 45] degrees.

    imagecorruptions' python reimplementation of the original ImageMagick blur; see
    :func:`~bench.corruptions._operators.motion_blur_at_angles`.
    """
    radius, sigma = unpack_level(level, "motion_blur", ("radius", "sigma"))
    angles = uniform(generator, x.shape[0], (), -45.0, 45.0, torch.device("cpu"))  # the shift tables are built on the CPU
    return motion_blur_at_angles(x, int(radius), sigma, angles).clamp_(0.0, 1.0)


def zoom_blur(x: torch.Tensor, level: Level, generator: Generators, step: float = 0.01) -> torch.Tensor:
    """Mean of ``x`` and its central zooms at ``numpy.arange(1, end, step)``; level ``(end, step)`` or ``end``.

    The result is ``(x + sum_z clipped_zoom(x, z)) / (len(factors) + 1)`` where
    ``clipped_zoom`` takes the central ``ceil(H / z)`` crop, zooms it like
    ``scipy.ndimage.zoom(order=1)`` (linear interpolation, corner-aligned, output length
    ``round(ch * z)``) and keeps the top-left H x W, as imagecorruptions does (make_cifar_c.py
    keeps the centre instead; they differ by at most one pixel of shift).  The interpolation
    is built as exact 1-D operators instead of calling ``torch.nn.functional.interpolate``.
    """
    if isinstance(level, numbers.Real):
        end = float(level)
    else:
        end, step = unpack_level(level, "zoom_blur", ("end", "step"))
    factors = [float(z) for z in np.arange(1.0, end, step)]
    height, width = x.shape[-2:]
    scale = 1.0 / (len(factors) + 1)
    terms = [(torch.eye(height, dtype=torch.float64) * scale, torch.eye(width, dtype=torch.float64))]
    terms += [
        (clipped_zoom_operator(height, z) * scale, clipped_zoom_operator(width, z)) for z in factors
    ]
    return apply_separable(x, terms).clamp_(0.0, 1.0)

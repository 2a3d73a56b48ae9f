"""Strokes drawn over the image, after MNIST-C (Mu & Gilmer 2019, google-research/mnist-c): stripe,
dotted_line, zigzag.

Each is a :data:`~bench.corruptions.CorruptionFn` on float (N, C, H, W) batches in [0, 1], the same
strokes on every channel.  MNIST-C draws one stroke per image (or, for stripe, inverts two fixed side
bands); the severity here is how much is drawn: the stripe's width, the number of dotted lines or
zigzags, each drawn at random per image as MNIST-C draws its one.  Lines are MNIST-C's soft lines
(``line_from_points``): brightness ``clip(log(1 - d / 2.3) + 1, 0, 1)`` at vertical distance d from
the line, between its end columns, added to the image and clipped; the log is
:func:`~bench.corruptions._exact.log_unit`, so strokes are the same on every machine.
"""

from __future__ import annotations

import math

import torch

from bench.corruptions._exact import log_unit
from bench.corruptions._levels import Level, scalar_level
from bench.corruptions._operators import images_per_chunk
from bench.corruptions._random import Generators, integers

__all__ = ["dotted_line", "line_from_points", "stripe", "zigzag"]

_LINE_WIDTH = 2.3  # MNIST-C: distances clipped to [0, 2.3 - 1e-10], brightness log(1 - d / 2.3) + 1


def line_from_points(segments: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """MNIST-C's ``line_from_points(c0, r0, c1, r1)`` for (..., 4) float64 segments: (..., H, W) in [0, 1].

    The line through (c0, r0) and (c1, r1) (columns, rows), nonzero only in columns
    ``floor(c0) <= c < ceil(c1)``; a vertical segment (c0 == c1) draws nothing."""
    c0, r0, c1, r1 = (segments[..., i, None, None] for i in range(4))
    cols = torch.arange(width, dtype=torch.float64)[None, :]
    rows = torch.arange(height, dtype=torch.float64)[:, None]
    vertical = c1 == c0
    slope = (r1 - r0) / torch.where(vertical, 1.0, c1 - c0)
    distance = (rows - (slope * (cols - c0) + r0)).abs()
    # beyond 2.3 - 1e-10 the brightness is log(4e-11) + 1 < 0, clipped to 0: the log is needed only near the line
    near = (cols >= torch.floor(c0)) & (cols < torch.ceil(c1)) & ~vertical & (distance < _LINE_WIDTH - 1e-10)
    brightness = torch.zeros_like(distance)
    brightness[near] = (log_unit(1.0 - distance[near] / _LINE_WIDTH) + 1.0).clamp(0.0, 1.0)
    return brightness


def _count(level: Level, name: str) -> int:
    count = scalar_level(level, name)
    if count < 1 or count != int(count):
        raise ValueError(f"{name} needs a whole number of strokes >= 1, got {count}")
    return int(count)


def _draw(x: torch.Tensor, segments: torch.Tensor, keep_columns: torch.Tensor | None = None) -> torch.Tensor:
    """x plus the lines of (N, K, 4) ``segments`` (only ``keep_columns`` of them, if given) on every
    channel, clipped (MNIST-C adds and clips); drawn a chunk of images at a time (an image's strokes
    depend on its own segments only, so the chunk size does not change a byte)."""
    h, w = x.shape[-2:]
    strokes = torch.zeros(x.shape[0], 1, h, w, dtype=torch.float64)
    chunk = images_per_chunk(max(1, segments.shape[1]) * h * w * 8)  # the float64 (images, K, H, W) lines
    for start in range(0, x.shape[0], chunk):
        lines = line_from_points(segments[start : start + chunk], h, w)
        if keep_columns is not None:
            lines = torch.where(keep_columns, lines, 0.0)
        strokes[start : start + chunk, 0] = lines.sum(1)
    return (x.to(torch.float64) + strokes.to(x.device)).clamp(0.0, 1.0).to(x.dtype)


def stripe(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Invert one vertical band of ``level`` columns (``1 - x``) at a random position per image.

    MNIST-C inverts two fixed side bands 7 columns wide; here one band, its width the severity."""
    band = _count(level, "stripe")
    n, _, _, w = x.shape
    band = min(band, w)
    start = integers(generator, n, (), 0, w - band + 1, torch.device("cpu"))
    cols = torch.arange(w)[None, :]
    inside = ((cols >= start[:, None]) & (cols < start[:, None] + band)).to(x.device)[:, None, None, :]
    return torch.where(inside, 1.0 - x, x).clamp_(0.0, 1.0)


def dotted_line(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """``level`` dotted lines per image, each MNIST-C's: across the whole width between rows drawn
    uniformly in [0, H - 1), with columns ``2k .. 2k + 1`` dropped for even k (2 on, 2 off)."""
    count = _count(level, "dotted_line")
    n, _, h, w = x.shape
    rows = integers(generator, n, (count, 2), 0, h - 1, torch.device("cpu")).to(torch.float64)
    ends = torch.tensor([0.0, w - 1.0], dtype=torch.float64).expand(n, count, 2)
    segments = torch.stack([ends[..., 0], rows[..., 0], ends[..., 1], rows[..., 1]], -1)
    return _draw(x, segments, keep_columns=(torch.arange(w) // 2) % 2 == 1)


def _zigzag_points(c0: float, c1: float, r0: float, r1: float, a: float = 2.0, b: float = 2.0) -> list[tuple[float, float]]:
    """MNIST-C's zigzag vertices from (c0, r0) towards (c1, r1): teeth of length ``a`` and height ``b``
    along the straight line, rotated onto it (cos and sin of its angle from the slope, exactly)."""
    length = math.hypot(c1 - c0, r1 - r0)  # MNIST-C's (c1 - c0) / cos(arctan(slope))
    cos, sin = (c1 - c0) / length, (r1 - r0) / length
    points = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((length - a) // (2 * a)) + 1):
        r_i = (-1) ** i * b
        points.append(((2 * i + 1) * a, r_i))
    last = (2 * a) * (length // (2 * a))
    if length != last:
        points.append((length, r_i / (2 * (length - last))))  # MNIST-C's closing vertex, as it computes it
    return [(cos * c - sin * r + c0, sin * c + cos * r + r0) for c, r in points]


def zigzag(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """``level`` zigzags per image, each MNIST-C's: from column 2 to W - 3, starting at a row drawn in
    [0, H - 1) and ending up to 5 rows above or 4 below it, teeth 2 pixels long and high."""
    count = _count(level, "zigzag")
    n, _, h, w = x.shape
    start = integers(generator, n, (count,), 0, h - 1, torch.device("cpu"))
    rise = integers(generator, n, (count,), -5, 5, torch.device("cpu"))
    segments = []
    for image_start, image_rise in zip(start.tolist(), rise.tolist()):
        for r0, dr in zip(image_start, image_rise):
            points = _zigzag_points(2.0, w - 3.0, float(r0), float(r0 + dr))
            segments.append([[*p, *q] for p, q in zip(points, points[1:])])
    most = max((len(s) for s in segments), default=0)
    padded = [s + [[0.0, 0.0, 0.0, 0.0]] * (most - len(s)) for s in segments]  # c0 == c1: draws nothing
    table = torch.tensor(padded, dtype=torch.float64).reshape(n, count * most, 4) if n else torch.zeros(0, 0, 4)
    return _draw(x, table)

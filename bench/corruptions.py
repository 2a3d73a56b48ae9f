"""Batched, seeded torch implementations of the 19 CIFAR-10-C / ImageNet-C corruptions.

Every corruption is a :data:`CorruptionFn` ``fn(x, level, generator) -> y`` where ``x`` is a
float32 batch ``(N, C, H, W)`` in ``[0, 1]``, ``level`` is the full per-severity constant of
that corruption (a number, or a tuple for the multi-parameter ones; the tables are in
:mod:`bench.corruption_tables`) and ``generator`` is the only source of randomness (the global
torch RNG is never used): one ``torch.Generator`` for the whole batch, or a sequence of N
generators, one per image (each image then draws its own random numbers, so its result does
not depend on which other images share the batch; :func:`bench.make_c.make_c` relies on it).
Outputs are clamped to ``[0, 1]`` and keep the input shape and dtype.  :func:`corrupt` wraps
this for uint8 batches and a seed (or one seed per image).

Constants (``level``), severity by severity, as in the tables:

* a number: ``gaussian_noise`` (sigma), ``shot_noise`` (photons), ``impulse_noise`` (amount),
  ``speckle_noise`` (sigma), ``uniform_noise`` (half width, ours), ``gaussian_blur`` (sigma),
  ``contrast`` (factor), ``brightness`` (+V), ``pixelate`` (scale), ``jpeg_compression``
  (quality);
* ``defocus_blur`` ``(radius, alias_blur)`` or a bare radius (alias_blur then 0.5);
  ``zoom_blur`` ``(end, step)`` or a bare end (step then 0.01);
* ``glass_blur`` ``(sigma, max_delta, iterations)``; ``motion_blur`` ``(radius, sigma)``;
  ``fog`` ``(strength, decay)``; ``frost`` ``(image_weight, frost_weight, texture_scale)``;
  ``saturate`` ``(factor, offset)``; ``snow`` ``(mean, std, zoom, threshold, blur_radius,
  blur_sigma, blend)``; ``spatter`` ``(mean, std, sigma, threshold, intensity, mud)``;
  ``elastic_transform`` ``(alpha, sigma, affine)`` as fractions of the image size.

Semantics follow Hendrycks' ``make_cifar_c.py`` / ``make_imagenet_c.py`` as implemented in the
``imagecorruptions`` package (1.1.2), including its quirks.  Deliberate choices and known
differences:

* Randomness: the same distributions as the library, drawn from torch, so results are equal
  in distribution, never bit-identical to numpy-seeded references.  The deterministic part of
  every random corruption is a private function that takes the random draws explicitly
  (``_glass_blur``, ``_motion_blur``, ``_snow``, ``_frost``, ``_fog``/``_plasma_fractal``,
  ``_spatter``, ``_elastic``); tests feed the library's own numpy draws to them.
  ``impulse_noise`` follows skimage ``random_noise(mode='s&p', salt_vs_pepper=0.5)``: every
  element (each channel separately) is replaced independently with probability ``level``,
  half of the replacements by 0 and half by 1.  ``uniform_noise`` (not in the library) is
  ``x + U(-level, level)``.
* ``gaussian_blur`` equals skimage ``gaussian`` / scipy ``gaussian_filter`` with
  ``sigma=level`` over H and W, ``mode='nearest'`` (replicate) and ``truncate=4.0``.
* ``defocus_blur``: the kernel is the library's ``disk()``: a binary disk
  ``X**2 + Y**2 <= r**2`` on the grid ``L = arange(-8, 9)`` for ``r <= 8`` (``arange(-r, r + 1)``
  above), normalised, then anti-aliased with a 3x3 (5x5 for ``r > 8``) Gaussian of sigma
  ``alias_blur`` with reflect-101 borders (``cv2.GaussianBlur``), and applied like
  ``cv2.filter2D`` (reflect-101 borders, i.e. torch/numpy ``'reflect'``).  A bare radius uses
  ``alias_blur = 0.5``; any radius < 1 then yields the same kernel (a pure 3x3 Gaussian), so
  the CIFAR-10-C radii 0.3/0.4/0.5 need their (radius, alias_blur) pairs, as in the tables.
  The library's anti-alias blur uses reflect-101 borders on the kernel grid, which adds mass
  once the disk reaches within one pixel of the grid edge (radius >= 7): the kernel then sums
  to 1.003-1.015 and brightens images slightly.  This quirk is kept for parity.
* ``glass_blur``: Gaussian blur (sigma), truncation to uint8, then ``iterations`` sweeps over
  the pixels ``h = H - d ... d + 1``, ``w = W - d ... d + 1`` (descending, row-major) with
  ``(dx, dy)`` uniform in ``[-d, d - 1]`` (numpy ``randint(-d, d)``), then the blur again.
  The library's "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on numpy views is in fact a
  copy ``x[h, w] = x[h', w']`` (the second assignment writes back the value just copied), and
  it is sequential: a pixel may copy one that was already overwritten in the same sweep.
  This is reproduced exactly, batched, by pointer jumping over the sweep's dependency chains.
  Both blurs follow scipy's own operation order in float64 (bit-identical), because the
  truncation in between makes flat regions sensitive to the last bit; the input is snapped
  to the uint8 grid first (the library starts from uint8).
* ``motion_blur`` / ``snow``: the originals used ImageMagick; this follows imagecorruptions'
  python reimplementation: a one-sided Gaussian kernel of width ``2 * radius + 1`` along a
  line at a random angle (uniform in [-45, 45] degrees for motion_blur, [-135, -45] for snow),
  made of whole-pixel shifts with replicated borders; shifts that would leave the image end the
  kernel (the library's ``break``), without renormalising.  ``snow`` draws a Gaussian layer,
  zooms its centre like ``scipy.ndimage.zoom(order=1)`` (kept at the full zoomed size for the
  motion blur and cropped to the top-left H x W afterwards, like the library), zeroes values
  below the threshold, motion-blurs it, rounds it to 8 bits and adds it and its 180-degree
  rotation to ``blend * x + (1 - blend) * max(x, 1.5 * grey(x) + 0.5)`` (grey: cv2's
  0.299/0.587/0.114 for 3 channels, the channel itself otherwise).
* ``frost``: ``image_weight * x + frost_weight * texture`` with a random crop of one of the
  first five frost textures (the library's ``randint(5)``: frost6 is never used), crop origin
  uniform over the library's ``randint`` ranges.  The textures are read from the installed
  ``imagecorruptions`` package's data folder (located with ``importlib.util.find_spec``,
  never imported).  ``texture_scale`` < 1 reproduces make_cifar_c.py's
  ``cv2.resize(fx=fy=texture_scale)`` (bilinear; 0.2 samples every fifth pixel exactly);
  otherwise imagecorruptions' rule: factor ``texture_scale * max(1, H / th, W / tw)``, size
  rounded up, bicubic (cv2 ``INTER_CUBIC``: a = -0.75, replicated borders, 11-bit fixed-point
  weights; cv2's SIMD rounding can differ by one grey level on the texture).  A CIFAR-style
  scale whose texture would not cover the image falls back to the imagecorruptions rule at 1.1.
  1-channel images use the library's grey texture ``0.2989 B + 0.587 G + 0.114 R`` (its
  ``rgb2gray`` applied to cv2's BGR order).
* ``fog``: the library's diamond-square ``plasma_fractal`` (side: next power of two >= max(H, W),
  start ``wibble`` 100 divided by ``decay`` per level, noise ``wibble * U(-wibble, wibble)``),
  in float64, per image; ``(x + strength * fractal) * max(x) / (max(x) + strength)``.
* ``spatter``: a Gaussian liquid layer blurred (sigma) and thresholded.  ``mud`` = 0 (water):
  the library's OpenCV pipeline on the 8-bit layer (``uint8`` cast wraps above 255 like numpy),
  re-implemented batched: Canny (50, 150; 3x3 Sobel, replicated borders, L1 magnitude, OpenCV's
  fixed-point non-maximum suppression, 8-connected hysteresis), the 5x5 chamfer distance
  transform of ``DIST_L2`` (float32 steps 1, 1.4, 2.1969), truncation at 20,
  3x3 box blur, uint8 cast, ``equalizeHist``, the emboss kernel ``[[-2,-1,0],[-1,1,1],[0,1,2]]``
  and another box blur (reflect-101 borders throughout); the layer times that texture,
  normalised to max 1 (an image without any liquid stays unchanged where the library would
  produce NaN), times ``intensity``, tinted (175, 238, 238)/255 and added.  ``mud`` = 1: a
  Gaussian-blurred (sigma = ``intensity``) binary mask, values < 0.8 dropped, blends towards
  mud brown (63, 42, 20)/255.  1-channel images get the library's grey versions.
* ``elastic_transform``: lengths are fractions of the image size (``make_cifar_c.py`` uses
  multiples of IMSIZE = 32; imagecorruptions uses ``alpha = 250 * a * 0.005 * H`` and
  ``sigma = 0.01 * (H, W)``).  If ``affine`` > 0, a random affine warp first (make_cifar_c.py:
  three points around the centre jittered by ``U(-affine * H, affine * H)``, ``cv2.warpAffine``
  bilinear with reflect-101 borders; the points are
  built (H, W)-ordered and read by cv2 as (x, y), a no-op for square images).  Then
  displacement fields ``alpha * H * gaussian(U(-1, 1), sigma * (H, W), mode='reflect',
  truncate=3)`` and bilinear resampling like ``scipy.ndimage.map_coordinates(order=1,
  mode='reflect')`` (half-sample symmetric borders).  imagecorruptions has no affine step.
* ``saturate``: HSV saturation ``S' = clip(S * factor + offset, 0, 1)``, computed exactly
  without the HSV round trip: each channel becomes ``V - S' * V * (V - c) / (V - min)``; grey
  pixels have hue 0 (skimage), so they become ``(V, V (1 - S'), V (1 - S'))``.  Channel counts
  other than 3 are grey and stay unchanged (the library's 1-channel result).
* ``contrast``: ``(x - m) * level + m`` with ``m`` the per-image, per-channel mean over H, W.
* ``brightness``: ``V += level`` in HSV, clipped, for 3-channel input.  Because every RGB
  component equals ``V * g(H, S)``, this is computed exactly as ``x * V'/V``; black pixels
  (V = 0) become grey ``(V', V', V')``, as the HSV round trip gives.  Any other channel count
  is treated as grey levels: ``x + level``, clipped (the library's 1-channel branch).
* ``pixelate``: PIL ``BOX`` downsampling to ``int(H * level) x int(W * level)`` (truncation,
  like the library; at least 1) and nearest upsampling (PIL's ``BOX`` upsampling picks the
  same source pixel, so this covers both library versions).  Both steps reproduce PIL's
  resampling weights as matrices, but PIL rounds the small intermediate image to uint8 and
  this does not, so results can differ from PIL by one grey level.
* ``jpeg_compression``: PIL JPEG encode/decode at ``quality=int(level)`` with PIL's default
  settings, one image at a time (the only non-batched corruption).  The input is first
  rounded to uint8; 1-channel images go through RGB and back to ``L`` like the library.
* ``zoom_blur``: the zoom factors are ``numpy.arange(1, end, step)``; the result is
  ``(x + sum_z clipped_zoom(x, z)) / (len(factors) + 1)`` where ``clipped_zoom`` takes the
  central ``ceil(H / z)`` crop, zooms it like ``scipy.ndimage.zoom(order=1)`` (linear
  interpolation, corner-aligned, output length ``round(ch * z)``) and keeps the top-left
  H x W, as imagecorruptions does (make_cifar_c.py keeps the centre instead; they differ by
  at most one pixel of shift).  The interpolation is built as exact 1-D operators instead
  of calling ``torch.nn.functional.interpolate``.

Implementation: all blurs, zooms and pixelation are linear and separable per term, so they
are written as sums of ``A @ x @ B.T`` with small H x H / W x W operator matrices that fold
in the boundary handling (two GEMMs per term; much faster on CPU than depthwise
``conv2d`` with large kernels, and valid for kernels larger than the image).  Non-separable
kernels (the defocus disk) are split exactly by SVD into a short sum of separable terms.
When there are many terms on a small image (zoom_blur), they are summed into one dense
(H*W, H*W) operator and applied as a single GEMM.  Operators are built in float64 per call
(no caching; building costs well under a millisecond at 32x32 except zoom_blur, ~5 ms).
Per-image shifts and resampling (motion blur, glass, elastic) are gathers; the random fields
are drawn and processed in float64.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import math
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "CORRUPTIONS",
    "RANDOM_CORRUPTIONS",
    "CorruptionFn",
    "Generators",
    "Level",
    "brightness",
    "contrast",
    "corrupt",
    "defocus_blur",
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
    "saturate",
    "seed_for",
    "shot_noise",
    "snow",
    "spatter",
    "speckle_noise",
    "uniform_noise",
    "zoom_blur",
]

Level = float | tuple[float, ...]
Generators = torch.Generator | Sequence[torch.Generator]
CorruptionFn = Callable[[torch.Tensor, Level, Generators], torch.Tensor]

# A separable term (A, B) maps an (..., H, W) image x to A @ x @ B.T.
SeparableTerm = tuple[torch.Tensor, torch.Tensor]

_SEED_DOMAIN = b"prunebench.corruptions.seed_for.v1"


# ---------------------------------------------------------------- operator helpers


def _fold_index(index: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map out-of-range sample positions back into ``[0, n)`` for a boundary mode.

    ``'replicate'`` clamps to the edge (scipy 'nearest'); ``'reflect'`` mirrors without
    repeating the edge sample (``dcb|abcd|cba``: cv2 BORDER_REFLECT_101, scipy 'mirror');
    ``'symmetric'`` mirrors repeating it (``cba|abcd|dcb``: scipy 'reflect'); all for
    arbitrarily large offsets.
    """
    if mode == "replicate":
        return index.clamp(0, n - 1)
    if mode == "reflect":
        if n == 1:
            return torch.zeros_like(index)
        period = 2 * (n - 1)
        folded = index.remainder(period)
        return torch.where(folded < n, folded, period - folded)
    if mode == "symmetric":
        folded = index.remainder(2 * n)
        return torch.where(folded < n, folded, 2 * n - 1 - folded)
    raise ValueError(f"unknown boundary mode {mode!r}")


def _filter_operator(weights: torch.Tensor, offsets: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """(n, n) float64 matrix M with ``(M @ v)[i] = sum_k weights[k] * v[fold(i + offsets[k])]``."""
    rows = torch.arange(n).unsqueeze(1).expand(n, len(offsets))
    cols = _fold_index(rows + offsets.unsqueeze(0), n, mode)
    operator = torch.zeros(n, n, dtype=torch.float64)
    operator.index_put_((rows, cols), weights.to(torch.float64).expand(n, -1), accumulate=True)
    return operator


def _interpolation_operator(positions: torch.Tensor, n: int) -> torch.Tensor:
    """(len(positions), n) float64 matrix of linear interpolation at fractional source positions."""
    positions = positions.to(torch.float64).clamp(0, n - 1)
    lower = positions.floor().long()
    frac = positions - lower
    upper = (lower + 1).clamp(max=n - 1)
    rows = torch.arange(len(positions))
    operator = torch.zeros(len(positions), n, dtype=torch.float64)
    operator.index_put_((rows, lower), 1.0 - frac, accumulate=True)
    operator.index_put_((rows, upper), frac, accumulate=True)
    return operator


_DENSE_MAX_PIXELS = 4096  # a dense (H*W, H*W) operator is at most 64 MiB in float32


def _apply_separable(x: torch.Tensor, terms: Sequence[SeparableTerm]) -> torch.Tensor:
    """``sum_r A_r @ x @ B_r.T`` over the last two dims of ``x``.

    Few terms: two GEMMs per term.  Many terms on a small image (zoom_blur): the terms are
    summed into one dense (H*W, H*W) operator ``sum_r kron(A_r, B_r)`` and applied as a
    single GEMM, which is cheaper once ``len(terms) * (H + W) >= H * W``.  Operators may be
    rectangular (resampling to another size); the dense path is only used for square ones.
    """
    if not terms:
        raise ValueError("no separable terms given")
    height, width = x.shape[-2:]
    pixels = height * width
    square = all(a.shape == (height, height) and b.shape == (width, width) for a, b in terms)
    if square and pixels <= _DENSE_MAX_PIXELS and len(terms) * (height + width) >= pixels:
        rows_ops = torch.stack([a for a, _ in terms])
        cols_ops = torch.stack([b for _, b in terms])
        dense = torch.einsum("rik,rjl->ijkl", rows_ops, cols_ops).reshape(pixels, pixels)
        dense = dense.to(device=x.device, dtype=x.dtype)
        return torch.matmul(x.reshape(*x.shape[:-2], pixels), dense.T).reshape(x.shape)
    out: torch.Tensor | None = None
    for rows_op, cols_op in terms:
        rows_op = rows_op.to(device=x.device, dtype=x.dtype)
        cols_op = cols_op.to(device=x.device, dtype=x.dtype)
        term = torch.matmul(rows_op, torch.matmul(x, cols_op.T))
        out = term if out is None else out.add_(term)
    assert out is not None
    return out


def _kernel2d_terms(kernel: torch.Tensor, height: int, width: int, mode: str) -> list[SeparableTerm]:
    """Exact separable split (SVD) of a centred 2-D correlation kernel into row/column operators."""
    kernel = kernel.to(torch.float64)
    k_rows, k_cols = kernel.shape
    row_offsets = torch.arange(k_rows) - k_rows // 2
    col_offsets = torch.arange(k_cols) - k_cols // 2
    u, s, vh = torch.linalg.svd(kernel)
    keep = s > s[0] * 1e-10
    return [
        (
            _filter_operator(u[:, r] * s[r], row_offsets, height, mode),
            _filter_operator(vh[r], col_offsets, width, mode),
        )
        for r in torch.nonzero(keep).flatten().tolist()
    ]


def _gaussian_taps(sigma: float, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised sampled Gaussian on ``[-radius, radius]`` (scipy / cv2 kernel) and its offsets."""
    offsets = torch.arange(-radius, radius + 1)
    taps = torch.exp(-0.5 * offsets.to(torch.float64) ** 2 / sigma**2)
    return taps / taps.sum(), offsets


def _gaussian_operator(n: int, sigma: float, mode: str, truncate: float) -> torch.Tensor:
    """(n, n) operator of ``scipy.ndimage.gaussian_filter1d``; sigma ~ 0 is the identity (as in scipy)."""
    if sigma <= 1e-15:
        return torch.eye(n, dtype=torch.float64)
    taps, offsets = _gaussian_taps(sigma, int(truncate * sigma + 0.5))
    return _filter_operator(taps, offsets, n, mode)


def _gaussian_filter(
    x: torch.Tensor, sigma: float | tuple[float, float], mode: str = "replicate", truncate: float = 4.0
) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` over the last two dims; sigma a number or (rows, cols)."""
    sigma_rows, sigma_cols = (sigma, sigma) if isinstance(sigma, numbers.Real) else sigma
    height, width = x.shape[-2:]
    term = (
        _gaussian_operator(height, float(sigma_rows), mode, truncate),
        _gaussian_operator(width, float(sigma_cols), mode, truncate),
    )
    return _apply_separable(x, [term])


def _gaussian_filter_scipy_order(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """``gaussian_filter(mode='nearest')`` over H then W, in scipy's own operation order.

    scipy's symmetric-kernel loop computes ``x[i] * w0`` and then adds
    ``(x[i - j] + x[i + j]) * w_j`` from the outermost tap inwards; doing the same element-wise
    operations in float64 (taps computed with numpy exactly like scipy) is bit-identical.
    """
    if sigma <= 1e-15:
        return x.clone()
    radius = int(truncate * float(sigma) + 0.5)
    grid = np.arange(-radius, radius + 1)
    taps = np.exp(-0.5 / (float(sigma) * float(sigma)) * grid**2)
    taps = (taps / taps.sum()).tolist()
    for dim in (-2, -1):
        n = x.shape[dim]
        index = torch.arange(-radius, n + radius, device=x.device).clamp(0, n - 1)
        padded = x.index_select(dim, index)
        out = padded.narrow(dim, radius, n) * taps[radius]
        for j in range(radius, 0, -1):
            pair = padded.narrow(dim, radius - j, n) + padded.narrow(dim, radius + j, n)
            out = out + pair * taps[radius - j]
        x = out
    return x


def _gather_pixels(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``out[n, c, p] = x[n, c, source[n, p]]`` over flattened pixels; x (N, C, H, W), source (N, H*W)."""
    n, c, h, w = x.shape
    index = source.reshape(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)


def _bilinear_sample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: str) -> torch.Tensor:
    """Linear interpolation of x (N, C, H, W) at per-image source positions rows/cols (N, H, W).

    The two integer taps of each axis are folded into the image by ``mode`` (``'symmetric'``
    is ``scipy.ndimage.map_coordinates(order=1, mode='reflect')``, ``'reflect'`` is cv2's
    BORDER_REFLECT_101).
    """
    n, _, h, w = x.shape
    rows, cols = rows.to(torch.float64), cols.to(torch.float64)
    row0, col0 = rows.floor(), cols.floor()
    frac_r = (rows - row0).to(x.dtype).unsqueeze(1)
    frac_c = (cols - col0).to(x.dtype).unsqueeze(1)
    row0, col0 = row0.long(), col0.long()
    r_a, r_b = _fold_index(row0, h, mode), _fold_index(row0 + 1, h, mode)
    c_a, c_b = _fold_index(col0, w, mode), _fold_index(col0 + 1, w, mode)

    def take(r: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        return _gather_pixels(x, (r * w + col).reshape(n, h * w))

    top = take(r_a, c_a) * (1 - frac_c) + take(r_a, c_b) * frac_c
    bottom = take(r_b, c_a) * (1 - frac_c) + take(r_b, c_b) * frac_c
    return top * (1 - frac_r) + bottom * frac_r


# -------------------------------------------------------------- randomness helpers


def _generator_list(generator: Generators, n: int) -> list[torch.Generator] | None:
    """None for a single generator, else the per-image generators (checked against N)."""
    if isinstance(generator, torch.Generator):
        return None
    generators = list(generator)
    if len(generators) != n:
        raise ValueError(f"got {len(generators)} generators for a batch of {n} images")
    return generators


def _sample(
    generator: Generators,
    n: int,
    shape: Sequence[int],
    draw: Callable[[torch.Generator | None, tuple[int, ...]], torch.Tensor],
) -> torch.Tensor:
    """(n, *shape) draws: one call on a single generator, or one (*shape) call per image generator."""
    generators = _generator_list(generator, n)
    if generators is None:
        return draw(generator, (n, *shape))  # type: ignore[arg-type]
    if n == 0:
        return draw(None, (0, *shape))
    return torch.stack([draw(g, tuple(shape)) for g in generators])


def _uniform(
    generator: Generators, n: int, shape: Sequence[int], low: float, high: float, device: torch.device
) -> torch.Tensor:
    """float64 uniform on ``[low, high)``, shape (n, *shape)."""
    u = _sample(generator, n, shape, lambda g, s: torch.rand(s, generator=g, device=device, dtype=torch.float64))
    return low + (high - low) * u


def _normal(
    generator: Generators, n: int, shape: Sequence[int], mean: float, std: float, device: torch.device
) -> torch.Tensor:
    """float64 normal(mean, std), shape (n, *shape)."""
    z = _sample(generator, n, shape, lambda g, s: torch.randn(s, generator=g, device=device, dtype=torch.float64))
    return mean + std * z


def _integers(
    generator: Generators, n: int, shape: Sequence[int], low: int, high: int, device: torch.device
) -> torch.Tensor:
    """int64 uniform on ``[low, high)`` (numpy ``randint`` convention), shape (n, *shape)."""
    return _sample(generator, n, shape, lambda g, s: torch.randint(low, high, s, generator=g, device=device))


def _randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    return _sample(
        generator, x.shape[0], x.shape[1:], lambda g, s: torch.randn(s, generator=g, device=x.device, dtype=x.dtype)
    )


def _rand_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    return _sample(
        generator, x.shape[0], x.shape[1:], lambda g, s: torch.rand(s, generator=g, device=x.device, dtype=x.dtype)
    )


# ------------------------------------------------------------------ constants


def _constant(level: Level, name: str, fields: tuple[str, ...]) -> tuple[float, ...]:
    """Unpack a multi-parameter per-severity constant, naming the fields when it does not fit."""
    if isinstance(level, numbers.Real) or len(level) != len(fields):
        raise ValueError(f"{name} takes a constant ({', '.join(fields)}), got {level!r}")
    return tuple(float(v) for v in level)


def _scalar(level: Level, name: str) -> float:
    if not isinstance(level, numbers.Real):
        raise TypeError(f"{name} takes a single number per severity, got {level!r}")
    return float(level)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """cv2 ``RGB2GRAY`` (0.299, 0.587, 0.114) for 3 channels, else each channel is its own grey."""
    if x.shape[-3] != 3:
        return x
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


# ------------------------------------------------------------------------ noises


def gaussian_noise(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Additive Gaussian noise with standard deviation ``level``."""
    return (x + _scalar(level, "gaussian_noise") * _randn_like(x, generator)).clamp_(0.0, 1.0)


def shot_noise(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Poisson noise: ``Poisson(x * level) / level`` with ``level`` photons at full intensity."""
    photons = _scalar(level, "shot_noise")
    if photons <= 0:
        raise ValueError(f"shot_noise needs a positive photon count, got {photons}")
    rate = x * photons
    generators = _generator_list(generator, x.shape[0])
    if generators is None:
        counts = torch.poisson(rate, generator=generator)  # type: ignore[arg-type]
    elif generators:
        counts = torch.stack([torch.poisson(r, generator=g) for r, g in zip(rate, generators)])
    else:
        counts = rate.clone()
    return (counts / photons).clamp_(0.0, 1.0)


def impulse_noise(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Salt and pepper: each element becomes 0 w.p. ``level/2`` and 1 w.p. ``level/2``."""
    amount = _scalar(level, "impulse_noise")
    u = _rand_like(x, generator)
    salted = torch.where(u < amount, torch.ones_like(x), x)
    return torch.where(u < 0.5 * amount, torch.zeros_like(x), salted).clamp_(0.0, 1.0)


def speckle_noise(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Multiplicative Gaussian noise: ``x + x * N(0, level)``."""
    return (x + x * (_scalar(level, "speckle_noise") * _randn_like(x, generator))).clamp_(0.0, 1.0)


def uniform_noise(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Additive uniform noise ``U(-level, level)``."""
    half_width = _scalar(level, "uniform_noise")
    return (x + half_width * (2.0 * _rand_like(x, generator) - 1.0)).clamp_(0.0, 1.0)


# ------------------------------------------------------------------------- blurs


def gaussian_blur(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Gaussian filter with sigma ``level`` over H, W; replicate borders, truncate 4.0."""
    sigma = _scalar(level, "gaussian_blur")
    if sigma <= 0:
        return x.clone().clamp_(0.0, 1.0)
    return _gaussian_filter(x, sigma).clamp_(0.0, 1.0)


def _disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """imagecorruptions' ``disk()``: normalised binary disk, then a small anti-alias Gaussian."""
    if radius < 0:
        raise ValueError(f"defocus radius must be >= 0, got {radius}")
    if radius <= 8:
        grid, blur_radius = np.arange(-8, 8 + 1), 1
    else:
        grid, blur_radius = np.arange(-radius, radius + 1), 2
    coords = torch.as_tensor(grid, dtype=torch.float64)
    disk = ((coords[:, None] ** 2 + coords[None, :] ** 2) <= radius**2).to(torch.float64)
    disk /= disk.sum()
    if alias_blur <= 0:
        return disk
    taps, offsets = _gaussian_taps(alias_blur, blur_radius)
    smooth = _filter_operator(taps, offsets, len(grid), "reflect")
    return smooth @ disk @ smooth.T


def defocus_blur(x: torch.Tensor, level: Level, generator: Generators, alias_blur: float = 0.5) -> torch.Tensor:
    """Correlation with the anti-aliased disk; ``level`` is ``(radius, alias_blur)`` or a bare radius."""
    if isinstance(level, numbers.Real):
        radius = float(level)
    else:
        radius, alias_blur = _constant(level, "defocus_blur", ("radius", "alias_blur"))
    height, width = x.shape[-2:]
    terms = _kernel2d_terms(_disk_kernel(radius, alias_blur), height, width, "reflect")
    return _apply_separable(x, terms).clamp_(0.0, 1.0)


def _glass_sources(offsets: torch.Tensor, height: int, width: int, delta: int) -> torch.Tensor:
    """(N, H*W) source pixel of every pixel after the library's sequential in-place pixel copies.

    ``offsets`` (N, iterations, V, 2) holds ``(dx, dy)`` for the V visited pixels in visiting
    order.  Within one sweep, visiting p sets ``v[p] = current[target(p)]``, which is the new
    value of the target if it was visited earlier in the sweep and its value before the sweep
    otherwise; following those links to their end (pointer jumping, log2(V) rounds) gives
    every pixel's source, and sweeps compose as index maps.
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
        while True:
            jumped = pointer.gather(1, pointer)
            if torch.equal(jumped, pointer):
                break
            pointer = jumped
        total = total.gather(1, target.gather(1, pointer))
    return total


def _glass_blur(x: torch.Tensor, sigma: float, delta: int, offsets: torch.Tensor) -> torch.Tensor:
    """glass_blur with explicit ``(dx, dy)`` draws (N, iterations, V, 2); see the module notes."""
    h, w = x.shape[-2:]
    exact = torch.round(x.to(torch.float64) * 255.0) / 255.0  # the library starts from uint8 / 255
    quantized = torch.floor(_gaussian_filter_scipy_order(exact, sigma) * 255.0).clamp_(0, 255)
    if offsets.shape[2]:
        quantized = _gather_pixels(quantized, _glass_sources(offsets, h, w, delta))
    out = _gaussian_filter_scipy_order(quantized / 255.0, sigma)
    return out.clamp_(0.0, 1.0).to(x.dtype)


def glass_blur(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Blur, locally scramble pixels ``iterations`` times within ``max_delta``, blur again."""
    sigma, delta_f, iterations_f = _constant(level, "glass_blur", ("sigma", "max_delta", "iterations"))
    delta, iterations = int(delta_f), int(iterations_f)
    if delta < 1 or iterations < 0:
        raise ValueError(f"glass_blur needs max_delta >= 1 and iterations >= 0, got {level!r}")
    n, _, h, w = x.shape
    visited = max(0, h - 2 * delta) * max(0, w - 2 * delta)
    offsets = _integers(generator, n, (iterations, visited, 2), -delta, delta, x.device)
    return _glass_blur(x, sigma, delta, offsets)


def _motion_kernel(radius: int, sigma: float) -> torch.Tensor:
    """imagecorruptions' one-sided Gaussian motion kernel of width ``2 * radius + 1``, normalised."""
    taps = torch.arange(2 * radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    return kernel / kernel.sum()


def _motion_blur(x: torch.Tensor, radius: int, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """imagecorruptions' ``_motion_blur`` with one angle (degrees) per image; x (N, C, H, W).

    Tap i is the image shifted by ``(-ceil(i * sin(a) - 0.5), -ceil(i * cos(a) - 0.5))``
    (rows, cols) with replicated borders, weighted by the kernel; the first shift that reaches
    the image size ends the sum for that image.
    """
    n, c, h, w = x.shape
    kernel = _motion_kernel(radius, sigma)
    width_k = len(kernel)
    taps = torch.arange(width_k, dtype=torch.float64, device=x.device)
    radians = torch.deg2rad(angles.to(device=x.device, dtype=torch.float64))
    point_rows, point_cols = width_k * torch.sin(radians), width_k * torch.cos(radians)
    hypot = torch.hypot(point_rows, point_cols)
    shift_rows = -torch.ceil(taps[None, :] * point_rows[:, None] / hypot[:, None] - 0.5).long()
    shift_cols = -torch.ceil(taps[None, :] * point_cols[:, None] / hypot[:, None] - 0.5).long()
    inside = (shift_rows.abs() < h) & (shift_cols.abs() < w)
    keep = torch.cumprod(inside.long(), dim=1).bool()
    weights = (kernel.to(x.device)[None, :] * keep).to(x.dtype)
    base_rows = torch.arange(h, device=x.device)
    base_cols = torch.arange(w, device=x.device)
    out = torch.zeros_like(x)
    for i in range(width_k):
        if not bool(keep[:, i].any()):
            break
        rows = (base_rows[None, :] - shift_rows[:, i : i + 1]).clamp_(0, h - 1)
        cols = (base_cols[None, :] - shift_cols[:, i : i + 1]).clamp_(0, w - 1)
        shifted = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
        shifted = shifted.gather(3, cols[:, None, None, :].expand(n, c, h, w))
        out.add_(weights[:, i, None, None, None] * shifted)
    return out


def motion_blur(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """One-sided Gaussian motion blur ``(radius, sigma)`` at a uniform random angle in [-45, 45] degrees."""
    radius, sigma = _constant(level, "motion_blur", ("radius", "sigma"))
    angles = _uniform(generator, x.shape[0], (), -45.0, 45.0, x.device)
    return _motion_blur(x, int(radius), sigma, angles).clamp_(0.0, 1.0)


def _clipped_zoom_operator(n: int, zoom: float) -> torch.Tensor:
    """(n, n) operator of one axis of imagecorruptions' ``clipped_zoom`` (scipy zoom, order 1)."""
    crop = math.ceil(n / float(zoom))
    top = (n - crop) // 2
    zoomed_len = round(crop * zoom)
    ratio = (crop - 1) / (zoomed_len - 1) if zoomed_len != 1 else 1.0
    positions = torch.arange(min(n, zoomed_len), dtype=torch.float64) * ratio
    operator = torch.zeros(n, n, dtype=torch.float64)
    operator[: len(positions), top : top + crop] = _interpolation_operator(positions, crop)
    return operator


def _zoom_full_operator(n: int, zoom: float) -> torch.Tensor:
    """(round(ceil(n / z) * z), n) operator: scipy zoom (order 1) of the central crop, untrimmed."""
    crop = math.ceil(n / float(zoom))
    top = (n - crop) // 2
    zoomed_len = round(crop * zoom)
    ratio = (crop - 1) / (zoomed_len - 1) if zoomed_len != 1 else 1.0
    positions = torch.arange(zoomed_len, dtype=torch.float64) * ratio
    operator = torch.zeros(zoomed_len, n, dtype=torch.float64)
    operator[:, top : top + crop] = _interpolation_operator(positions, crop)
    return operator


def zoom_blur(x: torch.Tensor, level: Level, generator: Generators, step: float = 0.01) -> torch.Tensor:
    """Mean of ``x`` and its central zooms at ``numpy.arange(1, end, step)``; level ``(end, step)`` or ``end``."""
    if isinstance(level, numbers.Real):
        end = float(level)
    else:
        end, step = _constant(level, "zoom_blur", ("end", "step"))
    factors = [float(z) for z in np.arange(1.0, end, step)]
    height, width = x.shape[-2:]
    scale = 1.0 / (len(factors) + 1)
    terms = [(torch.eye(height, dtype=torch.float64) * scale, torch.eye(width, dtype=torch.float64))]
    terms += [
        (_clipped_zoom_operator(height, z) * scale, _clipped_zoom_operator(width, z)) for z in factors
    ]
    return _apply_separable(x, terms).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------- weather


def _snow(x: torch.Tensor, level: tuple[float, ...], layer: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """snow with explicit draws: ``layer`` (N, H, W) ~ normal(mean, std), ``angles`` (N,) degrees."""
    _, _, zoom, threshold, radius, sigma, blend = level
    h, w = x.shape[-2:]
    term = (_zoom_full_operator(h, zoom), _zoom_full_operator(w, zoom))
    flakes = _apply_separable(layer.to(torch.float64), [term])
    flakes = torch.where(flakes < threshold, torch.zeros_like(flakes), flakes).clamp_(0.0, 1.0)
    flakes = _motion_blur(flakes.unsqueeze(1), int(radius), sigma, angles)
    flakes = (torch.round(flakes * 255.0) / 255.0)[:, :, :h, :w].to(x.dtype)
    base = blend * x + (1.0 - blend) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return (base + flakes + flakes.flip(-2, -1)).clamp_(0.0, 1.0)


def snow(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Zoomed, thresholded, motion-blurred Gaussian flakes over a brightened image."""
    constant = _constant(
        level, "snow", ("mean", "std", "zoom", "threshold", "blur_radius", "blur_sigma", "blend")
    )
    n, _, h, w = x.shape
    layer = _normal(generator, n, (h, w), constant[0], constant[1], x.device)
    angles = _uniform(generator, n, (), -135.0, -45.0, x.device)
    return _snow(x, constant, layer, angles)


_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
_FROST_USED = 5  # the library draws randint(5): frost6 is never used


def _frost_dir() -> Path:
    """The frost textures of the installed imagecorruptions package, found without importing it."""
    try:
        spec = importlib.util.find_spec("imagecorruptions")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / "frost"
        if all((folder / name).is_file() for name in _FROST_FILES[:_FROST_USED]):
            return folder
    raise FileNotFoundError(
        "the frost corruption needs the frost texture images shipped with the imagecorruptions "
        "package (read from its data folder; the package itself is never imported): "
        "pip install imagecorruptions==1.1.2"
    )


@functools.cache
def _frost_texture(index: int) -> torch.Tensor:
    """uint8 RGB (3, th, tw) frost texture ``index`` (alpha dropped, like cv2.imread)."""
    with Image.open(_frost_dir() / _FROST_FILES[index]) as image:
        array = np.array(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """cv2 ``interpolateCubic`` (a = -0.75) for fractions t: (..., 4) weights of taps -1, 0, 1, 2."""
    a = -0.75
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return torch.stack([w0, w1, w2, 1 - w0 - w1 - w2], dim=-1)


def _cv2_resize_operator(n_in: int, n_out: int, src_per_dst: float, cubic: bool) -> torch.Tensor:
    """(n_out, n_in) cv2.resize weights along one axis, scaled by 2048 and rounded (11-bit fixed point).

    Source position ``(d + 0.5) * src_per_dst - 0.5`` (as float32, like cv2); taps outside the
    image are replicated from the edge.  Bilinear taps are clamped to the edge with weight 1.
    """
    position = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * src_per_dst - 0.5).to(torch.float32)
    start = torch.floor(position)
    frac = (position - start).to(torch.float64)
    start = start.long()
    if cubic:
        weights = _cubic_weights(frac.to(torch.float32).to(torch.float64))
        taps = start[:, None] + torch.arange(-1, 3)[None, :]
    else:
        below = start < 0
        above = start >= n_in - 1
        frac = torch.where(below | above, torch.zeros_like(frac), frac)
        start = torch.where(below, torch.zeros_like(start), torch.where(above, torch.full_like(start, n_in - 1), start))
        weights = torch.stack([1 - frac, frac], dim=-1)
        taps = start[:, None] + torch.arange(0, 2)[None, :]
    fixed = torch.round(weights * 2048.0)
    operator = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)[:, None].expand_as(taps)
    operator.index_put_((rows, taps.clamp(0, n_in - 1)), fixed, accumulate=True)
    return operator


def _resize_texture(texture: torch.Tensor, size: tuple[int, int], src_per_dst: tuple[float, float], cubic: bool) -> torch.Tensor:
    """uint8 (3, th, tw) -> uint8 (3, *size) like cv2.resize on uint8 (fixed point, rounded)."""
    rows_op = _cv2_resize_operator(texture.shape[1], size[0], src_per_dst[0], cubic)
    cols_op = _cv2_resize_operator(texture.shape[2], size[1], src_per_dst[1], cubic)
    total = rows_op @ texture.to(torch.float64) @ cols_op.T  # exact integers (< 2**53)
    return torch.floor((total + 2.0**21) / 2.0**22).clamp_(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=32)
def _frost_textures(height: int, width: int, scale: float) -> tuple[torch.Tensor, ...]:
    """The five usable frost textures resized for H x W images (see the module notes)."""
    textures = []
    for index in range(_FROST_USED):
        texture = _frost_texture(index)
        th, tw = texture.shape[1:]
        size = (round(th * scale), round(tw * scale))
        if scale < 1 and size[0] > height and size[1] > width:  # make_cifar_c.py: cv2.resize(fx=fy=scale)
            textures.append(_resize_texture(texture, size, (1.0 / scale, 1.0 / scale), cubic=False))
            continue
        factor = (scale if scale >= 1 else 1.1) * max(1.0, height / th, width / tw)  # imagecorruptions
        size = (math.ceil(th * factor), math.ceil(tw * factor))
        src_per_dst = (1.0 / (size[0] / th), 1.0 / (size[1] / tw))
        textures.append(_resize_texture(texture, size, src_per_dst, cubic=True))
    return tuple(textures)


def _frost(
    x: torch.Tensor,
    image_weight: float,
    frost_weight: float,
    textures: Sequence[torch.Tensor],
    index: torch.Tensor,
    origin: torch.Tensor,
) -> torch.Tensor:
    """frost with explicit draws: texture ``index`` (N,) and crop ``origin`` (N, 2) (row, col)."""
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"frost supports 1 or 3 channels, got {c}")
    if n == 0:
        return x.clone()
    crops = torch.stack(
        [textures[i][:, top : top + h, left : left + w] for i, (top, left) in zip(index.tolist(), origin.tolist())]
    ).to(device=x.device, dtype=x.dtype)
    if c == 1:  # the library's rgb2gray on cv2's BGR channel order
        crops = 0.2989 * crops[:, 2:3] + 0.5870 * crops[:, 1:2] + 0.1140 * crops[:, 0:1]
    return (image_weight * x + frost_weight * (crops / 255.0)).clamp_(0.0, 1.0)


def frost(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Blend with a random crop of a frost texture: ``image_weight * x + frost_weight * frost``."""
    image_weight, frost_weight, scale = _constant(level, "frost", ("image_weight", "frost_weight", "texture_scale"))
    n, _, h, w = x.shape
    textures = _frost_textures(h, w, scale)
    index = _integers(generator, n, (), 0, _FROST_USED, x.device).cpu()
    u = _uniform(generator, n, (2,), 0.0, 1.0, x.device).cpu()
    sizes = torch.tensor([list(t.shape[1:]) for t in textures], dtype=torch.float64)
    limits = sizes[index] - torch.tensor([h, w], dtype=torch.float64)  # randint(0, size - H) ranges
    origin = torch.floor(u * limits).long()
    return _frost(x, image_weight, frost_weight, textures, index, origin)


def _plasma_fractal(
    n: int, mapsize: int, decay: float, uniform: Callable[[float, float, tuple[int, ...]], torch.Tensor]
) -> torch.Tensor:
    """The library's diamond-square ``plasma_fractal``, (n, mapsize, mapsize) float64 in [0, 1].

    ``uniform(low, high, shape)`` returns (n, *shape) float64 draws; it is called in the
    library's order (squares, then the two diamond sets, per level).
    """
    if mapsize < 1 or mapsize & (mapsize - 1):
        raise ValueError(f"plasma fractal size must be a power of two, got {mapsize}")
    maps = torch.zeros(n, mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        noise = uniform(-wibble, wibble, tuple(total.shape[1:])).to(torch.float64).cpu()
        return total / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        total = corners + torch.roll(corners, -1, dims=1)
        total = total + torch.roll(total, -1, dims=2)
        maps[:, half::step, half::step] = wibbled_mean(total)
        centres = maps[:, half::step, half::step]
        corners = maps[:, 0::step, 0::step]
        left = (centres + torch.roll(centres, 1, dims=1)) + (corners + torch.roll(corners, -1, dims=2))
        maps[:, 0::step, half::step] = wibbled_mean(left)
        top = (centres + torch.roll(centres, 1, dims=2)) + (corners + torch.roll(corners, -1, dims=1))
        maps[:, half::step, 0::step] = wibbled_mean(top)
        step //= 2
        wibble /= decay
    maps -= maps.amin(dim=(1, 2), keepdim=True)
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, maps / torch.where(peak > 0, peak, 1.0), 0.0)  # 1x1: flat


def _fog(x: torch.Tensor, strength: float, fractal: torch.Tensor) -> torch.Tensor:
    """fog with an explicit fractal (N, M, M), M >= H, W."""
    h, w = x.shape[-2:]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    foggy = x + strength * fractal[:, None, :h, :w].to(device=x.device, dtype=x.dtype)
    return (foggy * peak / (peak + strength)).clamp_(0.0, 1.0)


def fog(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Add a plasma fractal of ``strength`` (roughness ``decay``), then rescale to the image's maximum."""
    strength, decay = _constant(level, "fog", ("strength", "decay"))
    n, _, h, w = x.shape
    mapsize = 1 if max(h, w) == 0 else 2 ** (max(h, w) - 1).bit_length()

    def uniform(low: float, high: float, shape: tuple[int, ...]) -> torch.Tensor:
        return _uniform(generator, n, shape, low, high, x.device)

    return _fog(x, strength, _plasma_fractal(n, mapsize, decay, uniform))


# ----------------------------------------------------------------- colour / misc


def contrast(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Scale deviations from the per-image, per-channel mean by ``level``."""
    factor = _scalar(level, "contrast")
    means = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - means) * factor + means).clamp_(0.0, 1.0)


def brightness(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Add ``level`` to HSV value (3 channels) or to the grey level (other channel counts)."""
    shift = _scalar(level, "brightness")
    if x.shape[-3] != 3:
        return (x + shift).clamp_(0.0, 1.0)
    value = x.amax(dim=-3, keepdim=True)
    new_value = (value + shift).clamp(0.0, 1.0)
    lit = value > 0
    ratio = torch.where(lit, new_value / torch.where(lit, value, torch.ones_like(value)), 0.0)
    return torch.where(lit, x * ratio, new_value).clamp_(0.0, 1.0)


def saturate(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """HSV saturation ``S * factor + offset`` (clipped); exact, without the HSV round trip."""
    factor, offset = _constant(level, "saturate", ("factor", "offset"))
    if x.shape[-3] != 3:
        return x.clone().clamp_(0.0, 1.0)
    value = x.amax(dim=-3, keepdim=True)
    chroma = value - x.amin(dim=-3, keepdim=True)
    lit = value > 0
    saturation = torch.where(lit, chroma / torch.where(lit, value, torch.ones_like(value)), 0.0)
    new_saturation = (saturation * factor + offset).clamp(0.0, 1.0)
    coloured = chroma > 0
    # (V - c) / (V - min): 0 for the largest channel, 1 for the smallest; hue 0 for grey pixels
    position = (value - x) / torch.where(coloured, chroma, torch.ones_like(chroma))
    hue_zero = torch.tensor([0.0, 1.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    position = torch.where(coloured, position, hue_zero)
    return (value - new_saturation * value * position).clamp_(0.0, 1.0)


def _pil_box_operator(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of PIL's ``Image.BOX`` resampling along one axis."""
    scale = n_in / n_out
    filter_scale = max(scale, 1.0)
    support = 0.5 * filter_scale
    centers = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    lo = (centers - support + 0.5).floor().clamp(min=0)
    hi = (centers + support + 0.5).floor().clamp(max=n_in)
    pos = torch.arange(n_in, dtype=torch.float64)
    arg = (pos[None, :] - centers[:, None] + 0.5) / filter_scale
    inside = (pos[None, :] >= lo[:, None]) & (pos[None, :] < hi[:, None])
    weights = (inside & (arg > -0.5) & (arg <= 0.5)).to(torch.float64)
    return weights / weights.sum(dim=1, keepdim=True)


def _pil_nearest_operator(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) selection matrix of PIL's ``Image.NEAREST`` resize along one axis.

    PIL (ImagingScaleAffine) tabulates the source positions by repeated addition in double,
    ``p_0 = scale / 2``, ``p_{i+1} = p_i + scale``, and truncates; the accumulated rounding
    decides exact ties (e.g. 16 -> 40), so it is reproduced step by step.
    """
    scale = n_in / n_out
    positions, position = [], 0.5 * scale
    for _ in range(n_out):
        positions.append(int(position))
        position += scale
    source = torch.tensor(positions, dtype=torch.long)
    operator = torch.zeros(n_out, n_in, dtype=torch.float64)
    operator[torch.arange(n_out), source.clamp(max=n_in - 1)] = 1.0
    return operator


def _pixelate_operator(n: int, level: float) -> torch.Tensor:
    small = max(1, int(n * level))
    return _pil_nearest_operator(small, n) @ _pil_box_operator(n, small)


def pixelate(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Box-downsample by ``level`` (PIL BOX, size truncated) and upsample back (nearest)."""
    scale = _scalar(level, "pixelate")
    height, width = x.shape[-2:]
    term = (_pixelate_operator(height, scale), _pixelate_operator(width, scale))
    return _apply_separable(x, [term]).clamp_(0.0, 1.0)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8, rounding to nearest."""
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode/decode one (H, W, C) uint8 image with PIL; C is 1 or 3."""
    grey = image.shape[2] == 1
    pil = Image.fromarray(image[:, :, 0]).convert("RGB") if grey else Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    decoded = Image.open(buffer)
    decoded = decoded.convert("L") if grey else decoded.convert("RGB")
    out = np.asarray(decoded, dtype=np.uint8)
    return out[:, :, None] if grey else out


def jpeg_compression(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """PIL JPEG round trip at quality ``int(level)``, per image (1 or 3 channels)."""
    quality = int(_scalar(level, "jpeg_compression"))
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality must be in [1, 100], got {level}")
    if x.shape[-3] not in (1, 3):
        raise ValueError(f"jpeg_compression supports 1 or 3 channels, got {x.shape[-3]}")
    images = _to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()
    decoded = np.stack([_jpeg_roundtrip(image, quality) for image in images]) if len(images) else images
    out = torch.from_numpy(decoded).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0
    return out.clamp_(0.0, 1.0)


def _affine_sources(jitter: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source (rows, cols) of cv2.warpAffine for make_cifar_c.py's jittered three-point affine.

    ``jitter`` (N, 3, 2) float32 is added to the points; cv2 inverts the fitted affine and
    samples float images at the exact source positions (OpenCV 5; older versions snapped them
    to 1/32 pixel).
    """
    n = jitter.shape[0]
    centre = (float(height // 2), float(width // 2))
    size = float(min(height, width) // 3)
    source_points = torch.tensor(
        [[centre[0] + size, centre[1] + size], [centre[0] + size, centre[1] - size], [centre[0] - size, centre[1] - size]],
        dtype=torch.float32,
    )
    target_points = (source_points[None] + jitter.cpu().to(torch.float32)).to(torch.float64)
    design = torch.cat([source_points.to(torch.float64), torch.ones(3, 1, dtype=torch.float64)], dim=1)
    forward = torch.linalg.solve(design.expand(n, 3, 3), target_points).transpose(1, 2)  # (N, 2, 3)
    linear_inv = torch.linalg.inv(forward[:, :, :2])
    inverse = torch.cat([linear_inv, -linear_inv @ forward[:, :, 2:]], dim=2)  # dst (x, y) -> src (x, y)
    xs = torch.arange(width, dtype=torch.float64)[None, None, :]
    ys = torch.arange(height, dtype=torch.float64)[None, :, None]
    cols = inverse[:, 0, 0, None, None] * xs + inverse[:, 0, 1, None, None] * ys + inverse[:, 0, 2, None, None]
    rows = inverse[:, 1, 0, None, None] * xs + inverse[:, 1, 1, None, None] * ys + inverse[:, 1, 2, None, None]
    return rows.to(jitter.device), cols.to(jitter.device)


def _elastic(
    x: torch.Tensor,
    level: tuple[float, float, float],
    jitter: torch.Tensor | None,
    noise_x: torch.Tensor,
    noise_y: torch.Tensor,
) -> torch.Tensor:
    """elastic_transform with explicit draws: affine ``jitter`` (N, 3, 2) in pixels (or None) and
    displacement noise ``noise_x``/``noise_y`` (N, H, W) uniform in [-1, 1]."""
    alpha, sigma, _ = level
    h, w = x.shape[-2:]
    if jitter is not None:
        rows, cols = _affine_sources(jitter, h, w)
        x = _bilinear_sample(x, rows, cols, "reflect")
    noise = torch.stack([noise_x, noise_y]).to(device=x.device, dtype=torch.float64)
    field = _gaussian_filter(noise, (sigma * h, sigma * w), mode="symmetric", truncate=3.0) * (alpha * h)
    field = field.to(torch.float32).to(torch.float64)  # the library keeps float32 displacements
    base_rows = torch.arange(h, dtype=torch.float64, device=x.device)[None, :, None]
    base_cols = torch.arange(w, dtype=torch.float64, device=x.device)[None, None, :]
    return _bilinear_sample(x, base_rows + field[1], base_cols + field[0], "symmetric").clamp_(0.0, 1.0)


def elastic_transform(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Optional random affine, then a smooth random displacement field (fractions of the image size)."""
    constant = _constant(level, "elastic_transform", ("alpha", "sigma", "affine"))
    n, _, h, w = x.shape
    jitter = None
    if constant[2] > 0:
        spread = constant[2] * h
        jitter = _uniform(generator, n, (3, 2), -spread, spread, x.device).to(torch.float32)
    noise_x = _uniform(generator, n, (h, w), -1.0, 1.0, x.device)
    noise_y = _uniform(generator, n, (h, w), -1.0, 1.0, x.device)
    return _elastic(x, constant, jitter, noise_x, noise_y)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- spatter


def _padded(x: torch.Tensor, pad: int, mode: str, fill: float | None = None) -> torch.Tensor:
    """Pad the last two dims of x by ``pad``: with ``fill`` if given, else by index folding (``mode``)."""
    h, w = x.shape[-2:]
    if fill is not None:
        out = torch.full((*x.shape[:-2], h + 2 * pad, w + 2 * pad), fill, dtype=x.dtype, device=x.device)
        out[..., pad : pad + h, pad : pad + w] = x
        return out
    rows = _fold_index(torch.arange(-pad, h + pad, device=x.device), h, mode)
    cols = _fold_index(torch.arange(-pad, w + pad, device=x.device), w, mode)
    return x[..., rows, :][..., cols]


def _window(padded: torch.Tensor, pad: int, dr: int, dc: int, h: int, w: int) -> torch.Tensor:
    """The H x W view of a padded map shifted by (dr, dc): ``out[r, c] = map[r + dr, c + dc]``."""
    return padded[..., pad + dr : pad + dr + h, pad + dc : pad + dc + w]


def _canny(image: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """cv2.Canny(image, low, high) on integer (N, H, W) images in 0..255: bool edge map.

    3x3 Sobel with replicated borders, L1 magnitude, OpenCV's fixed-point sector test for
    non-maximum suppression (zero magnitude outside; ``>`` before and ``>=`` after the pixel
    along the gradient, but ``>`` on both sides diagonally), ``m > low`` candidates, ``m > high``
    seeds and 8-connected hysteresis.
    """
    h, w = image.shape[-2:]
    p = _padded(image.long(), 1, "replicate")

    def at(dr: int, dc: int) -> torch.Tensor:
        return _window(p, 1, dr, dc, h, w)

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    magnitude = gx.abs() + gy.abs()
    m = _padded(magnitude, 1, "", fill=0)

    def nb(dr: int, dc: int) -> torch.Tensor:
        return _window(m, 1, dr, dc, h, w)

    tg22 = 13573  # int(tan(22.5 deg) * 2**15 + 0.5)
    ax, ay = gx.abs(), gy.abs() << 15
    tg22x = ax * tg22
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg22x + (ax << 16))
    same_sign = (gx ^ gy) >= 0
    local_max = torch.where(
        horizontal,
        (magnitude > nb(0, -1)) & (magnitude >= nb(0, 1)),
        torch.where(
            vertical,
            (magnitude > nb(-1, 0)) & (magnitude >= nb(1, 0)),
            torch.where(
                same_sign,
                (magnitude > nb(-1, -1)) & (magnitude > nb(1, 1)),
                (magnitude > nb(-1, 1)) & (magnitude > nb(1, -1)),
            ),
        ),
    )
    candidate = local_max & (magnitude > low)
    edges = candidate & (magnitude > high)
    while True:
        grown = torch.nn.functional.max_pool2d(edges.unsqueeze(1).float(), 3, 1, 1).squeeze(1).bool() & candidate
        if torch.equal(grown, edges):
            return edges
        edges = grown


_CHAMFER_MOVES = (  # cv2 DIST_L2 with a 5x5 mask: steps of 1, 1.4 (diagonal) and 2.1969 (knight)
    [((dr, dc), 1.0) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))]
    + [((dr, dc), 1.4) for dr, dc in ((1, 1), (1, -1), (-1, 1), (-1, -1))]
    + [
        ((dr, dc), 2.1969)
        for dr, dc in ((1, 2), (1, -2), (-1, 2), (-1, -2), (2, 1), (2, -1), (-2, 1), (-2, -1))
    ]
)


def _chamfer_distance(zero: torch.Tensor, cap: float) -> torch.Tensor:
    """cv2.distanceTransform(DIST_L2, 5) of a map whose ``zero`` pixels are the sources.

    float32 path sums of the mask steps, relaxed until stable (the shortest chamfer path, which
    cv2's two raster passes also find); distances above ``cap`` are reported as ``cap`` (the
    caller truncates there anyway).
    """
    h, w = zero.shape[-2:]
    far = float(2 * cap + 8)
    distance = torch.where(zero, 0.0, far).to(torch.float32)
    steps = [((dr, dc), torch.tensor(weight, dtype=torch.float32)) for (dr, dc), weight in _CHAMFER_MOVES]
    while True:
        padded = _padded(distance, 2, "", fill=far)
        best = distance
        for (dr, dc), weight in steps:
            best = torch.minimum(best, _window(padded, 2, dr, dc, h, w) + weight)
        best = best.clamp_(max=far)
        if torch.equal(best, distance):
            break
        distance = best
    return distance.clamp_(max=cap)


def _box3(x: torch.Tensor) -> torch.Tensor:
    """Sum of the 3x3 neighbourhood with reflect-101 borders (cv2.blur before the division)."""
    h, w = x.shape[-2:]
    p = _padded(x, 1, "reflect")
    return sum(_window(p, 1, dr, dc, h, w) for dr in (-1, 0, 1) for dc in (-1, 0, 1))  # type: ignore[return-value]


def _equalize_hist(image: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist per image on integer (N, H, W) values in 0..255."""
    n, h, w = image.shape
    flat = image.reshape(n, h * w).long()
    hist = torch.zeros(n, 256, dtype=torch.long, device=image.device).scatter_add_(1, flat, torch.ones_like(flat))
    first = (hist > 0).long().argmax(dim=1, keepdim=True)
    first_count = hist.gather(1, first)
    total = h * w
    # cv2: float32 255 / count (torch's scalar / tensor would use a reciprocal: one ulp off)
    scale = (255.0 / (total - first_count).clamp(min=1).to(torch.float64)).to(torch.float32)
    lut = torch.round((hist.cumsum(dim=1) - first_count).to(torch.float32) * scale).clamp_(0, 255).long()
    out = lut.gather(1, flat).reshape(n, h, w)
    uniform = (first_count == total).reshape(n, 1, 1)
    return torch.where(uniform, first.reshape(n, 1, 1).expand(n, h, w), out)


_EMBOSS = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))
_WATER = (175 / 255.0, 238 / 255.0, 238 / 255.0)
_MUD = (63 / 255.0, 42 / 255.0, 20 / 255.0)
_GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # the library's rgb2gray


def _water_texture(liquid: torch.Tensor) -> torch.Tensor:
    """The library's OpenCV pipeline on the 8-bit liquid layer (N, H, W) -> float texture."""
    h, w = liquid.shape[-2:]
    edges = _canny(liquid, 50, 150)
    distance = _chamfer_distance(edges, 20.0)  # 255 - canny: edges are the zero pixels
    mean = (_box3(distance.to(torch.float64)) * (1.0 / 9.0)).to(torch.float32)
    texture = _equalize_hist(torch.floor(mean).long())
    p = _padded(texture, 1, "reflect")
    emboss = sum(
        _EMBOSS[i][j] * _window(p, 1, i - 1, j - 1, h, w) for i in range(3) for j in range(3)
    ).clamp_(0, 255)  # type: ignore[union-attr]
    return torch.round(_box3(emboss.to(torch.float64)) / 9.0).to(torch.float32)


def _spatter(x: torch.Tensor, level: tuple[float, ...], liquid: torch.Tensor) -> torch.Tensor:
    """spatter with an explicit liquid layer (N, H, W) ~ normal(mean, std)."""
    _, _, sigma, threshold, intensity, mud = level
    c = x.shape[1]
    liquid = _gaussian_filter(liquid.to(torch.float64), sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mud == 0:
        liquid8 = torch.floor(liquid * 255.0).long().remainder(256)  # numpy's uint8 cast wraps
        mask = liquid8.to(torch.float32) * _water_texture(liquid8)
        peak = mask.amax(dim=(1, 2), keepdim=True)
        mask = torch.where(peak > 0, mask / torch.where(peak > 0, peak, 1.0), 0.0) * intensity
        mask = mask.unsqueeze(1).to(device=x.device, dtype=x.dtype)
        colour = torch.tensor(_WATER, dtype=x.dtype, device=x.device)
        if c == 3:
            return (x + mask * colour.view(1, 3, 1, 1)).clamp_(0.0, 1.0)
        tint = sum(g * (mask * v).clamp(0.0, 1.0) for g, v in zip(_GREY_WEIGHTS, _WATER))
        return (x + tint).clamp_(0.0, 1.0)
    mask = _gaussian_filter((liquid > threshold).to(torch.float64), intensity)
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask).unsqueeze(1).to(device=x.device, dtype=x.dtype)
    colour = torch.tensor(_MUD, dtype=x.dtype, device=x.device)
    if c == 3:
        return (x * (1 - mask) + mask * colour.view(1, 3, 1, 1)).clamp_(0.0, 1.0)
    tint = mask * sum(g * v for g, v in zip(_GREY_WEIGHTS, _MUD))
    return (x * (1 - mask) + tint).clamp_(0.0, 1.0)


def spatter(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Water (``mud`` = 0) or mud (``mud`` = 1) splashes from a thresholded, blurred Gaussian layer."""
    constant = _constant(level, "spatter", ("mean", "std", "sigma", "threshold", "intensity", "mud"))
    n, _, h, w = x.shape
    liquid = _normal(generator, n, (h, w), constant[0], constant[1], x.device).cpu()
    return _spatter(x, constant, liquid)


# ---------------------------------------------------------------------- registry

CORRUPTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "uniform_noise": uniform_noise,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "contrast": contrast,
    "brightness": brightness,
    "saturate": saturate,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "elastic_transform": elastic_transform,
    "spatter": spatter,
}

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
    }
)


# ---------------------------------------------------------------------- public API


def normalize_level(level: object) -> Level:
    """A per-severity constant as ``float`` or ``tuple[float, ...]`` (numpy scalars/arrays accepted)."""
    if isinstance(level, numbers.Real) and not isinstance(level, bool):
        return float(level)
    if isinstance(level, (tuple, list, np.ndarray)):
        values = list(np.asarray(level, dtype=np.float64).reshape(-1)) if isinstance(level, np.ndarray) else list(level)
        if values and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            return tuple(float(v) for v in values)
    raise TypeError(f"a corruption constant is a number or a tuple of numbers, got {level!r}")


def _make_generators(seed: object, n: int, device: torch.device) -> Generators:
    """One generator for an integer seed, else one per image from a sequence of N seeds."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return torch.Generator(device=device).manual_seed(int(seed))
    seeds = seed.tolist() if isinstance(seed, (torch.Tensor, np.ndarray)) else seed
    if not isinstance(seeds, Sequence) or isinstance(seeds, (str, bytes)):
        raise TypeError(f"seed must be an integer or a sequence of N integers, got {type(seed).__name__}")
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {n} images")
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def corrupt(images: torch.Tensor, name: str, level: Level, seed: int | Sequence[int]) -> torch.Tensor:
    """Apply corruption ``name`` with per-severity constant ``level`` to a uint8 (N, C, H, W) batch.

    ``level`` is a number or a tuple (see the module notes and :mod:`bench.corruption_tables`).
    Deterministic for a fixed ``seed``: randomness comes only from fresh ``torch.Generator``s
    on the images' device, one seeded with ``seed`` for the whole batch, or, if ``seed`` is a
    sequence of N integers, one per image (an image's result then does not depend on the rest
    of the batch).  The result is rounded to nearest (not truncated) back to uint8.  Unknown
    names raise ``ValueError``.
    """
    fn = CORRUPTIONS.get(name)
    if fn is None:
        raise ValueError(f"unknown corruption {name!r}; known corruptions: {', '.join(sorted(CORRUPTIONS))}")
    if images.dtype != torch.uint8:
        raise TypeError(f"corrupt expects uint8 images, got {images.dtype}")
    if images.dim() != 4:
        raise ValueError(f"corrupt expects an (N, C, H, W) batch, got shape {tuple(images.shape)}")
    constant = normalize_level(level)
    generator = _make_generators(seed, images.shape[0], images.device)
    with torch.no_grad():
        out = fn(images.to(torch.float32) / 255.0, constant, generator)
    return _to_uint8(out)


def _canonical(part: object) -> object:
    """Normalise a seed part to builtin types with a stable ``repr``."""
    if part is None or isinstance(part, bool):
        return part
    if isinstance(part, str):
        return str.__str__(part)
    if isinstance(part, bytes):
        return bytes(part)
    if isinstance(part, numbers.Integral):
        return int(part)
    if isinstance(part, numbers.Real):
        return float(part)
    if isinstance(part, (tuple, list)):
        return tuple(_canonical(p) for p in part)
    raise TypeError(
        "seed_for parts must be str, bytes, numbers, None or tuples/lists of them, "
        f"got {type(part).__name__}"
    )


def seed_for(*parts: object) -> int:
    """Stable 63-bit seed derived from ``parts`` with SHA-256 (never Python's salted ``hash``).

    Parts may be str, bytes, bool, integers, reals, None or (nested) tuples/lists of these;
    ``1``, ``1.0``, ``True`` and ``'1'`` give different seeds.  Example:
    ``seed_for(run_seed, "gaussian_noise", severity)``.
    """
    digest = hashlib.sha256(_SEED_DOMAIN + repr(_canonical(parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1

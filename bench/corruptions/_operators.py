"""Tensor helpers shared by the corruptions: linear filter / resampling operators, gathers, line blur.

All blurs, zooms and pixelation are linear and separable per term, so they are written as sums
of ``A @ x @ B.T`` with small H x H / W x W operator matrices that fold in the boundary handling
(two GEMMs per term; much faster on CPU than depthwise ``conv2d`` with large kernels, and valid
for kernels larger than the image), applied in fixed point so that every BLAS gives the same
bits (:mod:`bench.corruptions._exact`).  Non-separable kernels (the defocus disk) are split
exactly into one separable term per kernel row.  When there are many terms on a small image
(zoom_blur), they are summed into one dense (H*W, H*W) operator and applied as a single GEMM.
Operators are built in float64 per call (no caching; building costs well under a millisecond
at 32x32 except zoom_blur, ~5 ms).  Per-image shifts and resampling (motion blur, glass,
elastic) are gathers.

Boundary modes, by their torch/numpy names: ``'replicate'`` (scipy ``'nearest'``),
``'reflect'`` (``dcb|abcd|cba``: cv2 ``BORDER_REFLECT_101``, scipy ``'mirror'``) and
``'symmetric'`` (``cba|abcd|dcb``: scipy ``'reflect'``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from bench.corruptions._exact import check_exact, on_grid, sin_cos_turns
from bench.corruptions._exact import exp as exact_exp

__all__ = [
    "DENSE_MAX_PIXELS",
    "SeparableTerm",
    "apply_separable",
    "bilinear_sample",
    "clipped_zoom_operator",
    "divide_where_positive",
    "filter_operator",
    "fold_index",
    "gather_pixels",
    "gaussian_filter",
    "gaussian_filter_scipy_order",
    "gaussian_operator",
    "gaussian_taps",
    "images_per_chunk",
    "interpolation_operator",
    "kernel2d_terms",
    "motion_blur_at_angles",
    "settled",
    "to_uint8",
    "zoom_operator",
]

# A separable term (A, B) maps an (..., H, W) image x to A @ x @ B.T.
SeparableTerm = tuple[torch.Tensor, torch.Tensor]

DENSE_MAX_PIXELS = 4096  # a dense (H*W, H*W) operator is at most 64 MiB in float32

# Bytes of one chunk's large temporaries: below glibc's mmap threshold (32 MiB, bench.core._allocator), so
# they are reused heap memory, not pages faulted in afresh per chunk (unchunked, 256 images of 5 zigzags
# took 104 MB a temporary, and 256 MNIST-C fog maps of 256 x 256 cost a quarter of a Fashion-MNIST seed's
# CPU in the kernel).
TEMPORARY_BYTES = 8 << 20


def images_per_chunk(bytes_per_image: int) -> int:
    """How many images one chunk holds so that a temporary of ``bytes_per_image`` per image stays
    within ``TEMPORARY_BYTES`` (at least one). Callers chunk only where an image's result depends
    on its own data and draws alone, so the chunk size changes no byte."""
    return max(1, TEMPORARY_BYTES // max(1, bytes_per_image))


# ------------------------------------------------------------------ linear operators


def fold_index(index: torch.Tensor, n: int, mode: str) -> torch.Tensor:
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


def filter_operator(weights: torch.Tensor, offsets: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """(n, n) float64 matrix M with ``(M @ v)[i] = sum_k weights[k] * v[fold(i + offsets[k])]``;
    ``mode='constant'``: taps outside ``[0, n)`` read 0 (scipy's ``mode='constant'``, cval 0)."""
    rows = torch.arange(n).unsqueeze(1).expand(n, len(offsets))
    positions = rows + offsets.unsqueeze(0)
    taps = weights.to(torch.float64).expand(n, -1)
    if mode == "constant":
        taps = torch.where((positions >= 0) & (positions < n), taps, 0.0)
        cols = positions.clamp(0, n - 1)
    else:
        cols = fold_index(positions, n, mode)
    operator = torch.zeros(n, n, dtype=torch.float64)
    operator.index_put_((rows, cols), taps, accumulate=True)
    return operator


def interpolation_operator(positions: torch.Tensor, n: int) -> torch.Tensor:
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


def _l1_rows(operator: torch.Tensor) -> float:
    """Largest absolute row sum of an operator (a bound for :func:`check_exact`)."""
    return float(operator.abs().sum(dim=1).amax()) if operator.numel() else 0.0


def apply_separable(x: torch.Tensor, terms: Sequence[SeparableTerm], bound: float = 1.0) -> torch.Tensor:
    """``sum_r A_r @ x @ B_r.T`` over the last two dims of ``x``, exactly (the same bits on any BLAS).

    Fixed point (:mod:`bench.corruptions._exact`): ``x``, clamped to ``[-bound, bound]`` (the
    caller's guarantee on its values), and the operators are rounded to the ``2**-24`` grid, the
    intermediate ``x @ B.T`` too, and every GEMM then sums exact float64 products.  Few terms: two
    GEMMs per term.  Many terms on a small image (zoom_blur): the terms are summed into one dense
    (H*W, H*W) operator ``sum_r kron(A_r, B_r)`` (exact, then rounded to the grid) and applied as
    a single GEMM, which is cheaper once ``len(terms) * (H + W) >= H * W``.  Operators may be
    rectangular (resampling to another size); the dense path is only used for square ones.
    Returns ``x``'s dtype.
    """
    if not terms:
        raise ValueError("no separable terms given")
    height, width = x.shape[-2:]
    pixels = height * width
    signal = on_grid(x.clamp(-bound, bound))
    grid_terms = [(on_grid(a), on_grid(b)) for a, b in terms]
    square = all(a.shape == (height, height) and b.shape == (width, width) for a, b in terms)
    if square and pixels <= DENSE_MAX_PIXELS and len(terms) * (height + width) >= pixels:
        check_exact(sum(float(a.abs().amax()) * float(b.abs().amax()) for a, b in grid_terms), "dense operator")
        rows_ops = torch.stack([a for a, _ in grid_terms])
        cols_ops = torch.stack([b for _, b in grid_terms])
        dense = on_grid(torch.einsum("rik,rjl->ijkl", rows_ops, cols_ops).reshape(pixels, pixels))
        check_exact(_l1_rows(dense) * bound, "dense operator applied")
        applied = torch.matmul(signal.reshape(*x.shape[:-2], pixels), dense.T.to(x.device))
        return applied.reshape(x.shape).to(x.dtype)
    check_exact(sum(_l1_rows(a) * _l1_rows(b) for a, b in grid_terms) * bound, "separable operator")
    out: torch.Tensor | None = None
    for rows_op, cols_op in grid_terms:
        inner = on_grid(torch.matmul(signal, cols_op.T.to(x.device)))
        term = torch.matmul(rows_op.to(x.device), inner)
        out = term if out is None else out.add_(term)
    assert out is not None
    return out.to(x.dtype)


def kernel2d_terms(kernel: torch.Tensor, height: int, width: int, mode: str) -> list[SeparableTerm]:
    """A centred 2-D correlation kernel as separable row/column operators: one term per distinct
    nonzero kernel row (its 1-D filter), whose row operator adds the shifts of the rows holding it.
    Exact (where an SVD would depend on the LAPACK build); a symmetric kernel needs half its rows."""
    kernel = kernel.to(torch.float64)
    k_rows, k_cols = kernel.shape
    col_offsets = torch.arange(k_cols) - k_cols // 2
    shifts: dict[tuple[float, ...], list[int]] = {}
    for r in range(k_rows):
        if bool(kernel[r].any()):
            shifts.setdefault(tuple(kernel[r].tolist()), []).append(r - k_rows // 2)
    return [
        (
            filter_operator(torch.ones(len(offsets), dtype=torch.float64), torch.tensor(offsets), height, mode),
            filter_operator(torch.tensor(row, dtype=torch.float64), col_offsets, width, mode),
        )
        for row, offsets in shifts.items()
    ]


# ---------------------------------------------------------------- Gaussian filters


def gaussian_taps(sigma: float, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised sampled Gaussian on ``[-radius, radius]`` (scipy / cv2 kernel) and its offsets.

    ``exp(-0.5 / sigma**2 * k**2)`` correctly rounded, divided by their correctly rounded sum, as
    scipy computes them (up to its summation order): the same floats on every machine."""
    offsets = torch.arange(-radius, radius + 1)
    scale = -0.5 / (float(sigma) * float(sigma))
    taps = [exact_exp(scale * (k * k)) for k in range(-radius, radius + 1)]
    total = math.fsum(taps)
    return torch.tensor([t / total for t in taps], dtype=torch.float64), offsets


def gaussian_operator(n: int, sigma: float, mode: str, truncate: float) -> torch.Tensor:
    """(n, n) operator of ``scipy.ndimage.gaussian_filter1d``; sigma ~ 0 is the identity (as in scipy)."""
    if sigma <= 1e-15:
        return torch.eye(n, dtype=torch.float64)
    taps, offsets = gaussian_taps(sigma, int(truncate * sigma + 0.5))
    return filter_operator(taps, offsets, n, mode)


def gaussian_filter(
    x: torch.Tensor, sigma: float | tuple[float, float], mode: str = "replicate", truncate: float = 4.0,
    bound: float = 1.0,
) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` over the last two dims; sigma a number or (rows, cols);
    ``bound`` on |x| as in :func:`apply_separable`."""
    sigma_rows, sigma_cols = (sigma, sigma) if isinstance(sigma, (numbers.Real, float)) else sigma
    height, width = x.shape[-2:]
    term = (
        gaussian_operator(height, float(sigma_rows), mode, truncate),
        gaussian_operator(width, float(sigma_cols), mode, truncate),
    )
    return apply_separable(x, [term], bound)


def gaussian_filter_scipy_order(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """``gaussian_filter(mode='nearest')`` over H then W, in scipy's own operation order.

    scipy's symmetric-kernel loop computes ``x[i] * w0`` and then adds
    ``(x[i - j] + x[i + j]) * w_j`` from the outermost tap inwards; doing the same element-wise
    operations in float64 (with :func:`gaussian_taps`, scipy's taps up to the last bit of their
    sum) is bit-identical to it, and the same on every machine.
    """
    if sigma <= 1e-15:
        return x.clone()
    radius = int(truncate * float(sigma) + 0.5)
    taps = gaussian_taps(sigma, radius)[0].tolist()
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


# ------------------------------------------------------------------- central zoom


def zoom_operator(n: int, zoom: float) -> torch.Tensor:
    """(round(ceil(n / z) * z), n) operator: scipy zoom (order 1) of the central crop, untrimmed.

    One axis of imagecorruptions' ``clipped_zoom`` before its trim: the central
    ``ceil(n / z)`` crop, zoomed like ``scipy.ndimage.zoom(order=1)`` (linear interpolation,
    corner-aligned, output length ``round(crop * z)``).
    """
    crop = math.ceil(n / float(zoom))
    top = (n - crop) // 2
    zoomed_len = round(crop * zoom)
    ratio = (crop - 1) / (zoomed_len - 1) if zoomed_len != 1 else 1.0
    positions = torch.arange(zoomed_len, dtype=torch.float64) * ratio
    operator = torch.zeros(zoomed_len, n, dtype=torch.float64)
    operator[:, top : top + crop] = interpolation_operator(positions, crop)
    return operator


def clipped_zoom_operator(n: int, zoom: float) -> torch.Tensor:
    """(n, n) operator of one axis of imagecorruptions' ``clipped_zoom``: :func:`zoom_operator`
    trimmed to its first n samples (the top-left H x W of the zoomed image)."""
    zoomed = zoom_operator(n, zoom)
    operator = torch.zeros(n, n, dtype=torch.float64)
    operator[: min(n, len(zoomed))] = zoomed[:n]
    return operator


# ----------------------------------------------------------- gathers and sampling


def gather_pixels(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``out[n, c, p] = x[n, c, source[n, p]]`` over flattened pixels; x (N, C, H, W), source (N, H*W)."""
    n, c, h, w = x.shape
    index = source.reshape(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)


def bilinear_sample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: str) -> torch.Tensor:
    """Linear interpolation of x (N, C, H, W) at per-image source positions rows/cols (N, H, W).

    The two integer taps of each axis are folded into the image by ``mode`` (``'symmetric'``
    is ``scipy.ndimage.map_coordinates(order=1, mode='reflect')``, ``'reflect'`` is cv2's
    BORDER_REFLECT_101); ``'constant'``: taps outside the image are 0 (skimage ``warp(order=1,
    mode='constant', cval=0)``), through a zero border that clamped taps land on.
    """
    rows, cols = rows.to(torch.float64), cols.to(torch.float64)
    if mode == "constant":
        x = torch.nn.functional.pad(x, (1, 1, 1, 1))
        rows, cols, mode = rows + 1.0, cols + 1.0, "replicate"
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    row0, col0 = rows.floor(), cols.floor()
    frac_r = (rows - row0).to(x.dtype).unsqueeze(1)
    frac_c = (cols - col0).to(x.dtype).unsqueeze(1)
    row0, col0 = row0.long(), col0.long()
    r_a, r_b = fold_index(row0, h, mode), fold_index(row0 + 1, h, mode)
    c_a, c_b = fold_index(col0, w, mode), fold_index(col0 + 1, w, mode)

    def take(r: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        index = (r * w + col).reshape(n, 1, -1).expand(n, c, -1)
        return flat.gather(2, index).reshape(n, c, *rows.shape[1:])

    top = take(r_a, c_a) * (1 - frac_c) + take(r_a, c_b) * frac_c
    bottom = take(r_b, c_a) * (1 - frac_c) + take(r_b, c_b) * frac_c
    return top * (1 - frac_r) + bottom * frac_r


def _motion_kernel(radius: int, sigma: float) -> torch.Tensor:
    """imagecorruptions' one-sided Gaussian motion kernel of width ``2 * radius + 1``, normalised
    (correctly rounded exp and sum: the same floats everywhere)."""
    taps = [exact_exp(-(i * i) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma) for i in range(2 * radius + 1)]
    total = math.fsum(taps)
    return torch.tensor([t / total for t in taps], dtype=torch.float64)


def motion_blur_at_angles(x: torch.Tensor, radius: int, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """imagecorruptions' ``_motion_blur`` with one angle (degrees) per image; x (N, C, H, W).

    The originals used ImageMagick; imagecorruptions reimplemented it in python, and this
    follows that: a one-sided Gaussian kernel of width ``2 * radius + 1`` along a line, made of
    whole-pixel shifts with replicated borders.  Tap i is the image shifted by
    ``(-ceil(i * sin(a) - 0.5), -ceil(i * cos(a) - 0.5))`` (rows, cols), weighted by the
    kernel; the first shift that reaches the image size ends the sum for that image (the
    library's ``break``), without renormalising.  Not clamped.

    The per-image shift and weight tables are computed on the CPU (from the angles, which are
    random draws; sine and cosine by :func:`~bench.corruptions._exact.sin_cos_turns`) and moved to
    x's device: they are the same on every machine and device, and the loop's end needs no
    read-back from the device.
    """
    n, c, h, w = x.shape
    kernel = _motion_kernel(radius, sigma)
    width_k = len(kernel)
    taps = torch.arange(width_k, dtype=torch.float64)
    sin, cos = sin_cos_turns(angles.detach().to(device="cpu", dtype=torch.float64) / 360.0)
    point_rows, point_cols = width_k * sin, width_k * cos
    hypot = torch.sqrt(point_rows * point_rows + point_cols * point_cols)
    shift_rows = -torch.ceil(taps[None, :] * point_rows[:, None] / hypot[:, None] - 0.5).long()
    shift_cols = -torch.ceil(taps[None, :] * point_cols[:, None] / hypot[:, None] - 0.5).long()
    inside = (shift_rows.abs() < h) & (shift_cols.abs() < w)
    keep = torch.cumprod(inside.long(), dim=1).bool()
    used = int(keep.any(0).long().cumprod(0).sum())  # taps before the first one no image keeps
    weights = (kernel[None, :] * keep).to(x.dtype).to(x.device)
    shift_rows, shift_cols = shift_rows.to(x.device), shift_cols.to(x.device)
    base_rows = torch.arange(h, device=x.device)
    base_cols = torch.arange(w, device=x.device)
    out = torch.zeros_like(x)
    for i in range(used):
        rows = (base_rows[None, :] - shift_rows[:, i : i + 1]).clamp_(0, h - 1)
        cols = (base_cols[None, :] - shift_cols[:, i : i + 1]).clamp_(0, w - 1)
        shifted = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
        shifted = shifted.gather(3, cols[:, None, None, :].expand(n, c, h, w))
        out.add_(weights[:, i, None, None, None] * shifted)
    return out


# ------------------------------------------------------------------ element-wise


def settled(before: torch.Tensor, after: torch.Tensor) -> bool:
    """Whether an iterative refinement reached its fixed point (``torch.equal``).

    On the ``meta`` device (shapes, no values) one round stands for all, so a whole corruption can
    be traced there to check that every tensor lives on the images' device.
    """
    return after.device.type == "meta" or torch.equal(before, after)


def divide_where_positive(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` where ``denominator > 0``, else 0 (never divides by zero)."""
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1.0), 0.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8, rounding to nearest."""
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)

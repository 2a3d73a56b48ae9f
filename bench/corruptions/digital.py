"""Digital corruptions: contrast, elastic_transform, pixelate, jpeg_compression, the extra saturate, and
MNIST-C's canny_edges.

Each is a :data:`~bench.corruptions.CorruptionFn` on float (N, C, H, W) batches in [0, 1],
clamped to [0, 1].  elastic_transform is the only random one; ``_elastic`` takes its draws
explicitly.
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import torch
from PIL import Image

from bench.corruptions._exact import exact_mean
from bench.corruptions._levels import Level, scalar_level, unpack_level
from bench.corruptions._opencv import hysteresis, padded, window
from bench.corruptions._operators import (
    apply_separable,
    bilinear_sample,
    divide_where_positive,
    gaussian_filter,
    to_uint8,
)
from bench.corruptions._random import Generators, uniform

__all__ = ["canny_edges", "contrast", "elastic_transform", "jpeg_compression", "pixelate", "saturate"]


def contrast(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Scale deviations from the per-image, per-channel mean by ``level``: ``(x - m) * level + m``.

    ``m`` is the mean over H, W of each image and channel (summed through integers, so that it
    does not depend on the machine's summation order).
    """
    factor = scalar_level(level, "contrast")
    means = exact_mean(x, (-2, -1))
    return ((x - means) * factor + means).clamp_(0.0, 1.0)


def saturate(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """HSV saturation ``S * factor + offset`` (clipped); exact, without the HSV round trip.

    ``level`` is ``(factor, offset)``.  With ``S' = clip(S * factor + offset, 0, 1)``, each
    channel becomes ``V - S' * V * (V - c) / (V - min)``; grey pixels have hue 0 (skimage),
    so they become ``(V, V (1 - S'), V (1 - S'))``.  Channel counts other than 3 are grey and
    stay unchanged (the library's 1-channel result).
    """
    factor, offset = unpack_level(level, "saturate", ("factor", "offset"))
    if x.shape[-3] != 3:
        return x.clone().clamp_(0.0, 1.0)
    value = x.amax(dim=-3, keepdim=True)
    chroma = value - x.amin(dim=-3, keepdim=True)
    saturation = divide_where_positive(chroma, value)
    new_saturation = (saturation * factor + offset).clamp(0.0, 1.0)
    coloured = chroma > 0
    # (V - c) / (V - min): 0 for the largest channel, 1 for the smallest; hue 0 for grey pixels
    position = (value - x) / torch.where(coloured, chroma, torch.ones_like(chroma))
    hue_zero = torch.tensor([0.0, 1.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    position = torch.where(coloured, position, hue_zero)
    return (value - new_saturation * value * position).clamp_(0.0, 1.0)


# ------------------------------------------------------------------------ pixelate


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
    """(n, n) operator of one axis: PIL BOX down to ``max(1, int(n * level))``, then NEAREST back up."""
    small = max(1, int(n * level))
    return _pil_nearest_operator(small, n) @ _pil_box_operator(n, small)


def pixelate(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Box-downsample by ``level`` (PIL BOX, size truncated) and upsample back (nearest).

    PIL ``BOX`` downsampling to ``int(H * level) x int(W * level)`` (truncation, like the
    library; at least 1) and nearest upsampling (PIL's ``BOX`` upsampling picks the same source
    pixel, so this covers both library versions).  Both steps reproduce PIL's resampling weights
    as matrices, but PIL rounds the small intermediate image to uint8 and this does not, so
    results can differ from PIL by one grey level.
    """
    scale = scalar_level(level, "pixelate")
    height, width = x.shape[-2:]
    term = (_pixelate_operator(height, scale), _pixelate_operator(width, scale))
    return apply_separable(x, [term]).clamp_(0.0, 1.0)


# ------------------------------------------------------------------------------ jpeg


def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode/decode one (H, W, C) uint8 image with PIL; C is 1 or 3."""
    grey = image.shape[2] == 1
    pil = Image.fromarray(image[:, :, 0]).convert("RGB") if grey else Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    decoded: Image.Image = Image.open(buffer)
    decoded = decoded.convert("L") if grey else decoded.convert("RGB")
    out = np.asarray(decoded, dtype=np.uint8)
    return out[:, :, None] if grey else out


def jpeg_compression(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """PIL JPEG round trip at quality ``int(level)``, per image (1 or 3 channels).

    PIL's default settings, one image at a time (the only non-batched corruption).  The input
    is first rounded to uint8; 1-channel images go through RGB and back to ``L`` like the
    library.
    """
    quality = int(scalar_level(level, "jpeg_compression"))
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality must be in [1, 100], got {level}")
    if x.shape[-3] not in (1, 3):
        raise ValueError(f"jpeg_compression supports 1 or 3 channels, got {x.shape[-3]}")
    images = to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()
    decoded = np.stack([_jpeg_roundtrip(image, quality) for image in images]) if len(images) else images
    out = torch.from_numpy(decoded).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0
    return out.clamp_(0.0, 1.0)


# ------------------------------------------------------------------------- elastic


def _affine_sources(jitter: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source (rows, cols) of cv2.warpAffine for make_cifar_c.py's jittered three-point affine.

    ``jitter`` (N, 3, 2) float32 is added to the points; cv2 inverts the fitted affine and
    samples float images at the exact source positions (OpenCV 5; older versions snapped them
    to 1/32 pixel).  The fit and the inversion are closed forms evaluated element by element in a
    fixed order (no LAPACK, whose results depend on the build), in float64.
    """
    centre = (float(height // 2), float(width // 2))
    size = float(min(height, width) // 3)
    source = [(centre[0] + size, centre[1] + size), (centre[0] + size, centre[1] - size),
              (centre[0] - size, centre[1] - size)]
    source_points = torch.tensor(source, dtype=torch.float32)
    target = (source_points[None] + jitter.cpu().to(torch.float32)).to(torch.float64)  # (N, 3, 2)
    # the affine through three points: solve [s_x s_y 1] @ M = t once, exactly, for the fixed sources
    design = [[Fraction(sx), Fraction(sy), Fraction(1)] for sx, sy in source]
    solve = [[float(v) for v in row] for row in _inverse3(design)]  # M = solve @ target
    forward = [[sum((target[:, k, j] * solve[i][k] for k in range(3)), torch.zeros(len(target), dtype=torch.float64))
                for j in range(2)] for i in range(3)]  # forward[i][j]: (N,), rows x, y, 1 of M
    a, b, c = forward[0][0], forward[1][0], forward[2][0]  # x' = a x + b y + c
    d, e, f = forward[0][1], forward[1][1], forward[2][1]  # y' = d x + e y + f
    det = a * e - b * d
    inv_a, inv_b, inv_d, inv_e = e / det, -b / det, -d / det, a / det
    inv_c = -(inv_a * c + inv_b * f)
    inv_f = -(inv_d * c + inv_e * f)
    xs = torch.arange(width, dtype=torch.float64)[None, None, :]
    ys = torch.arange(height, dtype=torch.float64)[None, :, None]
    cols = inv_a[:, None, None] * xs + inv_b[:, None, None] * ys + inv_c[:, None, None]
    rows = inv_d[:, None, None] * xs + inv_e[:, None, None] * ys + inv_f[:, None, None]
    return rows.to(jitter.device), cols.to(jitter.device)


def _inverse3(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact inverse of a 3x3 rational matrix (adjugate over determinant)."""
    m = matrix

    def minor(i: int, j: int) -> Fraction:
        rows = [r for r in range(3) if r != i]
        cols = [c for c in range(3) if c != j]
        return m[rows[0]][cols[0]] * m[rows[1]][cols[1]] - m[rows[0]][cols[1]] * m[rows[1]][cols[0]]

    det = sum(((-1) ** j) * m[0][j] * minor(0, j) for j in range(3))
    if det == 0:
        raise ValueError("the affine's source points are collinear")
    return [[((-1) ** (i + j)) * minor(j, i) / det for j in range(3)] for i in range(3)]


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
        x = bilinear_sample(x, rows.to(x.device), cols.to(x.device), "reflect")
    noise = torch.stack([noise_x, noise_y]).to(device=x.device, dtype=torch.float64)
    field = gaussian_filter(noise, (sigma * h, sigma * w), mode="symmetric", truncate=3.0) * (alpha * h)
    field = field.to(torch.float32).to(torch.float64)  # the library keeps float32 displacements
    base_rows = torch.arange(h, dtype=torch.float64, device=x.device)[None, :, None]
    base_cols = torch.arange(w, dtype=torch.float64, device=x.device)[None, None, :]
    return bilinear_sample(x, base_rows + field[1], base_cols + field[0], "symmetric").clamp_(0.0, 1.0)


def elastic_transform(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Optional random affine, then a smooth random displacement field (fractions of the image size).

    ``level`` is ``(alpha, sigma, affine)``, lengths as fractions of the image size
    (make_cifar_c.py uses multiples of IMSIZE = 32; imagecorruptions uses
    ``alpha = 250 * a * 0.005 * H`` and ``sigma = 0.01 * (H, W)``).  If ``affine`` > 0, a random
    affine warp first (make_cifar_c.py: three points around the centre jittered by
    ``U(-affine * H, affine * H)``, ``cv2.warpAffine`` bilinear with reflect-101 borders; the
    points are built (H, W)-ordered and read by cv2 as (x, y), a no-op for square images).
    Then displacement fields ``alpha * H * gaussian(U(-1, 1), sigma * (H, W), mode='reflect',
    truncate=3)`` and bilinear resampling like ``scipy.ndimage.map_coordinates(order=1,
    mode='reflect')`` (half-sample symmetric borders).  imagecorruptions has no affine step.
    """
    constant = unpack_level(level, "elastic_transform", ("alpha", "sigma", "affine"))
    n, _, h, w = x.shape
    jitter = None
    if constant[2] > 0:
        spread = constant[2] * h
        jitter = uniform(generator, n, (3, 2), -spread, spread, torch.device("cpu")).to(torch.float32)  # a CPU solve
    noise_x = uniform(generator, n, (h, w), -1.0, 1.0, x.device)
    noise_y = uniform(generator, n, (h, w), -1.0, 1.0, x.device)
    return _elastic(x, constant, jitter, noise_x, noise_y)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- canny


def _sobel(x: torch.Tensor, axis: int) -> torch.Tensor:
    """``scipy.ndimage.sobel(x, axis)`` over the last two dims of (N, H, W): central difference along
    ``axis`` (0: rows, 1: columns), [1, 2, 1] across it, scipy's default 'reflect' borders."""
    h, w = x.shape[-2:]
    p = padded(x, 1, "symmetric")

    def at(dr: int, dc: int) -> torch.Tensor:
        return window(p, 1, dr, dc, h, w)

    if axis == 0:
        return (at(1, -1) - at(-1, -1)) + 2.0 * (at(1, 0) - at(-1, 0)) + (at(1, 1) - at(-1, 1))
    return (at(-1, 1) - at(-1, -1)) + 2.0 * (at(0, 1) - at(0, -1)) + (at(1, 1) - at(1, -1))


def _canny(image: torch.Tensor, sigma: float, low: float = 0.1, high: float = 0.2) -> torch.Tensor:
    """skimage 0.15's ``feature.canny(image, sigma)`` (the version MNIST-C used) on float64 (N, H, W) in
    [0, 1]: bool edges.

    Gaussian smoothing with 0 outside, divided by the smoothed all-ones mask; Sobel gradients; the
    magnitude ``sqrt(i**2 + j**2)``; non-maximum suppression interpolating the two neighbours along
    the gradient in four sectors (later sectors win on their shared diagonals, as there); a 1-pixel
    border and zero magnitudes dropped; edges: 8-connected components of local maxima >= ``low``
    holding one >= ``high``."""
    ones = torch.ones_like(image[:1])
    bleed = gaussian_filter(ones, sigma, mode="constant") + torch.finfo(torch.float64).eps
    smoothed = gaussian_filter(image, sigma, mode="constant") / bleed
    isobel, jsobel = _sobel(smoothed, 0), _sobel(smoothed, 1)
    abs_i, abs_j = isobel.abs(), jsobel.abs()
    magnitude = torch.sqrt(isobel * isobel + jsobel * jsobel)
    h, w = image.shape[-2:]
    inner = torch.zeros(h, w, dtype=torch.bool, device=image.device)
    inner[1:-1, 1:-1] = True
    candidates = inner & (magnitude > 0)
    m = padded(magnitude, 1, "", fill=0.0)

    def nb(dr: int, dc: int) -> torch.Tensor:
        return window(m, 1, dr, dc, h, w)

    same_sign = ((isobel >= 0) & (jsobel >= 0)) | ((isobel <= 0) & (jsobel <= 0))
    other_sign = ((isobel <= 0) & (jsobel >= 0)) | ((isobel >= 0) & (jsobel <= 0))
    steep, flat = abs_i >= abs_j, abs_i <= abs_j
    w_steep, w_flat = divide_where_positive(abs_j, abs_i), divide_where_positive(abs_i, abs_j)
    sectors = (  # (points, weight, (plus: straight, diagonal), (minus: straight, diagonal))
        (same_sign & steep, w_steep, ((1, 0), (1, 1)), ((-1, 0), (-1, -1))),
        (same_sign & flat, w_flat, ((0, 1), (1, 1)), ((0, -1), (-1, -1))),
        (other_sign & flat, w_flat, ((0, 1), (-1, 1)), ((0, -1), (1, -1))),
        (other_sign & steep, w_steep, ((-1, 0), (-1, 1)), ((1, 0), (1, -1))),
    )
    local_maxima = torch.zeros_like(candidates)
    for points, weight, plus, minus in sectors:
        keeps = [nb(*diagonal) * weight + nb(*straight) * (1 - weight) <= magnitude for straight, diagonal in (plus, minus)]
        local_maxima = torch.where(candidates & points, keeps[0] & keeps[1], local_maxima)
    return hysteresis(local_maxima & (magnitude >= high), local_maxima & (magnitude >= low))


def canny_edges(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """The binary edge map of each channel (1 on edges, 0 elsewhere): MNIST-C's canny_edges, skimage
    ``feature.canny`` with thresholds 0.1 / 0.2 and Gaussian ``sigma = level`` (MNIST-C: 1.0).

    The input is snapped to the uint8 grid first (MNIST-C starts from uint8 / 255)."""
    sigma = scalar_level(level, "canny_edges")
    if sigma <= 0:
        raise ValueError(f"canny_edges needs a positive sigma, got {sigma}")
    n, c, h, w = x.shape
    exact = torch.round(x.to(torch.float64) * 255.0) / 255.0
    edges = _canny(exact.reshape(n * c, h, w), sigma)
    return edges.reshape(n, c, h, w).to(x.dtype)

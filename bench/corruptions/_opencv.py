"""Batched torch re-implementations of the OpenCV routines that imagecorruptions calls.

spatter's water texture (``Canny``, ``distanceTransform``, ``blur``, ``equalizeHist``,
``filter2D``) and frost's texture resize (``resize``), reproducing OpenCV's integer and
fixed-point arithmetic so that results match cv2 exactly or within its SIMD rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.corruptions._operators import fold_index, settled

__all__ = [
    "box_sum3",
    "canny",
    "chamfer_distance",
    "correlate3x3",
    "equalize_hist",
    "hysteresis",
    "padded",
    "resize_operator",
    "resize_uint8",
    "window",
]

# ------------------------------------------------------------------ windows


def padded(x: torch.Tensor, pad: int, mode: str, fill: float | None = None) -> torch.Tensor:
    """Pad the last two dims of x by ``pad``: with ``fill`` if given, else by index folding (``mode``)."""
    h, w = x.shape[-2:]
    if fill is not None:
        out = torch.full((*x.shape[:-2], h + 2 * pad, w + 2 * pad), fill, dtype=x.dtype, device=x.device)
        out[..., pad : pad + h, pad : pad + w] = x
        return out
    rows = fold_index(torch.arange(-pad, h + pad, device=x.device), h, mode)
    cols = fold_index(torch.arange(-pad, w + pad, device=x.device), w, mode)
    return x[..., rows, :][..., cols]


def window(padded_map: torch.Tensor, pad: int, dr: int, dc: int, h: int, w: int) -> torch.Tensor:
    """The H x W view of a padded map shifted by (dr, dc): ``out[r, c] = map[r + dr, c + dc]``."""
    return padded_map[..., pad + dr : pad + dr + h, pad + dc : pad + dc + w]


def correlate3x3(x: torch.Tensor, kernel: Sequence[Sequence[int]]) -> torch.Tensor:
    """cv2.filter2D with a 3x3 kernel (correlation, reflect-101 borders), exact in x's dtype, unclamped."""
    h, w = x.shape[-2:]
    p = padded(x, 1, "reflect")
    return sum(kernel[i][j] * window(p, 1, i - 1, j - 1, h, w) for i in range(3) for j in range(3))  # type: ignore[return-value]


def box_sum3(x: torch.Tensor) -> torch.Tensor:
    """Sum of the 3x3 neighbourhood with reflect-101 borders (cv2.blur before the division)."""
    return correlate3x3(x, ((1, 1, 1), (1, 1, 1), (1, 1, 1)))


# ------------------------------------------------------------ spatter's pipeline


def canny(image: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """cv2.Canny(image, low, high) on integer (N, H, W) images in 0..255: bool edge map.

    3x3 Sobel with replicated borders, L1 magnitude, OpenCV's fixed-point sector test for
    non-maximum suppression (zero magnitude outside; ``>`` before and ``>=`` after the pixel
    along the gradient, but ``>`` on both sides diagonally), ``m > low`` candidates, ``m > high``
    seeds and 8-connected hysteresis.
    """
    h, w = image.shape[-2:]
    p = padded(image.long(), 1, "replicate")

    def at(dr: int, dc: int) -> torch.Tensor:
        return window(p, 1, dr, dc, h, w)

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    magnitude = gx.abs() + gy.abs()
    m = padded(magnitude, 1, "", fill=0)

    def nb(dr: int, dc: int) -> torch.Tensor:
        return window(m, 1, dr, dc, h, w)

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
    return hysteresis(candidate & (magnitude > high), candidate)


def hysteresis(strong: torch.Tensor, weak: torch.Tensor) -> torch.Tensor:
    """The (N, H, W) ``weak`` pixels 8-connected to a ``strong`` one (edge tracing of Canny detectors)."""
    edges = strong
    while True:
        grown = torch.nn.functional.max_pool2d(edges.unsqueeze(1).float(), 3, 1, 1).squeeze(1).bool() & weak
        if settled(edges, grown):
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


def chamfer_distance(zero: torch.Tensor, cap: float) -> torch.Tensor:
    """cv2.distanceTransform(DIST_L2, 5) of a map whose ``zero`` pixels are the sources.

    float32 path sums of the mask steps, relaxed until stable (the shortest chamfer path, which
    cv2's two raster passes also find); distances above ``cap`` are reported as ``cap`` (the
    caller truncates there anyway).
    """
    h, w = zero.shape[-2:]
    far = float(2 * cap + 8)
    distance = torch.where(zero, 0.0, far).to(torch.float32)
    steps = [((dr, dc), torch.tensor(weight, dtype=torch.float32, device=zero.device)) for (dr, dc), weight in _CHAMFER_MOVES]
    while True:
        padded_distance = padded(distance, 2, "", fill=far)
        best = distance
        for (dr, dc), weight in steps:
            best = torch.minimum(best, window(padded_distance, 2, dr, dc, h, w) + weight)
        best = best.clamp_(max=far)
        if settled(distance, best):
            break
        distance = best
    return distance.clamp_(max=cap)


def equalize_hist(image: torch.Tensor) -> torch.Tensor:
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


# ------------------------------------------------------------------------- resize


def _cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """cv2 ``interpolateCubic`` (a = -0.75) for fractions t: (..., 4) weights of taps -1, 0, 1, 2."""
    a = -0.75
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return torch.stack([w0, w1, w2, 1 - w0 - w1 - w2], dim=-1)


def resize_operator(n_in: int, n_out: int, src_per_dst: float, cubic: bool) -> torch.Tensor:
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


def resize_uint8(image: torch.Tensor, size: tuple[int, int], src_per_dst: tuple[float, float], cubic: bool) -> torch.Tensor:
    """uint8 (C, h, w) -> uint8 (C, *size) like cv2.resize (bilinear or bicubic) on uint8 (fixed point, rounded).

    cv2's SIMD bicubic path can round differently by one grey level on a few pixels.
    """
    rows_op = resize_operator(image.shape[1], size[0], src_per_dst[0], cubic)
    cols_op = resize_operator(image.shape[2], size[1], src_per_dst[1], cubic)
    total = rows_op @ image.to(torch.float64) @ cols_op.T  # exact integers (< 2**53)
    return torch.floor((total + 2.0**21) / 2.0**22).clamp_(0, 255).to(torch.uint8)

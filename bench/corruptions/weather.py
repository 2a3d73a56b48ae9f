"""Weather corruptions (ImageNet-C's grouping): snow, frost, fog, brightness, and the extra spatter.

Each is a :data:`~bench.corruptions.CorruptionFn` on float (N, C, H, W) batches in [0, 1],
clamped to [0, 1].  The random ones have a private twin taking the draws explicitly
(``_snow``, ``_frost``, ``_fog`` with ``_plasma_fractal``, ``_spatter``).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.corruptions._levels import Level, scalar_level, unpack_level
from bench.corruptions._opencv import (
    box_sum3,
    canny,
    chamfer_distance,
    correlate3x3,
    equalize_hist,
    resize_uint8,
)
from bench.corruptions._operators import (
    apply_separable,
    divide_where_positive,
    gaussian_filter,
    images_per_chunk,
    motion_blur_at_angles,
    zoom_operator,
)
from bench.corruptions._random import Generators, integers, normal, per_image_generators, uniform

__all__ = ["brightness", "fog", "frost", "snow", "spatter"]

_CV2_GREY = (0.299, 0.587, 0.114)  # cv2 RGB2GRAY weights of (R, G, B)
_LIBRARY_GREY = (0.2989, 0.5870, 0.1140)  # the library's rgb2gray weights of (R, G, B)


def _grey(rgb: torch.Tensor, weights: tuple[float, float, float]) -> torch.Tensor:
    """(N, 1, H, W) weighted sum of the three channels of an (N, 3, H, W) batch."""
    return weights[0] * rgb[:, 0:1] + weights[1] * rgb[:, 1:2] + weights[2] * rgb[:, 2:3]


def _normal_bound(mean: float, std: float) -> float:
    """A bound on |normal(mean, std)| draws of the engine's Box-Muller (|z| < 8.6), for the
    fixed-point filters that take them."""
    return abs(mean) + 8.6 * abs(std)


# --------------------------------------------------------------------------- snow


def _snow(x: torch.Tensor, level: tuple[float, ...], layer: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """snow with explicit draws: ``layer`` (N, H, W) ~ normal(mean, std), ``angles`` (N,) degrees."""
    mean, std, zoom, threshold, radius, sigma, blend = level
    h, w = x.shape[-2:]
    term = (zoom_operator(h, zoom), zoom_operator(w, zoom))
    flakes = apply_separable(layer.to(torch.float64), [term], bound=_normal_bound(mean, std))
    flakes = torch.where(flakes < threshold, torch.zeros_like(flakes), flakes).clamp_(0.0, 1.0)
    flakes = motion_blur_at_angles(flakes.unsqueeze(1), int(radius), sigma, angles)
    flakes = (torch.round(flakes * 255.0) / 255.0)[:, :, :h, :w].to(x.dtype)
    grey = _grey(x, _CV2_GREY) if x.shape[-3] == 3 else x  # other channel counts: each its own grey
    base = blend * x + (1.0 - blend) * torch.maximum(x, grey * 1.5 + 0.5)
    return (base + flakes + flakes.flip(-2, -1)).clamp_(0.0, 1.0)


def snow(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Zoomed, thresholded, motion-blurred Gaussian flakes over a brightened image.

    ``level`` is ``(mean, std, zoom, threshold, blur_radius, blur_sigma, blend)``.  The
    original used ImageMagick; this follows imagecorruptions' python reimplementation: a
    Gaussian layer ``normal(mean, std)``, its centre zoomed like ``scipy.ndimage.zoom(order=1)``
    (kept at the full zoomed size for the motion blur and cropped to the top-left H x W
    afterwards, like the library), values below ``threshold`` zeroed, motion-blurred
    (``blur_radius``, ``blur_sigma``) at a uniform random angle in [-135, -45] degrees (see
    :func:`~bench.corruptions._operators.motion_blur_at_angles`), rounded to 8 bits, and added
    with its 180-degree rotation to ``blend * x + (1 - blend) * max(x, 1.5 * grey(x) + 0.5)``
    (grey: cv2's 0.299/0.587/0.114 for 3 channels, the channel itself otherwise).
    """
    constant = unpack_level(
        level, "snow", ("mean", "std", "zoom", "threshold", "blur_radius", "blur_sigma", "blend")
    )
    n, _, h, w = x.shape
    layer = normal(generator, n, (h, w), constant[0], constant[1], x.device)
    angles = uniform(generator, n, (), -135.0, -45.0, torch.device("cpu"))  # motion_blur_at_angles' tables are CPU-side
    return _snow(x, constant, layer, angles)


# -------------------------------------------------------------------------- frost

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


@functools.lru_cache(maxsize=32)
def _frost_textures(height: int, width: int, scale: float) -> tuple[torch.Tensor, ...]:
    """The five usable frost textures resized for H x W images at ``texture_scale`` (see :func:`frost`)."""
    textures = []
    for index in range(_FROST_USED):
        texture = _frost_texture(index)
        th, tw = texture.shape[1:]
        size = (round(th * scale), round(tw * scale))
        if scale < 1 and size[0] > height and size[1] > width:  # make_cifar_c.py: cv2.resize(fx=fy=scale)
            textures.append(resize_uint8(texture, size, (1.0 / scale, 1.0 / scale), cubic=False))
            continue
        factor = (scale if scale >= 1 else 1.1) * max(1.0, height / th, width / tw)  # imagecorruptions
        size = (math.ceil(th * factor), math.ceil(tw * factor))
        src_per_dst = (1.0 / (size[0] / th), 1.0 / (size[1] / tw))
        textures.append(resize_uint8(texture, size, src_per_dst, cubic=True))
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
        crops = _grey(crops.flip(1), _LIBRARY_GREY)
    return (image_weight * x + frost_weight * (crops / 255.0)).clamp_(0.0, 1.0)


def frost(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Blend with a random crop of a frost texture: ``image_weight * x + frost_weight * frost``.

    ``level`` is ``(image_weight, frost_weight, texture_scale)``.  The crop comes from one of
    the first five frost textures (the library's ``randint(5)``: frost6 is never used), its
    origin uniform over the library's ``randint`` ranges.  The textures are read from the
    installed ``imagecorruptions`` package's data folder (located with
    ``importlib.util.find_spec``, never imported).  ``texture_scale`` < 1 reproduces
    make_cifar_c.py's ``cv2.resize(fx=fy=texture_scale)`` (bilinear; 0.2 samples every fifth
    pixel exactly); otherwise imagecorruptions' rule: factor
    ``texture_scale * max(1, H / th, W / tw)``, size rounded up, bicubic (cv2 ``INTER_CUBIC``:
    a = -0.75, replicated borders, 11-bit fixed-point weights; cv2's SIMD rounding can differ by
    one grey level on the texture).  A CIFAR-style scale whose texture would not cover the image
    falls back to the imagecorruptions rule at 1.1.  1-channel images use the library's grey
    texture ``0.2989 B + 0.587 G + 0.114 R`` (its ``rgb2gray`` applied to cv2's BGR order).
    """
    image_weight, frost_weight, scale = unpack_level(level, "frost", ("image_weight", "frost_weight", "texture_scale"))
    n, _, h, w = x.shape
    textures = _frost_textures(h, w, scale)
    index = integers(generator, n, (), 0, _FROST_USED, torch.device("cpu"))  # crops are cut from the CPU textures
    u = uniform(generator, n, (2,), 0.0, 1.0, torch.device("cpu"))
    sizes = torch.tensor([list(t.shape[1:]) for t in textures], dtype=torch.float64)
    limits = sizes[index] - torch.tensor([h, w], dtype=torch.float64)  # randint(0, size - H) ranges
    origin = torch.floor(u * limits).long()
    return _frost(x, image_weight, frost_weight, textures, index, origin)


# ---------------------------------------------------------------------------- fog


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
    return divide_where_positive(maps, maps.amax(dim=(1, 2), keepdim=True))  # 1x1: flat


def _fog(x: torch.Tensor, strength: float, fractal: torch.Tensor) -> torch.Tensor:
    """fog with an explicit fractal (N, M, M), M >= H, W."""
    h, w = x.shape[-2:]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    foggy = x + strength * fractal[:, None, :h, :w].to(device=x.device, dtype=x.dtype)
    return (foggy * peak / (peak + strength)).clamp_(0.0, 1.0)


def fog(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Add a plasma fractal of ``strength`` (roughness ``decay``), then rescale to the image's maximum.

    ``level`` is ``(strength, decay[, map_size])``.  The fractal is the library's diamond-square
    ``plasma_fractal`` (side ``map_size``, default 0: the next power of two >= max(H, W); MNIST-C
    draws a 256 map for its 28 x 28 images and keeps the top-left corner), start ``wibble`` 100 divided by
    ``decay`` per level, noise ``wibble * U(-wibble, wibble)``), in float64, per image; the
    result is ``(x + strength * fractal) * max(x) / (max(x) + strength)``.
    """
    strength, decay, map_size = unpack_level(level, "fog", ("strength", "decay", "map_size"), (0.0,))
    n, _, h, w = x.shape
    mapsize = int(map_size) or (1 if max(h, w) == 0 else 2 ** (max(h, w) - 1).bit_length())
    if mapsize < max(h, w):
        raise ValueError(f"fog's map_size {mapsize} is smaller than the image ({h} x {w})")

    generators = per_image_generators(generator, n)
    if generators is not None and n > (chunk := images_per_chunk(8 * mapsize * mapsize)):  # float64 maps
        # each image draws from its own generator, so chunks give the same bytes as one batch
        return torch.cat([fog(x[i:i + chunk], level, generators[i:i + chunk]) for i in range(0, n, chunk)])

    def draw_uniform(low: float, high: float, shape: tuple[int, ...]) -> torch.Tensor:
        return uniform(generator, n, shape, low, high, torch.device("cpu"))  # the fractal depends on draws only: CPU

    return _fog(x, strength, _plasma_fractal(n, mapsize, decay, draw_uniform))


# --------------------------------------------------------------------- brightness


def brightness(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Add ``level`` to HSV value (3 channels) or to the grey level (other channel counts).

    For 3 channels, ``V += level`` in HSV, clipped.  Because every RGB component equals
    ``V * g(H, S)``, this is computed exactly as ``x * V'/V``; black pixels (V = 0) become grey
    ``(V', V', V')``, as the HSV round trip gives.  Any other channel count is treated as grey
    levels: ``x + level``, clipped (the library's 1-channel branch).
    """
    shift = scalar_level(level, "brightness")
    if x.shape[-3] != 3:
        return (x + shift).clamp_(0.0, 1.0)
    value = x.amax(dim=-3, keepdim=True)
    new_value = (value + shift).clamp(0.0, 1.0)
    ratio = divide_where_positive(new_value, value)
    return torch.where(value > 0, x * ratio, new_value).clamp_(0.0, 1.0)


# ------------------------------------------------------------------------ spatter

_EMBOSS = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))
_WATER = (175 / 255.0, 238 / 255.0, 238 / 255.0)
_MUD = (63 / 255.0, 42 / 255.0, 20 / 255.0)


def _water_texture(liquid: torch.Tensor) -> torch.Tensor:
    """The library's OpenCV pipeline on the 8-bit liquid layer (N, H, W) -> float texture."""
    edges = canny(liquid, 50, 150)
    distance = chamfer_distance(edges, 20.0)  # 255 - canny: edges are the zero pixels
    mean = (box_sum3(distance.to(torch.float64)) * (1.0 / 9.0)).to(torch.float32)
    texture = equalize_hist(torch.floor(mean).long())
    emboss = correlate3x3(texture, _EMBOSS).clamp_(0, 255)
    return torch.round(box_sum3(emboss.to(torch.float64)) / 9.0).to(torch.float32)


def _spatter(x: torch.Tensor, level: tuple[float, ...], liquid: torch.Tensor) -> torch.Tensor:
    """spatter with an explicit liquid layer (N, H, W) ~ normal(mean, std)."""
    _, _, sigma, threshold, intensity, mud = level
    c = x.shape[1]
    liquid = gaussian_filter(liquid.to(torch.float64), sigma, bound=_normal_bound(level[0], level[1]))
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mud == 0:
        liquid8 = torch.floor(liquid * 255.0).long().remainder(256)  # numpy's uint8 cast wraps
        mask = liquid8.to(torch.float32) * _water_texture(liquid8)
        mask = divide_where_positive(mask, mask.amax(dim=(1, 2), keepdim=True)) * intensity
        mask = mask.unsqueeze(1).to(device=x.device, dtype=x.dtype)
        colour = torch.tensor(_WATER, dtype=x.dtype, device=x.device)
        if c == 3:
            return (x + mask * colour.view(1, 3, 1, 1)).clamp_(0.0, 1.0)
        tint = sum(g * (mask * v).clamp(0.0, 1.0) for g, v in zip(_LIBRARY_GREY, _WATER))
        return (x + tint).clamp_(0.0, 1.0)
    mask = gaussian_filter((liquid > threshold).to(torch.float64), intensity)
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask).unsqueeze(1).to(device=x.device, dtype=x.dtype)
    colour = torch.tensor(_MUD, dtype=x.dtype, device=x.device)
    if c == 3:
        return (x * (1 - mask) + mask * colour.view(1, 3, 1, 1)).clamp_(0.0, 1.0)
    tint = mask * sum(g * v for g, v in zip(_LIBRARY_GREY, _MUD))
    return (x * (1 - mask) + tint).clamp_(0.0, 1.0)


def spatter(x: torch.Tensor, level: Level, generator: Generators) -> torch.Tensor:
    """Water (``mud`` = 0) or mud (``mud`` = 1) splashes from a thresholded, blurred Gaussian layer.

    ``level`` is ``(mean, std, sigma, threshold, intensity, mud)``: a liquid layer
    ``normal(mean, std)``, Gaussian-blurred (``sigma``), values below ``threshold`` dropped.

    * Water (``mud`` = 0): the library's OpenCV pipeline on the 8-bit layer (the ``uint8``
      cast wraps above 255 like numpy), re-implemented batched: Canny (50, 150; 3x3 Sobel,
      replicated borders, L1 magnitude, OpenCV's fixed-point non-maximum suppression,
      8-connected hysteresis), the 5x5 chamfer distance transform of ``DIST_L2`` (float32
      steps 1, 1.4, 2.1969), truncation at 20, 3x3 box blur, uint8 cast, ``equalizeHist``, the
      emboss kernel ``[[-2,-1,0],[-1,1,1],[0,1,2]]`` and another box blur (reflect-101 borders
      throughout); the layer times that texture, normalised to max 1 (an image without any
      liquid stays unchanged where the library would produce NaN), times ``intensity``,
      tinted (175, 238, 238)/255 and added.
    * Mud (``mud`` = 1): a Gaussian-blurred (sigma = ``intensity``) binary mask, values < 0.8
      dropped, blends towards mud brown (63, 42, 20)/255.

    1-channel images get the library's grey versions (its ``rgb2gray`` weights).
    """
    constant = unpack_level(level, "spatter", ("mean", "std", "sigma", "threshold", "intensity", "mud"))
    n, _, h, w = x.shape
    liquid = normal(generator, n, (h, w), constant[0], constant[1], x.device)
    return _spatter(x, constant, liquid)

"""Parity of bench.corruptions with the reference, imagecorruptions 1.1.2, at the ImageNet-C constants.

Needs the ``test`` extra (imagecorruptions, which pulls opencv-python and scikit-image); the
module is skipped when the package is not installed.  Four natural-looking 32x40 images (the
library refuses sides < 32; non-square catches H/W mix-ups), every severity.  Our outputs are
rounded, the library's float outputs are rounded here too (its ``corrupt()`` truncates).

* deterministic corruptions: at most 1 grey level apart;
* random corruptions, draw for draw: the library runs with numpy's random functions recorded,
  and the same draws are fed to our explicit-randomness functions (``_glass_blur``, ...):
  at most 1 grey level apart;
* random corruptions, in distribution: our own draws vs the library's own draws; the mean
  and the standard deviation of ``corrupted - clean`` of each of 4 images x 4 seeds are
  averaged, and the two averages agree within 4 standard errors of their difference plus
  half a grey level (tight for the noises; frost, whose texture choice dominates, gets
  the width its spread needs);
* OpenCV pieces re-implemented for spatter and frost, against cv2 itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

import bench.corruptions as C
from bench.corruptions import _opencv, _operators, blur, digital, weather
from bench.corruptions.tables import IMAGENET_C

if importlib.util.find_spec("imagecorruptions") is None:
    pytest.skip("imagecorruptions is not installed (pip install -e '.[test]')", allow_module_level=True)

import cv2

from bench.corruptions._reference import load_imagecorruptions

REFERENCE = load_imagecorruptions().corruptions
SEVERITIES = (1, 2, 3, 4, 5)
DETERMINISTIC = (
    "gaussian_blur",
    "defocus_blur",
    "zoom_blur",
    "contrast",
    "brightness",
    "saturate",
    "pixelate",
    "jpeg_compression",
)
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
STRUCTURED = ("glass_blur", "motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform")


pytestmark = pytest.mark.usefixtures("one_thread")


def natural_images(n: int = 4, height: int = 32, width: int = 40, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images with some sharp block edges, uint8 (n, 3, height, width)."""
    gen = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(
        torch.rand(n, 3, 6, 6, generator=gen), size=(height, width), mode="bilinear", align_corners=False
    )
    blocks = torch.nn.functional.interpolate(torch.rand(n, 1, 5, 5, generator=gen), size=(height, width), mode="nearest")
    return ((0.15 + 0.5 * smooth + 0.3 * blocks).clamp(0, 1) * 255).round().to(torch.uint8)


IMAGES = natural_images()


@contextlib.contextmanager
def recorded_draws() -> Iterator[list[np.ndarray]]:
    """Record every value returned by numpy's global normal / uniform / randint."""
    draws: list[np.ndarray] = []
    originals = {name: getattr(np.random, name) for name in ("normal", "uniform", "randint")}

    def recording(original):  # type: ignore[no-untyped-def]
        def draw(*args, **kwargs):  # type: ignore[no-untyped-def]
            value = original(*args, **kwargs)
            draws.append(np.array(value))
            return value

        return draw

    try:
        for name, original in originals.items():
            setattr(np.random, name, recording(original))
        yield draws
    finally:
        for name, original in originals.items():
            setattr(np.random, name, original)


def reference(name: str, image: torch.Tensor, severity: int) -> np.ndarray:
    """The library's float output (C, H, W) on a uint8 (C, H, W) image, as its corrupt() calls it."""
    out = getattr(REFERENCE, name)(Image.fromarray(image.permute(1, 2, 0).numpy()), severity)
    return np.asarray(out, dtype=np.float64).transpose(2, 0, 1)


def grey_levels(x: torch.Tensor) -> np.ndarray:
    return _operators.to_uint8(x).numpy().astype(np.int16)


def rounded(ref: np.ndarray) -> np.ndarray:
    return np.round(np.clip(ref, 0, 255)).astype(np.int16)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_match(name: str) -> None:
    for severity in SEVERITIES:
        ours = C.corrupt(IMAGES, name, IMAGENET_C[name][severity - 1], seed=0).numpy().astype(np.int16)
        for image, got in zip(IMAGES, ours):
            assert np.abs(got - rounded(reference(name, image, severity))).max() <= 1, (name, severity)


def replay(name: str, x: torch.Tensor, level: tuple[float, ...], draws: list[np.ndarray]) -> torch.Tensor:
    """Our explicit-randomness function for ``name`` on one image (1, C, H, W), fed the library's draws."""
    h = x.shape[2]
    if name == "glass_blur":
        offsets = torch.from_numpy(np.stack(draws).reshape(1, int(level[2]), -1, 2)).long()
        return blur._glass_blur(x, level[0], int(level[1]), offsets)
    if name == "motion_blur":
        return _operators.motion_blur_at_angles(x, int(level[0]), level[1], torch.tensor([float(draws[0])])).clamp(0, 1)
    if name == "snow":
        return weather._snow(x, level, torch.from_numpy(draws[0])[None], torch.tensor([float(draws[1])]))
    if name == "frost":
        textures = weather._frost_textures(h, x.shape[3], level[2])
        origin = torch.tensor([[int(draws[1]), int(draws[2])]])
        return weather._frost(x, level[0], level[1], textures, torch.tensor([int(draws[0])]), origin)
    if name == "fog":
        pending = iter(draws)

        def uniform(low: float, high: float, shape: tuple[int, ...]) -> torch.Tensor:
            value = next(pending)
            assert value.shape == shape
            return torch.from_numpy(value)[None]

        side = 2 ** (max(x.shape[2:]) - 1).bit_length()
        return weather._fog(x, level[0], weather._plasma_fractal(1, side, level[1], uniform))
    if name == "spatter":
        return weather._spatter(x, level, torch.from_numpy(draws[0])[None])
    if name == "elastic_transform":
        max_shift = h * 0.005  # the library's uniform(-max_dx, max_dx); ours is U(-1, 1)
        noise = [torch.from_numpy(d / max_shift)[None] for d in draws]
        return digital._elastic(x, level, None, noise[0], noise[1])
    raise AssertionError(name)


@pytest.mark.parametrize("name", STRUCTURED)
def test_random_corruptions_match_draw_for_draw(name: str) -> None:
    np.random.seed(1234)
    for severity in SEVERITIES:
        level = C.normalize_level(IMAGENET_C[name][severity - 1])
        for image in IMAGES:
            with recorded_draws() as draws:
                ref = reference(name, image, severity)
            ours = replay(name, image[None].float() / 255.0, level, draws)[0]  # type: ignore[arg-type]
            diff = np.abs(grey_levels(ours) - rounded(ref))
            assert diff.max() <= 1, (name, severity, diff.max())
            # frost: cv2's SIMD bicubic rounds the texture differently on a few percent of pixels
            assert (diff > 0).mean() <= (0.1 if name == "frost" else 0.01), (name, severity)


STAT_SEEDS = 4
STAT_SIGMAS = 4.0  # tolerance: this many standard errors of the difference, plus half a grey level


def per_sample(diffs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of (corrupted - clean) of every (seed, image) sample."""
    samples = np.concatenate([d.reshape(d.shape[0], -1) for d in diffs]).astype(np.float64)
    return samples.mean(axis=1), samples.std(axis=1)


def agree(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """(|difference of the averages|, allowed) for two sets of per-sample statistics."""
    error = np.sqrt(ours.var(ddof=1) / len(ours) + theirs.var(ddof=1) / len(theirs))
    return abs(float(ours.mean() - theirs.mean())), STAT_SIGMAS * float(error) + 0.5


@pytest.mark.slow
@pytest.mark.parametrize("name", NOISES + STRUCTURED)
def test_random_corruptions_match_in_distribution(name: str) -> None:
    clean = IMAGES.numpy().astype(np.int16)
    for severity in SEVERITIES:
        level = IMAGENET_C[name][severity - 1]
        ours, theirs = [], []
        for repeat in range(STAT_SEEDS):
            ours.append(C.corrupt(IMAGES, name, level, seed=C.seed_for("parity", name, severity, repeat)).numpy() - clean)
            np.random.seed(1000 * severity + repeat)
            theirs.append(np.stack([rounded(reference(name, image, severity)) for image in IMAGES]) - clean)
        for statistic, (mine, reference_values) in zip(("mean", "std"), zip(per_sample(ours), per_sample(theirs))):
            gap, allowed = agree(mine, reference_values)
            assert gap <= allowed, (name, severity, statistic, gap, allowed)


# ------------------------------------------------------------- OpenCV pieces


def liquid_layers(count: int = 40) -> list[np.ndarray]:
    """8-bit thresholded smooth Gaussian layers like spatter's, with isolated pixels and thin lines."""
    from skimage.filters import gaussian

    rng = np.random.default_rng(0)
    layers = []
    for i in range(count):
        layer = gaussian(rng.normal(0.65, 0.3, (32, 40)), sigma=1 + i % 3)
        layer[layer < 0.68] = 0
        layers.append((layer * 255).astype(np.uint8))
    return layers


def test_canny_distance_and_water_texture_match_cv2() -> None:
    layers = liquid_layers()
    batch = torch.from_numpy(np.stack(layers).astype(np.int64))
    edges = _opencv.canny(batch, 50, 150).numpy()
    textures = weather._water_texture(batch).numpy()
    mismatched_textures = 0
    for layer, edge, texture in zip(layers, edges, textures):
        reference_edges = cv2.Canny(layer, 50, 150)
        assert np.array_equal(edge, reference_edges > 0)
        distance = cv2.threshold(cv2.distanceTransform(255 - reference_edges, cv2.DIST_L2, 5), 20, 20, cv2.THRESH_TRUNC)[1]
        ours = _opencv.chamfer_distance(torch.from_numpy(reference_edges > 0)[None], 20.0)[0].numpy()
        assert np.abs(ours - distance).max() < 1e-5  # float32 sums in another order: last bits
        blurred = cv2.equalizeHist(cv2.blur(distance, (3, 3)).astype(np.uint8))
        kernel = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        reference_texture = cv2.blur(cv2.filter2D(blurred, cv2.CV_8U, kernel), (3, 3)).astype(np.float32)
        mismatched_textures += not np.array_equal(texture, reference_texture)
    assert mismatched_textures <= 2  # a last-bit distance difference can flip one truncation


def test_equalize_hist_matches_cv2() -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, rng.integers(2, 22), size=(32, 40)).astype(np.uint8) for _ in range(300)]
    images.append(np.full((32, 40), 7, np.uint8))
    ours = _opencv.equalize_hist(torch.from_numpy(np.stack(images).astype(np.int64))).numpy()
    for image, got in zip(images, ours):
        assert np.array_equal(got, cv2.equalizeHist(image))


def test_frost_textures_match_cv2_resize() -> None:
    texture = weather._frost_texture(1).permute(1, 2, 0).numpy()
    th, tw = texture.shape[:2]
    cubic = cv2.resize(texture, (int(np.ceil(tw * 1.1)), int(np.ceil(th * 1.1))), interpolation=cv2.INTER_CUBIC)
    ours = weather._frost_textures(32, 40, 1.1)[1].permute(1, 2, 0).numpy().astype(np.int16)
    assert ours.shape == cubic.shape
    assert np.abs(ours - cubic).max() <= 1 and (ours != cubic).mean() < 0.1
    linear = cv2.resize(texture, (0, 0), fx=0.2, fy=0.2)  # make_cifar_c.py
    assert np.array_equal(weather._frost_textures(32, 32, 0.2)[1].permute(1, 2, 0).numpy(), linear)


def test_elastic_affine_warp_matches_cv2() -> None:
    rng = np.random.default_rng(2)
    image = IMAGES[:1].float() / 255.0
    hwc = image[0].permute(1, 2, 0).numpy()
    h, w = hwc.shape[:2]
    jitter = rng.uniform(-2.5, 2.5, size=(3, 2)).astype(np.float32)
    centre, size = np.float32((h, w)) // 2, min(h, w) // 3
    points = np.float32([centre + size, [centre[0] + size, centre[1] - size], centre - size])
    matrix = cv2.getAffineTransform(points, points + jitter)
    expected = cv2.warpAffine(hwc, matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    rows, cols = digital._affine_sources(torch.from_numpy(jitter)[None], h, w)
    ours = _operators.bilinear_sample(image, rows, cols, "reflect")[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - expected).max() < 1e-4

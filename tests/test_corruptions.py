"""Tests for bench.corruptions: determinism, ranges, monotonicity and reference parity."""

from __future__ import annotations

import colorsys
import io
import itertools

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from PIL import Image

import bench.corruptions as C
from bench.corruptions import (
    CORRUPTIONS,
    RANDOM_CORRUPTIONS,
    blur,
    corrupt,
    seed_for,
    weather,
)
from bench.corruptions.tables import (
    ALL_CORRUPTIONS,
    CIFAR10_C,
    IMAGENET_C,
    MIX1,
    MIX2,
    MNIST_C_GEOMETRIC,
    MNIST_C_STROKES,
)

# Constants by increasing severity 1..5: the ImageNet-C constants of imagecorruptions 1.1.2
# (bench.corruptions.tables.IMAGENET_C) plus our uniform_noise and MNIST-C's geometric corruptions.
SEVERITY_LEVELS: dict[str, tuple] = {
    **IMAGENET_C, "uniform_noise": (0.05, 0.1, 0.2, 0.3, 0.4), **MNIST_C_GEOMETRIC, **MNIST_C_STROKES,
}
# corruptions whose deviation from the clean image grows strictly with severity at these constants
MONOTONE = [
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "uniform_noise", "gaussian_blur",
    "defocus_blur", "zoom_blur", "contrast", "brightness", "pixelate", "jpeg_compression",
    "motion_blur", "elastic_transform", "shear", "scale", "translate",  # rotate: saturates past 0.8 rad here
    "stripe", "dotted_line", "zigzag",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def natural_images(n: int = 12, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth random images with some sharp edges, uint8 (n, channels, size, size)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 6, 6, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    # 5x5 blocks do not line up with the pixelation grids at any tested level
    coarse_blocks = torch.rand(n, 1, 5, 5, generator=gen)
    blocks = torch.nn.functional.interpolate(coarse_blocks, size=(size, size), mode="nearest")
    images = 0.15 + 0.5 * smooth + 0.3 * blocks
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return natural_images()


def mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


def test_registry_and_tables_cover_all_corruptions() -> None:
    mnist_c = set(MNIST_C_GEOMETRIC) | set(MNIST_C_STROKES)
    assert set(CORRUPTIONS) == set(SEVERITY_LEVELS) == set(ALL_CORRUPTIONS) | {"uniform_noise"} | mnist_c
    assert set(CIFAR10_C) == set(IMAGENET_C) == set(ALL_CORRUPTIONS) and len(ALL_CORRUPTIONS) == 19
    assert all(len(levels) == 5 for table in (CIFAR10_C, IMAGENET_C) for levels in table.values())
    assert len(MIX1) == 9 and len(MIX2) == 10 and set(MIX1) | set(MIX2) == set(ALL_CORRUPTIONS)
    assert RANDOM_CORRUPTIONS <= set(CORRUPTIONS)


@pytest.mark.parametrize("name", sorted(SEVERITY_LEVELS))
@pytest.mark.parametrize("shape", [(5, 3, 32, 32), (2, 1, 24, 40), (3, 3, 8, 8)])
def test_dtype_shape_range(name: str, shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(1)
    images = (torch.rand(shape, generator=gen) * 255).round().to(torch.uint8)
    level = SEVERITY_LEVELS[name][2]
    out = corrupt(images, name, level, seed=3)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    y = CORRUPTIONS[name](images.float() / 255, C.normalize_level(level), torch.Generator().manual_seed(3))
    assert y.dtype == torch.float32 and y.shape == images.shape
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", sorted(SEVERITY_LEVELS))
def test_deterministic_and_seed_dependent(images: torch.Tensor, name: str) -> None:
    level = SEVERITY_LEVELS[name][2]
    first = corrupt(images, name, level, seed=123)
    assert torch.equal(first, corrupt(images, name, level, seed=123))
    other = corrupt(images, name, level, seed=124)
    if name in RANDOM_CORRUPTIONS:
        assert not torch.equal(first, other)
    else:
        assert torch.equal(first, other)


def test_global_rng_is_not_used(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = corrupt(images, "gaussian_noise", 0.1, seed=5)
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(99)
    assert torch.equal(a, corrupt(images, "gaussian_noise", 0.1, seed=5))


@pytest.mark.parametrize("name", sorted(SEVERITY_LEVELS))
def test_deviation_grows_with_severity(images: torch.Tensor, name: str) -> None:
    for table in (SEVERITY_LEVELS, CIFAR10_C if name in CIFAR10_C else SEVERITY_LEVELS):
        deviations = [mad(corrupt(images, name, level, seed=7), images) for level in table[name]]
        assert min(deviations) > 0.3, deviations  # every severity changes the images
        if name in MONOTONE and table is SEVERITY_LEVELS:
            assert all(b > a for a, b in itertools.pairwise(deviations)), deviations


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("gaussian_blur", 6),
        ("defocus_blur", 6),
        ("defocus_blur", 0.3),
        ("zoom_blur", 1.31),
        ("pixelate", 0.3),
        ("contrast", 0.05),
        ("motion_blur", (15, 8)),
        ("elastic_transform", (0.05, 0.2, 0.07)),
        ("elastic_transform", (0.15, 0.01, 0.0)),
        ("saturate", (5, 0)),
    ],
)
def test_constant_image_stays_constant(name: str, level: float) -> None:
    images = torch.full((2, 3, 32, 32), 137, dtype=torch.uint8)
    assert torch.equal(corrupt(images, name, level, seed=0), images)


def test_defocus_kernel_mass_quirk_is_reproduced() -> None:
    # imagecorruptions' disk() anti-aliases with reflect-101 borders, which adds mass once
    # the disk reaches the grid edge (radius >= 7): a constant image gets slightly brighter.
    images = torch.full((1, 3, 16, 16), 137, dtype=torch.uint8)
    kernel_sum = reference_disk(8.0, 0.5).sum()
    assert kernel_sum > 1.01
    expected = round(137 * kernel_sum)
    assert torch.equal(corrupt(images, "defocus_blur", 8.0, seed=0), torch.full_like(images, expected))


def test_rounds_to_nearest() -> None:
    images = torch.full((1, 1, 8, 8), 100, dtype=torch.uint8)
    # 100.6 -> 101 (truncation would give 100), 100.4 -> 100
    assert torch.equal(corrupt(images, "brightness", 0.6 / 255, seed=0), images + 1)
    assert torch.equal(corrupt(images, "brightness", 0.4 / 255, seed=0), images)


@pytest.mark.parametrize("sigma", [0.4, 1.0, 2.5, 6.0])
def test_gaussian_blur_matches_scipy(images: torch.Tensor, sigma: float) -> None:
    images = images[:, :, :, 3:]  # non-square, catches H/W mix-ups
    x = images.numpy() / 255.0
    ref = ndi.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
    ref = np.round(np.clip(ref, 0, 1) * 255)
    out = corrupt(images, "gaussian_blur", sigma, seed=0).numpy().astype(np.float64)
    assert np.abs(out - ref).max() <= 1


def reference_disk(radius: float, alias_blur: float) -> np.ndarray:
    """imagecorruptions' disk(), with cv2.GaussianBlur spelled out via scipy (reflect-101)."""
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    half = 1 if radius <= 8 else 2
    taps = np.exp(-np.arange(-half, half + 1) ** 2 / (2 * alias_blur**2))
    taps /= taps.sum()
    disk = ndi.correlate1d(disk, taps, axis=0, mode="mirror")
    return ndi.correlate1d(disk, taps, axis=1, mode="mirror")


@pytest.mark.parametrize("radius", [0.5, 1.0, 1.5, 3.0, 6.0, 10.0])
@pytest.mark.parametrize("crop", [(32, 27), (8, 8)])
def test_defocus_blur_matches_reference(images: torch.Tensor, radius: float, crop: tuple[int, int]) -> None:
    images = images[:4, :, : crop[0], : crop[1]]  # 8x8: the 17x17 kernel is wider than the image
    kernel = reference_disk(radius, 0.5)
    x = images.numpy() / 255.0
    ref = np.stack([[ndi.correlate(ch, kernel, mode="mirror") for ch in img] for img in x])
    ref = np.round(np.clip(ref, 0, 1) * 255)
    out = corrupt(images, "defocus_blur", radius, seed=0).numpy().astype(np.float64)
    assert np.abs(out - ref).max() <= 1


def reference_zoom_blur(image: np.ndarray, level: float) -> np.ndarray:
    """imagecorruptions' zoom_blur on one (H, W, C) float image with factors arange(1, level, 0.01)."""
    height, width = image.shape[:2]
    factors = np.arange(1, level, 0.01)
    out = np.zeros_like(image)
    for z in factors:
        ch0, ch1 = int(np.ceil(height / z)), int(np.ceil(width / z))
        top0, top1 = (height - ch0) // 2, (width - ch1) // 2
        zoomed = ndi.zoom(image[top0 : top0 + ch0, top1 : top1 + ch1], (z, z, 1), order=1)
        out += zoomed[:height, :width]
    return (image + out) / (len(factors) + 1)


@pytest.mark.parametrize("level", [1.06, 1.16, 1.31])
def test_zoom_blur_matches_reference(level: float) -> None:
    images = natural_images(n=2, size=32)[:, :, :, :28]  # non-square on purpose
    out = corrupt(images, "zoom_blur", level, seed=0).numpy().astype(np.float64)
    for img, got in zip(images.numpy(), out):
        ref = reference_zoom_blur(img.transpose(1, 2, 0) / 255.0, level).transpose(2, 0, 1)
        assert np.abs(got - np.round(np.clip(ref, 0, 1) * 255)).max() <= 1


@pytest.mark.parametrize("level", [0.95, 0.6, 0.25])
def test_pixelate_matches_pil(images: torch.Tensor, level: float) -> None:
    out = corrupt(images, "pixelate", level, seed=0).numpy().astype(np.int16)
    for img, got in zip(images.numpy(), out):
        pil = Image.fromarray(img.transpose(1, 2, 0))
        small = pil.resize((int(32 * level), int(32 * level)), Image.BOX)
        ref = np.asarray(small.resize((32, 32), Image.NEAREST)).transpose(2, 0, 1).astype(np.int16)
        assert np.abs(got - ref).max() <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_matches_pil(channels: int) -> None:
    images = natural_images(n=3, channels=channels)
    out = corrupt(images, "jpeg_compression", 18, seed=0)
    for img, got in zip(images.numpy(), out.numpy()):
        pil = Image.fromarray(img[0] if channels == 1 else img.transpose(1, 2, 0)).convert("RGB")
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=18)
        decoded = Image.open(io.BytesIO(buffer.getvalue()))
        if channels == 1:
            ref = np.asarray(decoded.convert("L"))[None]
        else:
            ref = np.asarray(decoded.convert("RGB")).transpose(2, 0, 1)
        assert np.array_equal(got, ref)


def test_brightness_matches_hsv_roundtrip() -> None:
    images = natural_images(n=2, size=16)
    images[0, :, :2, :2] = 0  # black pixels become grey
    images[1, :, 3, :] = 200  # grey row stays grey
    out = corrupt(images, "brightness", 0.3, seed=0).numpy().astype(np.int16)
    for img, got in zip(images.numpy() / 255.0, out):
        ref = np.empty_like(img)
        for i in range(img.shape[1]):
            for j in range(img.shape[2]):
                h, s, v = colorsys.rgb_to_hsv(*img[:, i, j])
                ref[:, i, j] = colorsys.hsv_to_rgb(h, s, min(v + 0.3, 1.0))
        assert np.abs(got - np.round(ref * 255)).max() <= 1
    grey = torch.full((1, 1, 4, 4), 250, dtype=torch.uint8)
    assert torch.equal(corrupt(grey, "brightness", 0.1, seed=0), torch.full_like(grey, 255))


def test_contrast(images: torch.Tensor) -> None:
    assert (corrupt(images, "contrast", 1.0, seed=0).int() - images.int()).abs().max() <= 1
    x = images.numpy() / 255.0
    means = x.mean(axis=(2, 3), keepdims=True)
    ref = np.round(np.clip((x - means) * 0.3 + means, 0, 1) * 255)
    assert np.abs(corrupt(images, "contrast", 0.3, seed=0).numpy() - ref).max() <= 1


def test_uniform_noise_statistics() -> None:
    images = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)
    level = 0.2
    diff = corrupt(images, "uniform_noise", level, seed=11).float() - images.float()
    assert abs(diff.mean().item()) < 0.5
    assert diff.abs().max().item() <= level * 255 + 1
    assert diff.std().item() == pytest.approx(level * 255 / 3**0.5, rel=0.02)


def test_gaussian_and_shot_noise_statistics() -> None:
    images = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)
    diff = corrupt(images, "gaussian_noise", 0.08, seed=2).float() - images.float()
    assert abs(diff.mean().item()) < 0.5
    assert diff.std().item() == pytest.approx(0.08 * 255, rel=0.03)
    photons = 60
    shot = corrupt(images, "shot_noise", photons, seed=2).float() / 255
    assert shot.mean().item() == pytest.approx(128 / 255, abs=0.005)
    assert shot.var().item() == pytest.approx(128 / 255 / photons, rel=0.05)


def test_impulse_noise_fraction() -> None:
    images = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)
    out = corrupt(images, "impulse_noise", 0.1, seed=4)
    salt = (out == 255).float().mean().item()
    pepper = (out == 0).float().mean().item()
    assert salt == pytest.approx(0.05, abs=0.005) and pepper == pytest.approx(0.05, abs=0.005)
    assert torch.all((out == 128) | (out == 0) | (out == 255))
    # channels are hit independently, like skimage random_noise on an (H, W, C) array
    hit = out != 128
    assert (hit.all(dim=1) != hit.any(dim=1)).any()


def test_unknown_name_and_bad_input() -> None:
    images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="gaussian_noise") as info:
        corrupt(images, "hail", 1.0, seed=0)
    assert all(name in str(info.value) for name in CORRUPTIONS)
    with pytest.raises(TypeError):
        corrupt(images.float(), "contrast", 0.5, seed=0)
    with pytest.raises(ValueError):
        corrupt(images[0], "contrast", 0.5, seed=0)


def test_seed_for_is_stable_and_distinguishes_types() -> None:
    assert seed_for(0, "gaussian_noise", 3) == 7406346412779704241  # golden: must never change
    parts = [(1,), (1.0,), ("1",), (True,), ((1,),), (1, 2), (12,)]
    seeds = {seed_for(*p) for p in parts}
    assert len(seeds) == 7
    assert seed_for(np.int64(5), "x") == seed_for(5, "x")
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(TypeError):
        seed_for(object())


@pytest.mark.parametrize("name", sorted(RANDOM_CORRUPTIONS))
def test_per_image_seeds_do_not_depend_on_the_batch(images: torch.Tensor, name: str) -> None:
    level = CIFAR10_C.get(name, SEVERITY_LEVELS[name])[3]
    seeds = [seed_for(5, name, i) for i in range(len(images))]
    whole = corrupt(images, name, level, seeds)
    parts = torch.cat([corrupt(images[:5], name, level, seeds[:5]), corrupt(images[5:], name, level, seeds[5:])])
    assert torch.equal(whole, parts)
    assert torch.equal(whole[3:4], corrupt(images[3:4], name, level, [seeds[3]]))
    assert not torch.equal(whole, corrupt(images, name, level, [s + 1 for s in seeds]))


def test_per_image_seeded_batches_are_corrupted_in_chunks_with_the_same_bytes(monkeypatch) -> None:
    """Large per-image-seeded batches run PER_IMAGE_CHUNK images at a time (fog at MNIST-C's 256 map
    took 20 GB for 10,000 images at once): the bytes are those of one call per image."""
    from bench.corruptions import _registry

    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (7, 1, 28, 28), dtype=torch.uint8, generator=rng)
    seeds = [seed_for(9, "fog", i) for i in range(len(images))]
    whole = corrupt(images, "fog", (0.5, 2, 256), seeds)
    calls = []
    real_apply = _registry._apply
    monkeypatch.setattr(_registry, "PER_IMAGE_CHUNK", 3)
    monkeypatch.setattr(_registry, "_apply", lambda fn, x, *rest: calls.append(len(x)) or real_apply(fn, x, *rest))
    assert torch.equal(corrupt(images, "fog", (0.5, 2, 256), seeds), whole)
    assert calls == [3, 3, 1]
    calls.clear()
    corrupt(images, "fog", (0.5, 2, 256), 4)  # one seed for the batch: its draws are sequential, never chunked
    assert calls == [7]


def test_fog_draws_its_per_image_fractals_in_chunks_with_the_same_bytes(monkeypatch) -> None:
    """fog keeps its float64 maps under TEMPORARY_BYTES per call (heap memory, no page faults): with
    one generator per image the chunks give the bytes of one batch; one shared generator never chunks."""
    from bench.corruptions import _operators, weather

    rng = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (7, 1, 28, 28), dtype=torch.uint8, generator=rng)
    seeds = [seed_for(3, "fog", i) for i in range(len(images))]
    whole = corrupt(images, "fog", (0.5, 2, 256), seeds)
    shared = corrupt(images, "fog", (0.5, 2, 256), 5)
    fractals = []
    real_fractal = weather._plasma_fractal
    monkeypatch.setattr(_operators, "TEMPORARY_BYTES", 3 * 8 * 256 * 256)  # three 256 x 256 maps per call
    monkeypatch.setattr(weather, "_plasma_fractal", lambda n, *rest: fractals.append(n) or real_fractal(n, *rest))
    assert torch.equal(corrupt(images, "fog", (0.5, 2, 256), seeds), whole)
    assert fractals == [3, 3, 1]
    fractals.clear()
    assert torch.equal(corrupt(images, "fog", (0.5, 2, 256), 5), shared)
    assert fractals == [7]


@pytest.mark.parametrize("name", ["zigzag", "dotted_line"])
def test_strokes_are_drawn_in_chunks_under_the_byte_budget_with_the_same_bytes(monkeypatch, name: str) -> None:
    """The strokes' float64 (images, K, H, W) line temporaries stay under TEMPORARY_BYTES (heap memory,
    no page faults: 256 images of 5 zigzags took 104 MB at once), and the chunk size changes no byte."""
    from bench.corruptions import _operators, overlay

    rng = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (9, 1, 28, 28), dtype=torch.uint8, generator=rng)
    seeds = [seed_for(4, name, i) for i in range(len(images))]
    whole = corrupt(images, name, 5, seeds)
    chunks = []  # (images, segments per image) of each line_from_points call
    real_lines = overlay.line_from_points
    monkeypatch.setattr(overlay, "line_from_points",
                        lambda segments, *rest: chunks.append(tuple(segments.shape[:2])) or real_lines(segments, *rest))
    budget = 3 * 5 * 28 * 28 * 8  # three images of five lines
    monkeypatch.setattr(_operators, "TEMPORARY_BYTES", budget)
    assert torch.equal(corrupt(images, name, 5, seeds), whole)
    assert sum(n for n, _ in chunks) == len(images) and len(chunks) > 1
    assert all(n == 1 or n * k * 28 * 28 * 8 <= budget for n, k in chunks), chunks


def test_seed_and_level_validation(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="seeds"):
        corrupt(images, "gaussian_noise", 0.1, [1, 2])
    with pytest.raises(TypeError):
        corrupt(images, "gaussian_noise", 0.1, "7")
    with pytest.raises(ValueError, match="sigma, max_delta, iterations"):
        corrupt(images, "glass_blur", 0.5, 0)
    with pytest.raises(ValueError, match="radius, sigma"):
        corrupt(images, "motion_blur", (1, 2, 3), 0)
    with pytest.raises(TypeError):
        corrupt(images, "gaussian_noise", (0.1, 0.2), 0)
    with pytest.raises(TypeError):
        corrupt(images, "contrast", "0.5", 0)
    with pytest.raises(ValueError):
        CORRUPTIONS["gaussian_noise"](images.float() / 255, 0.1, [torch.Generator()])


def test_bare_numbers_keep_their_meaning(images: torch.Tensor) -> None:
    assert torch.equal(corrupt(images, "defocus_blur", 3, 0), corrupt(images, "defocus_blur", (3, 0.5), 0))
    assert torch.equal(corrupt(images, "zoom_blur", 1.16, 0), corrupt(images, "zoom_blur", (1.16, 0.01), 0))
    # the CIFAR-10-C defocus pairs differ although all radii are < 1
    small = [corrupt(images, "defocus_blur", level, 0) for level in CIFAR10_C["defocus_blur"][:3]]
    assert not torch.equal(small[0], small[1]) and not torch.equal(small[1], small[2])
    assert torch.equal(corrupt(images, "contrast", np.float32(0.5), 0), corrupt(images, "contrast", 0.5, 0))


def sequential_glass_sources(offsets: np.ndarray, height: int, width: int, delta: int) -> np.ndarray:
    """The library's loop on an index image: ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on views."""
    index = np.arange(height * width).reshape(height, width, 1).repeat(2, axis=2)  # 1-D views like RGB
    for sweep in offsets:
        k = 0
        for h in range(height - delta, delta, -1):
            for w in range(width - delta, delta, -1):
                dx, dy = sweep[k]
                k += 1
                index[h, w], index[h + dy, w + dx] = index[h + dy, w + dx], index[h, w]
    return index[:, :, 0].reshape(-1)


@pytest.mark.parametrize(("delta", "iterations", "size"), [(1, 2, (9, 11)), (2, 3, (12, 10)), (4, 2, (12, 12))])
def test_glass_pixel_moves_match_the_sequential_loop(delta: int, iterations: int, size: tuple[int, int]) -> None:
    h, w = size
    rng = np.random.default_rng(delta)
    visited = (h - 2 * delta) * (w - 2 * delta)
    offsets = rng.integers(-delta, delta, size=(3, iterations, visited, 2))
    ours = blur._glass_sources(torch.from_numpy(offsets), h, w, delta).numpy()
    for got, image_offsets in zip(ours, offsets):
        assert np.array_equal(got, sequential_glass_sources(image_offsets, h, w, delta))


def test_frost_textures_are_found_without_importing_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    assert weather._frost_dir().is_dir()
    monkeypatch.setattr(weather.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install imagecorruptions"):
        weather._frost_dir()


def test_new_corruptions_on_grey_and_small_images() -> None:
    grey = natural_images(n=2, size=32, channels=1)
    for name in ("glass_blur", "motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform", "saturate"):
        for table in (CIFAR10_C, IMAGENET_C):
            out = corrupt(grey, name, table[name][4], seed=1)
            assert out.shape == grey.shape
    assert torch.equal(corrupt(grey, "saturate", (5, 0.1), 0), grey)  # grey stays grey
    tiny = natural_images(n=2, size=8)
    for name in ALL_CORRUPTIONS:  # kernels, zooms and shifts larger than the image
        assert corrupt(tiny, name, IMAGENET_C[name][4], seed=2).shape == tiny.shape


def test_saturate_matches_hsv_roundtrip() -> None:
    images = natural_images(n=2, size=12)
    images[0, :, :2, :2] = 90  # grey pixels get hue 0 (red) once saturated
    for level in [(0.3, 0.0), (5.0, 0.1)]:
        out = corrupt(images, "saturate", level, seed=0).numpy().astype(np.int16)
        for img, got in zip(images.numpy() / 255.0, out):
            ref = np.empty_like(img)
            for i in range(img.shape[1]):
                for j in range(img.shape[2]):
                    h, s, v = colorsys.rgb_to_hsv(*img[:, i, j])
                    ref[:, i, j] = colorsys.hsv_to_rgb(h, min(max(s * level[0] + level[1], 0.0), 1.0), v)
            assert np.abs(got - np.round(ref * 255)).max() <= 1


# ------------------------------------------------------------ MNIST-C's geometric corruptions


def digit_like(n: int = 6, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Bright blobs on a black background away from the border (as MNIST / Fashion-MNIST), uint8 (n, 1, size, size)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, size, size)
    images[:, :, 8:20, 9:19] = 0.3 + 0.7 * torch.rand(n, 1, 12, 10, generator=gen)
    return (images * 255).round().to(torch.uint8)


def test_translate_shifts_by_the_stated_offset_either_way() -> None:
    images = digit_like()
    out = corrupt(images, "translate", 3, seed=[11 * i for i in range(len(images))])
    directions = set()
    for image, shifted in zip(images, out):
        # output pixel p shows source p + (dx, dy): the content moves by (-dy, -dx) (rows, cols)
        matches = [(dy, dx) for dy in (-3, 3) for dx in (-3, 3)
                   if torch.equal(shifted, torch.roll(image, shifts=(-dy, -dx), dims=(-2, -1)))]
        assert len(matches) == 1  # content away from the border: the roll is the shift
        directions.add(matches[0])
    assert len(directions) > 1  # the direction is drawn per image


def test_rotate_by_a_quarter_turn_permutes_pixels_and_small_angles_keep_the_histogram() -> None:
    images = digit_like(size=28)
    quarter = corrupt(images, "rotate", np.pi / 2, seed=[3 * i for i in range(len(images))])
    for image, rotated in zip(images, quarter):
        assert any(torch.equal(rotated, torch.rot90(image, k, dims=(-2, -1))) for k in (1, 3))
    flat = (images > 0).to(torch.uint8) * 200  # flat blobs: interpolation changes only their edges
    tilted = corrupt(flat, "rotate", 0.4, seed=5).float()
    # up to interpolation: the same total intensity, the same area above half the level
    assert torch.allclose(tilted.sum((1, 2, 3)), flat.float().sum((1, 2, 3)), rtol=0.02)
    area = (flat >= 100).sum((1, 2, 3)).float()
    assert ((tilted >= 100).sum((1, 2, 3)).float() - area).abs().max() <= 0.1 * area.max()


def test_scale_shrinks_about_the_centre_and_shear_keeps_it() -> None:
    images = torch.zeros(1, 1, 29, 29, dtype=torch.uint8)
    images[0, 0, 14, 14] = 255  # the centre pixel: fixed by shear, rotate and scale
    for name, level in (("shear", 0.6), ("rotate", 0.8), ("scale", 2.0)):
        assert corrupt(images, name, level, seed=0)[0, 0, 14, 14] == 255, name
    block = digit_like(1, 29)
    halved = corrupt(block, "scale", 2.0, seed=0)
    assert (halved > 0).sum() < 0.3 * (block > 0).sum()  # a quarter of the area, up to interpolation
    assert halved[0, 0, :7].sum() == 0 and halved[0, 0, 22:].sum() == 0


@pytest.mark.parametrize("name", sorted(MNIST_C_GEOMETRIC))
def test_geometric_corruptions_are_seeded_per_image(name: str) -> None:
    images = digit_like(8)
    seeds = [seed_for(0, "make-c", name, 3, i) for i in range(len(images))]
    level = MNIST_C_GEOMETRIC[name][2]
    out = corrupt(images, name, level, seeds)
    assert torch.equal(out, corrupt(images, name, level, seeds))
    assert torch.equal(out[2:5], corrupt(images[2:5], name, level, seeds[2:5]))


# ------------------------------------------------------------------- strokes (overlay)


def mnist_c_line(c0: float, r0: float, c1: float, r1: float, size: int = 28) -> np.ndarray:
    """MNIST-C's line_from_points (google-research/mnist-c corruptions.py), restated in numpy."""
    if c1 == c0:
        return np.zeros((size, size))
    cc, rr = np.meshgrid(np.linspace(0, size - 1, size), np.linspace(0, size - 1, size), sparse=True)
    dist = np.clip(np.abs(rr - ((r1 - r0) / (c1 - c0) * (cc - c0) + r0)), 0, 2.3 - 1e-10)
    line = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    line[:, : int(np.floor(c0))] = 0
    line[:, int(np.ceil(c1)):] = 0
    return line


@pytest.mark.parametrize("segment", [(0, 3, 27, 20), (2.0, 14.0, 4.3, 12.1), (5, 5, 5, 9), (3.5, 27, 21.2, 0)])
def test_lines_are_mnist_cs(segment: tuple[float, ...]) -> None:
    from bench.corruptions.overlay import line_from_points

    ours = line_from_points(torch.tensor(segment, dtype=torch.float64), 28, 28).numpy()
    assert np.abs(ours - mnist_c_line(*segment)).max() < 1e-12


@pytest.mark.parametrize("width", [1, 3, 7])
def test_stripe_inverts_exactly_one_band_of_its_width(width: int) -> None:
    images = natural_images(n=8, size=28, channels=1)
    out = corrupt(images, "stripe", width, seed=[5 * i for i in range(len(images))])
    starts = set()
    for image, striped in zip(images, out):
        changed_columns = (striped != image).all(dim=-2).squeeze(0)  # every pixel of a column changed
        assert torch.equal((striped != image).any(dim=-2).squeeze(0), changed_columns)  # whole columns only
        columns = torch.nonzero(changed_columns).flatten().tolist()
        assert columns == list(range(columns[0], columns[0] + width))  # one band: one line of that width
        assert torch.equal(striped[..., columns], 255 - image[..., columns])
        starts.add(columns[0])
    assert len(starts) > 1


@pytest.mark.parametrize("name, level", [("dotted_line", 1), ("dotted_line", 4), ("zigzag", 1), ("zigzag", 3)])
def test_strokes_only_add_brightness_and_dotted_lines_skip_every_other_pair_of_columns(name: str, level: int) -> None:
    images = digit_like(8)
    out = corrupt(images, name, level, seed=[7 * i for i in range(len(images))])
    assert (out >= images).all() and (out > images).any()
    if name == "dotted_line":
        off = (torch.arange(28) // 2) % 2 == 0
        assert torch.equal(out[..., off], images[..., off])
        assert all((o > i).any() for o, i in zip(out, images))  # a line across every image


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_canny_edges_are_binary_and_skimages(sigma: float) -> None:
    feature = pytest.importorskip("skimage.feature")
    images = torch.cat([natural_images(n=6, size=28, channels=1), digit_like(6)])
    out = corrupt(images, "canny_edges", sigma, seed=0)
    assert set(out.unique().tolist()) == {0, 255}  # binary
    for image, edges in zip(images, out):
        reference = feature.canny(image[0].double().numpy() / 255.0, sigma=sigma)
        assert np.array_equal(edges[0].numpy() == 255, reference)


def test_optional_fields_mnist_c_glass_coin_and_fog_map_size() -> None:
    images = digit_like(6)
    seeds = [13 * i for i in range(len(images))]
    full = corrupt(images, "glass_blur", (0.7, 1, 2), seeds)
    assert torch.equal(full, corrupt(images, "glass_blur", (0.7, 1, 2, 1.0), seeds))  # the default: every visit
    none = corrupt(images, "glass_blur", (0.7, 1, 2, 0.0), seeds)  # no copies: blur, truncate, blur
    assert torch.equal(none, corrupt(images, "glass_blur", (0.7, 1, 0), seeds))
    half = corrupt(images, "glass_blur", (0.7, 1, 2, 0.5), seeds)
    assert mad(none, images) > 0 and 0 < mad(half, none) < mad(full, none)
    assert torch.equal(corrupt(images, "fog", (1.5, 2), seeds), corrupt(images, "fog", (1.5, 2, 32), seeds))
    assert not torch.equal(corrupt(images, "fog", (1.5, 2), seeds), corrupt(images, "fog", (1.5, 2, 256), seeds))
    with pytest.raises(ValueError, match=r"fog takes a constant \(strength, decay, map_size\) \(the last 1 optional\)"):
        corrupt(images, "fog", (1.5,), 0)
    with pytest.raises(ValueError, match="map_size 16 is smaller"):
        corrupt(images, "fog", (1.5, 2, 16), 0)

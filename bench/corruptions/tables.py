"""Per-severity corruption constants of CIFAR-10-C and ImageNet-C, for bench.corruptions.

Each table maps a corruption name (the official file names: ``gaussian_noise.npy`` ...) to a
tuple of 5 constants, severity 1 to 5; a constant is a number or a tuple, in the form that the
corruption functions of :mod:`bench.corruptions` take (their docstrings spell the fields).
Importing this module does not import torch (``bench --help`` reads it).

* ``CIFAR10_C``: Hendrycks' ``make_cifar_c.py`` (hendrycks/robustness, ImageNet-C/create_c),
  which made the released CIFAR-10-C / CIFAR-100-C files.  Re-expressed where our engine's
  form differs: zoom_blur ``np.arange(1, end, 0.01)`` as ``(end, 0.01)``; frost gets the
  texture scale 0.2 of that script's ``cv2.resize(frost, (0, 0), fx=0.2, fy=0.2)``;
  elastic_transform's multiples of IMSIZE = 32 become fractions of the image size.  Its
  motion_blur and snow constants were ImageMagick's; here they drive imagecorruptions' python
  reimplementation (as everywhere in this engine), so those two are close, not identical, to
  the released files.
* ``IMAGENET_C``: the constants of the ``imagecorruptions`` package 1.1.2 (the ImageNet-C
  constants of ``make_imagenet_c.py``, with that package's reimplemented motion_blur, snow and
  elastic_transform): frost texture scale 1.1 (its "enlarge by 1.1" rule); elastic_transform
  ``alpha = 250 * (0.05 ... 0.12) * 0.005`` (its ``alpha * max_dx`` with ``max_dx = 0.005 * H``),
  ``sigma = 0.01``, no affine step.
* ``MIX1`` / ``MIX2``: the paper's split of the 19 corruptions into the 9 used for
  generalization-aware training (Mix1) and the other 10 (Mix2, held out for testing).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ALL_CORRUPTIONS",
    "BENCHMARK_CORRUPTIONS",
    "CIFAR10_C",
    "EXTRA_CORRUPTIONS",
    "IMAGENET_C",
    "MIX1",
    "MIX2",
    "MNIST_C_GEOMETRIC",
    "MNIST_C_STROKES",
    "TABLES",
    "Constant",
    "Table",
    "table_named",
]

Constant = float | tuple[float, ...]
Table = Mapping[str, tuple[Constant, ...]]

# the 15 benchmark corruptions, then the 4 extra ones, in the official order
BENCHMARK_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS


CIFAR10_C: dict[str, tuple[Constant, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    # (radius, alias_blur)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # (sigma, max_delta, iterations)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # (radius, sigma)
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    # (end, step) of numpy.arange(1, end, step)
    "zoom_blur": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
    # (mean, std, zoom, threshold, blur_radius, blur_sigma, blend)
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    # (image_weight, frost_weight, texture_scale)
    "frost": ((1, 0.2, 0.2), (1, 0.3, 0.2), (0.9, 0.4, 0.2), (0.85, 0.4, 0.2), (0.75, 0.45, 0.2)),
    # (strength, decay)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    # (alpha, sigma, affine) as fractions of the image size: make_cifar_c.py's IMSIZE * (...)
    "elastic_transform": (
        (0.0, 0.0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
    # (mean, std, sigma, threshold, intensity, mud)
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    # (factor, offset)
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
}

IMAGENET_C: dict[str, tuple[Constant, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    "frost": ((1, 0.4, 1.1), (0.8, 0.6, 1.1), (0.7, 0.7, 1.1), (0.65, 0.7, 1.1), (0.6, 0.75, 1.1)),
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    # imagecorruptions: alpha 250 * (0.05, 0.065, 0.085, 0.1, 0.12) px times max_dx = 0.005 * H
    "elastic_transform": (
        (0.0625, 0.01, 0.0),
        (0.08125, 0.01, 0.0),
        (0.10625, 0.01, 0.0),
        (0.125, 0.01, 0.0),
        (0.15, 0.01, 0.0),
    ),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "spatter": (
        (0.65, 0.3, 4, 0.69, 0.6, 0),
        (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
}

# the paper's Mix1 (generalization-aware training) and Mix2 (the other 10, held out)
MIX1 = (
    "contrast",
    "elastic_transform",
    "gaussian_blur",
    "impulse_noise",
    "motion_blur",
    "pixelate",
    "shot_noise",
    "snow",
    "zoom_blur",
)
MIX2 = tuple(name for name in ALL_CORRUPTIONS if name not in MIX1)

# MNIST-C (Mu & Gilmer 2019, google-research/mnist-c corruptions.py): the five constants of each of its
# affine corruptions (its released set uses one of them), in the forms of bench.corruptions.geometric
MNIST_C_GEOMETRIC: dict[str, tuple[Constant, ...]] = {
    "shear": (0.2, 0.4, 0.6, 0.8, 1.0),  # radians
    "scale": (1 / 0.9, 1 / 0.8, 1 / 0.7, 1 / 0.6, 1 / 0.5),  # source-to-output factor
    "rotate": (0.2, 0.4, 0.6, 0.8, 1.0),  # radians
    "translate": (1, 2, 3, 4, 5),  # pixels along each axis
}
# Ours, after MNIST-C's strokes (bench.corruptions.overlay): severity 1 draws what MNIST-C draws once
# (one dotted line, one zigzag; one stripe 1 column wide where MNIST-C inverts two 7-column bands)
MNIST_C_STROKES: dict[str, tuple[Constant, ...]] = {
    "stripe": (1, 2, 3, 5, 7),  # band width, columns
    "dotted_line": (1, 2, 3, 4, 5),  # lines per image
    "zigzag": (1, 2, 3, 4, 5),  # zigzags per image
    "canny_edges": (1.0, 1.5, 2.0, 2.5, 3.0),  # Gaussian sigma of the edge detector (MNIST-C: 1.0)
}

TABLES: dict[str, dict[str, tuple[Constant, ...]]] = {"cifar10-c": CIFAR10_C, "imagenet-c": IMAGENET_C}


def table_named(name: str) -> dict[str, tuple[Constant, ...]]:
    """The table for ``'cifar10-c'`` or ``'imagenet-c'``."""
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"unknown corruption table {name!r}; known: {', '.join(sorted(TABLES))}") from None

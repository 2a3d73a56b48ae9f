"""digits-c: CIFAR-10-C-style corruptions of the upsampled 32x32 digits, 5 severities.

The constants are chosen for digits (bright strokes on an exactly black background): the
ImageNet-C constants of `imagecorruptions` put shallow nets at chance from severity 1 and the
CIFAR-10-C ones barely move them (shared/notes/perf_probe.md §4). Each row below was set so the
default digits_cnn parent (30 epochs, seeds 0 and 1) degrades gradually from severity 1 to 5,
from about 95 % to about 20-60 % accuracy (clean: 99 %); zoom_blur and jpeg stay milder. fog/frost/snow need textures or
fractals that carry no signal on digits and are left out. Corruptions come from prunebench's own
batched torch engine (bench.corruptions), not from the imagecorruptions package, which breaks on
this stack and has no seed argument.
"""

from __future__ import annotations

from bench.api import CorruptionSuite


class DigitsC(CorruptionSuite):
    name = "digits-c"
    description = "11 corruptions x 5 severities, constants calibrated for 32x32 digits"
    datasets = ("digits",)
    table = {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.10, 0.12),
        "shot_noise": (100, 60, 40, 25, 15),
        "impulse_noise": (0.01, 0.02, 0.03, 0.045, 0.06),
        "speckle_noise": (0.15, 0.2, 0.25, 0.3, 0.35),
        "gaussian_blur": (1.5, 2.0, 2.5, 3.0, 3.5),
        "defocus_blur": (3, 4, 5, 6, 7),
        "zoom_blur": (1.2, 1.35, 1.5, 1.65, 1.8),
        "contrast": (0.9, 0.85, 0.8, 0.75, 0.7),
        "brightness": (0.05, 0.08, 0.1, 0.12, 0.15),
        "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
        "jpeg_compression": (10, 7, 5, 3, 2),
    }

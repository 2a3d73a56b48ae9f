"""digits-c: CIFAR-10-C-style corruptions of the upsampled 32x32 digits, 5 severities.

The constants are chosen for digits (bright strokes on an exactly black background): the
ImageNet-C constants of `imagecorruptions` put shallow nets at chance from severity 1 and the
CIFAR-10-C ones barely move them (shared/notes/perf_probe.md §4). Each row below was set so the
default digits_cnn parent degrades gradually from severity 1 to 5. fog/frost/snow need textures or
fractals that carry no signal on digits and are left out. Corruptions come from prunebench's own
batched torch engine (bench.corruptions), not from the imagecorruptions package, which breaks on
this stack and has no seed argument.
"""

from __future__ import annotations

from bench.suite import CorruptionSuite


class DigitsC(CorruptionSuite):
    name = "digits-c"
    description = "11 corruptions x 5 severities, constants calibrated for 32x32 digits"
    datasets = ("digits",)
    table = {
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
        "defocus_blur": (0.3, 0.4, 0.5, 1.0, 1.5),
        "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (25, 18, 15, 10, 7),
    }

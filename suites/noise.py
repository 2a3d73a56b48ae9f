"""noise: additive uniform U(-eps, eps) and Gaussian N(0, sigma) noise in pixel space ([0, 1],
clipped, quantised to 8 bits like the official corruption files), seeded per level."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.api import CorruptionSuite

if TYPE_CHECKING:
    from bench.api import Constant


class NoiseSuite(CorruptionSuite):
    name = "noise"
    description = "uniform and Gaussian pixel noise at several levels (any dataset)"
    table = {
        "uniform_noise": (0.1, 0.15, 0.2, 0.25),
        "gaussian_noise": (0.04, 0.06, 0.08, 0.1),
    }

    def distribution_name(self, corruption: str, severity: int, level: Constant) -> str:
        return f"{self.name}/{corruption}/{level:g}"

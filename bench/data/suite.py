"""The Suite API: a suite turns a dataset's clean test set into named test distributions.

Concrete suites live in `suites/` and are found through the `prunebench.suites` entry points.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from bench.corruptions import corrupt, seed_for
from bench.data import DataBundle, ImageSet, TestSource

if TYPE_CHECKING:
    from bench.corruptions.tables import Constant
    from bench.results.schema import RunConfig


@dataclass(frozen=True)
class TestDistribution:
    name: str
    suite: str
    images: TestSource
    corruption: str | None = None
    severity: int | None = None
    level: float | None = None


def in_selection(corruption: str | None, severity: int | None, corruptions: tuple[str, ...] | None,
                 severities: tuple[int, ...] | None) -> bool:
    """The `--corruptions` / `--severities` filter; None (no selection, or a test set that is not a
    corruption / has no severity) always passes."""
    return (corruptions is None or corruption is None or corruption in corruptions) and (
        severities is None or severity is None or severity in severities
    )


@dataclass(frozen=True)
class Selection:
    """The run's choice among a suite's test sets, so suites can skip what will not be evaluated."""

    corruptions: tuple[str, ...] | None = None  # --corruptions (None: all)
    severities: tuple[int, ...] | None = None  # --severities (None: all)
    per_class: int | None = None  # --per-class (folder-based suites: a class-balanced subset)
    pairs: frozenset[tuple[str, int]] | None = None  # only these (corruption, severity) (bench verify --sample)

    @classmethod
    def of(cls, config: RunConfig) -> Selection:
        return cls(config.corruptions, config.severities, config.per_class)

    def wants(self, corruption: str, severity: int) -> bool:
        return in_selection(corruption, severity, self.corruptions, self.severities) and (
            self.pairs is None or (corruption, severity) in self.pairs)


EVERYTHING = Selection()


class Suite(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    datasets: ClassVar[tuple[str, ...] | None] = None  # None: works on any dataset

    def check_dataset(self, dataset: str) -> None:
        if self.datasets is not None and dataset not in self.datasets:
            raise ValueError(f"suite {self.name!r} is defined for {', '.join(self.datasets)}, not for {dataset!r}")

    @abstractmethod
    def distributions(self, data: DataBundle, seed: int, selection: Selection = EVERYTHING) -> list[TestDistribution]:
        """The shifted test sets in `selection`; the clean test set is evaluated by the runner itself."""


class CorruptionSuite(Suite):
    """A table corruption -> strength per severity, applied to the clean test images.

    Each (corruption, severity) test set is generated once per run with its own seed derived
    from (run seed, suite, corruption, severity), so every network sees the same images.
    """

    table: ClassVar[dict[str, tuple[Constant, ...]]]  # a constant is a number or a tuple of numbers
    # True: image i of (corruption, severity) draws from its own seed, seed_for(seed, "make-c",
    # corruption, severity, i), as `bench data make-c` draws, so `bench data make-c --table <suite>
    # --seed S` writes exactly the sets a run of seed S evaluates; False: one seed per test set
    per_image_seeds: ClassVar[bool] = False

    def distribution_name(self, corruption: str, severity: int, level: Constant) -> str:
        return f"{self.name}/{corruption}/{severity}"

    def _seeds(self, seed: int, corruption: str, severity: int, images: int) -> int | list[int]:
        if self.per_image_seeds:
            return [seed_for(seed, "make-c", corruption, severity, i) for i in range(images)]
        return seed_for(seed, self.name, corruption, severity)

    def distributions(self, data: DataBundle, seed: int, selection: Selection = EVERYTHING) -> list[TestDistribution]:
        self.check_dataset(data.name)
        out = []
        for corruption, levels in self.table.items():
            for severity, level in enumerate(levels, start=1):
                if not selection.wants(corruption, severity):
                    continue
                images = corrupt(data.test.images, corruption, level, self._seeds(seed, corruption, severity, len(data.test)))
                out.append(
                    TestDistribution(
                        name=self.distribution_name(corruption, severity, level),
                        suite=self.name,
                        images=ImageSet(images, data.test.labels),
                        corruption=corruption,
                        severity=severity,
                        level=float(level) if isinstance(level, numbers.Real) else None,
                    )
                )
        return out

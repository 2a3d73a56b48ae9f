"""Per-severity constants (``level``): their type, normalisation, and unpacking by the corruptions.

A level is the full constant of one corruption at one severity, in the form of the tables in
:mod:`bench.corruptions.tables`: a number, or a tuple for the multi-parameter corruptions
(each corruption's docstring names the fields).
"""

from __future__ import annotations

import numbers

import numpy as np

from bench.corruptions.tables import Constant

__all__ = ["Level", "normalize_level", "scalar_level", "unpack_level"]

Level = Constant


def normalize_level(level: object) -> Level:
    """A per-severity constant as ``float`` or ``tuple[float, ...]`` (numpy scalars/arrays accepted)."""
    if isinstance(level, numbers.Real) and not isinstance(level, bool):
        return float(level)
    if isinstance(level, (tuple, list, np.ndarray)):
        values = list(np.asarray(level, dtype=np.float64).reshape(-1)) if isinstance(level, np.ndarray) else list(level)
        if values and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            return tuple(float(v) for v in values)
    raise TypeError(f"a corruption constant is a number or a tuple of numbers, got {level!r}")


def unpack_level(level: Level, name: str, fields: tuple[str, ...], defaults: tuple[float, ...] = ()) -> tuple[float, ...]:
    """Unpack a multi-parameter per-severity constant, naming the fields when it does not fit; the last
    ``len(defaults)`` fields are optional and take those values when left out."""
    if isinstance(level, (numbers.Real, float)) or not len(fields) - len(defaults) <= len(level) <= len(fields):
        optional = f" (the last {len(defaults)} optional)" if defaults else ""
        raise ValueError(f"{name} takes a constant ({', '.join(fields)}){optional}, got {level!r}")
    given = tuple(float(v) for v in level)
    return given + tuple(defaults[len(defaults) - (len(fields) - len(given)):])


def scalar_level(level: Level, name: str) -> float:
    """A single-number per-severity constant as ``float``; a tuple raises ``TypeError``."""
    if not isinstance(level, numbers.Real):
        raise TypeError(f"{name} takes a single number per severity, got {level!r}")
    return float(level)

"""Pruner and suite registries, filled only through Python entry points.

Built-in pruners and suites are registered in prunebench's own pyproject exactly the way a
third-party package registers its own, so the core never imports a concrete one.
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

PRUNER_GROUP = "prunebench.pruners"
SUITE_GROUP = "prunebench.suites"


class RegistryError(LookupError):
    """A name that no installed package registers, or an entry point that fails to load."""


@cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def available(group: str) -> list[str]:
    return sorted(_entry_points(group))


def load(group: str, name: str) -> Any:
    """Return the object an entry point names, with a readable error for unknown names."""
    eps = _entry_points(group)
    if name not in eps:
        hint = difflib.get_close_matches(name, eps, n=3)
        suggestion = f" Did you mean {', '.join(hint)}?" if hint else ""
        raise RegistryError(
            f"no {group.split('.')[-1][:-1]} named {name!r} is installed.{suggestion} "
            f"Available: {', '.join(sorted(eps)) or '(none)'}."
        )
    try:
        return eps[name].load()
    except Exception as exc:  # a broken plugin must say which package is at fault
        raise RegistryError(f"entry point {name!r} ({eps[name].value}) failed to load: {exc}") from exc


def distribution_of(group: str, name: str) -> tuple[str, str]:
    """(package name, version) that provides an entry point, recorded for provenance."""
    ep = _entry_points(group)[name]
    dist = ep.dist
    return (dist.name, dist.version) if dist is not None else ("unknown", "unknown")


def refresh() -> None:
    """Forget cached entry points (after installing a plugin into the running interpreter)."""
    _entry_points.cache_clear()

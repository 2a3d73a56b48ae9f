"""Pruner and suite registries, filled only through Python entry points.

Built-in pruners and suites are registered in prunebench's own pyproject exactly the way a
third-party package registers its own, so the core never imports a concrete one.
"""

from __future__ import annotations

import difflib
import hashlib
import sys
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")

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


def load_class(group: str, name: str, base: type[T]) -> type[T]:
    """The class an entry point names, checked: a subclass of `base` whose `name` attribute (if it
    declares one) is the entry point's name. The one way plugins are loaded."""
    cls = load(group, name)
    where = _entry_points(group)[name].value
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise RegistryError(f"entry point {name!r} ({where}) is not a subclass of {base.__module__}.{base.__qualname__}")
    declared = getattr(cls, "name", name)
    if declared != name:
        raise RegistryError(f"entry point {name!r} ({where}) names a class whose name is {declared!r}")
    return cls


def distribution_of(group: str, name: str) -> tuple[str, str]:
    """(package name, version) that provides an entry point, recorded for provenance."""
    ep = _entry_points(group)[name]
    dist = ep.dist
    return (dist.name, dist.version) if dist is not None else ("unknown", "unknown")


def _source_files(obj: Any, whole_package: bool) -> list[tuple[str, Path]]:
    """(label, path) of the source behind `obj`: its module's file, or every .py file of the
    top-level package that defines it."""
    module = sys.modules[obj.__module__]
    if not whole_package:
        return [(module.__name__, Path(cast(str, module.__file__)))]
    top = sys.modules[module.__name__.partition(".")[0]]
    roots = [Path(p) for p in getattr(top, "__path__", [])]
    if not roots:  # a single-module plugin
        return [(top.__name__, Path(cast(str, top.__file__)))]
    return [(f"{top.__name__}/{path.relative_to(root).as_posix()}", path)
            for root in roots for path in sorted(root.rglob("*.py"))]


def source_digest(group: str, name: str, obj: Any) -> str:
    """sha256 of the source code behind an entry point's object.

    For prunebench's own entries, the module that defines `obj` (editing one built-in pruner does
    not touch the others); for a plugin, every module of its top-level package (a plugin's helper
    modules are part of its method).
    """
    own = distribution_of(group, name)[0] == "prunebench"
    digest = hashlib.sha256()
    for label, path in _source_files(obj, whole_package=not own):
        digest.update(label.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def refresh() -> None:
    """Forget cached entry points (after installing a plugin into the running interpreter)."""
    _entry_points.cache_clear()

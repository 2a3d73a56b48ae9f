"""Pruner, suite, dataset and model registries, filled only through Python entry points.

Built-in pruners, suites, datasets and models are registered in prunebench's own pyproject exactly the way a
third-party package registers its own, so the core never imports a concrete one.
"""

from __future__ import annotations

import difflib
import hashlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")

PRUNER_GROUP = "prunebench.pruners"
SUITE_GROUP = "prunebench.suites"
DATASET_GROUP = "prunebench.datasets"  # entry points name DatasetSpec instances, not classes
MODEL_GROUP = "prunebench.models"  # entry points name bench.models.config.ModelConfig instances


BUILTIN_PACKAGE = "prunebench"
_plugins_allowed = True


@contextmanager
def builtins_only() -> Iterator[None]:
    """Within: `load` refuses every entry point of a package other than prunebench itself, so no
    plugin code is imported (`bench verify` without --plugins)."""
    global _plugins_allowed
    before, _plugins_allowed = _plugins_allowed, False
    try:
        yield
    finally:
        _plugins_allowed = before


class RegistryError(LookupError):
    """A name that no installed package registers (or two do), or an entry point that fails to load."""


class PluginError(RuntimeError):
    """A plugin raised or broke the plugin contract (e.g. a non-boolean mask); the message is one
    line naming the plugin, and where known its package."""


@cache
def _candidates(group: str) -> dict[str, list[EntryPoint]]:
    """Name -> every distinct entry point registering it (one package seen twice counts once)."""
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=group):
        same = [other for other in found.get(ep.name, []) if other.value == ep.value and _owner(other) == _owner(ep)]
        if not same:
            found.setdefault(ep.name, []).append(ep)
    return found


def _owner(ep: EntryPoint) -> str:
    return f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "an unknown package"


def _entry_points(group: str) -> dict[str, EntryPoint]:
    """Name -> its entry point; a name two packages register fails in `load` (listing both)."""
    return {name: eps[0] for name, eps in _candidates(group).items()}


def available(group: str) -> list[str]:
    return sorted(_entry_points(group))


def builtin_names(group: str) -> list[str]:
    """The names prunebench itself registers in `group` (its own entry points, not plugins'),
    sorted: what the tests parametrise over."""
    return sorted(name for name, eps in _candidates(group).items()
                  if any(ep.dist is not None and ep.dist.name == "prunebench" for ep in eps))


def alternatives(group: str, name: str) -> str:
    """What to say about a name nothing registers: " Did you mean a, b? Available: ...". """
    eps = _entry_points(group)
    hint = difflib.get_close_matches(name, eps, n=3)
    suggestion = f" Did you mean {', '.join(hint)}?" if hint else ""
    return f"{suggestion} Available: {', '.join(sorted(eps)) or '(none)'}."


def load(group: str, name: str) -> Any:
    """Return the object an entry point names, with a readable error for unknown names."""
    eps = _entry_points(group)
    registering = _candidates(group).get(name, [])
    if len(registering) > 1:
        owners = "; ".join(f"{_owner(ep)} ({ep.value})" for ep in registering)
        raise RegistryError(f"{group.split('.')[-1][:-1]} name {name!r} is registered by {len(registering)} installed "
                            f"packages: {owners}. Uninstall all but one: names must be unique")
    if name not in eps:
        raise RegistryError(f"no {group.split('.')[-1][:-1]} named {name!r} is installed.{alternatives(group, name)}")
    dist = eps[name].dist
    package = dist.name if dist is not None else None
    if not _plugins_allowed and package != BUILTIN_PACKAGE:
        raise RegistryError(f"{group.split('.')[-1][:-1]} {name!r} comes from the plugin package {_owner(eps[name])}, "
                            "and bench verify imports no plugin unless asked: rerun with --plugins")
    try:
        return eps[name].load()
    except Exception as exc:  # a broken plugin must say which package is at fault
        raise RegistryError(f"entry point {name!r} ({eps[name].value}) failed to load: {exc}") from exc


def load_class(group: str, name: str, base: type[T]) -> type[T]:
    """The class an entry point names, checked: a subclass of `base` whose `name` attribute is the
    entry point's name (so results, cache keys and `bench list` agree on it). The one way plugin
    classes are loaded."""
    cls = load(group, name)
    where = _entry_points(group)[name].value
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise RegistryError(f"entry point {name!r} ({where}) is not a subclass of {base.__module__}.{base.__qualname__}")
    declared = getattr(cls, "name", None)
    if declared is None:
        raise RegistryError(f"entry point {name!r} ({where}) names a class that declares no name: set name = {name!r}")
    if declared != name:
        raise RegistryError(f"entry point {name!r} ({where}) names a class whose name is {declared!r}")
    return cls


def load_instance(group: str, name: str, base: type[T]) -> T:
    """The object an entry point names, checked: an instance of `base` whose `name` attribute is the
    entry point's name (the way dataset specs are loaded)."""
    obj = load(group, name)
    where = _entry_points(group)[name].value
    if not isinstance(obj, base):
        raise RegistryError(f"entry point {name!r} ({where}) is not a {base.__module__}.{base.__qualname__} "
                            f"instance but {type(obj).__qualname__}")
    declared = getattr(obj, "name", None)
    if declared != name:
        raise RegistryError(f"entry point {name!r} ({where}) names a {base.__qualname__} whose name is {declared!r}")
    return obj


def distribution_of(group: str, name: str) -> tuple[str, str]:
    """(package name, version) that provides an entry point, recorded for provenance."""
    ep = _entry_points(group)[name]
    dist = ep.dist
    return (dist.name, dist.version) if dist is not None else ("unknown", "unknown")


def installed_versions(distributions: Sequence[str]) -> dict[str, str]:
    """Distribution name -> installed version ("not installed" where absent), for provenance."""
    versions = {}
    for name in distributions:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


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
    _candidates.cache_clear()

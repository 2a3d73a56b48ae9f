"""Compatibility path: `bench.registry` moved to `bench.core.registry` (plugins import `PluginError`
from `bench.api`). Kept because code written against the old layout imports it, among it the built-in
`pruners/tp.py`, whose bytes the committed tp-* results pin through their recorded source digest."""

from bench.core.registry import *  # noqa: F403
from bench.core.registry import PluginError

__all__ = ["PluginError"]

"""Import the reference implementation, imagecorruptions 1.1.2, on this stack (tests, benchmarks).

Used by tests/test_corruption_parity.py and benchmarks/corruption_engine.py to compare
bench.corruptions with the library; nothing else in bench/ imports this module, and
bench.corruptions never imports the package (frost only reads its texture files).

The package breaks three ways here (shared/notes/perf_probe.md, section 0):

1. it does ``from pkg_resources import resource_filename`` and setuptools >= 81 no longer
   ships ``pkg_resources``: a stand-in module with that one function is registered;
2. ``plasma_fractal`` (fog) uses ``np.float_``, removed in NumPy 2: aliased to ``np.float64``;
3. it calls ``skimage.filters.gaussian(..., multichannel=True)``, renamed ``channel_axis`` in
   scikit-image 0.19: the function is wrapped to translate the keyword. This must happen
   before the import, because the package binds ``from skimage.filters import gaussian``.

Install with ``pip install -e '.[test]'`` (imagecorruptions==1.1.2 pulls scikit-image and
opencv-python).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import types
import warnings
from typing import Any


def _resource_filename(package: str, resource: str) -> str:
    module = sys.modules.get(package) or importlib.import_module(package)
    origin = getattr(module, "__file__", None)
    if origin is None:
        raise FileNotFoundError(f"package {package!r} has no file location")
    return os.path.join(os.path.dirname(origin), resource)


def _install_pkg_resources() -> None:
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        stand_in = types.ModuleType("pkg_resources")
        stand_in.resource_filename = _resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = stand_in


def _alias_numpy_float() -> None:
    import numpy as np

    if "float_" not in np.__dict__:
        np.float_ = np.float64  # type: ignore[attr-defined]


def _wrap_skimage_gaussian() -> None:
    import skimage.filters

    original = skimage.filters.gaussian
    if getattr(original, "_multichannel_shim", False):
        return

    @functools.wraps(original)
    def gaussian(image: Any, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
        if multichannel is not None and "channel_axis" not in kwargs:
            kwargs["channel_axis"] = -1 if multichannel else None
        return original(image, *args, **kwargs)

    gaussian._multichannel_shim = True  # type: ignore[attr-defined]
    skimage.filters.gaussian = gaussian


def load_imagecorruptions() -> types.ModuleType:
    """Apply the three fixes, then import and return the ``imagecorruptions`` package."""
    _install_pkg_resources()
    _alias_numpy_float()
    _wrap_skimage_gaussian()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy.ndimage.interpolation
        return importlib.import_module("imagecorruptions")

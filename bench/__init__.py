"""prunebench: robust vs nominal prune potential of pruned neural networks.

The Python entry points (bench.facade), loaded on first use so that ``import bench`` stays light:

* ``bench.evaluate(parent, {"mine": [net_50, net_80]}, dataset="digits")``: evaluate in-memory
  networks as ``bench eval`` does; returns the result (nothing written unless ``out=``);
* ``bench.load_dataset(name, seed)``: the exact splits and normalisation to train with;
* ``bench.load_network(result_file, pruner, step)``: any network saved with a result file;
* ``bench.potentials(result)``: method -> its prune potentials, recomputed as the board does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.facade import evaluate, load_dataset, load_network, potentials

__version__ = "0.1.0"
__all__ = ["evaluate", "load_dataset", "load_network", "potentials"]


def __getattr__(name: str) -> Any:
    """Load the façade's functions on first access (PEP 562)."""
    if name in __all__:
        from bench import facade

        value = globals()[name] = getattr(facade, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

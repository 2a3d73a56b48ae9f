"""prunebench: robust vs nominal prune potential of pruned neural networks."""

__version__ = "0.1.0"

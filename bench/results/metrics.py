"""Prune potential, robust vs nominal prune potential and excess error (Liebenwein et al. 2021).

All functions take errors (1 - accuracy) and measured prune ratios; nothing here trains or
evaluates a network, so every number can be recomputed from a result file.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean
from typing import Literal

from bench.results.schema import PARENT, Derived, Distribution, NetworkResult, PrunerMetrics

Rule = Literal["paper", "monotone"]
_TIE = 1e-12  # accuracies are ratios of counts; keep exact ties on the passing side


def prune_potential(
    ratios: Sequence[float],
    errors: Sequence[float],
    parent_error: float,
    delta: float,
    rule: Rule = "paper",
) -> float:
    """Largest measured prune ratio whose error is within `delta` of the parent's error.

    "paper": any grid point counts, even past a failing one (torchprune's rule).
    "monotone": scan ratios upwards and stop at the first failure.
    Returns 0.0 when no ratio qualifies.
    """
    if len(ratios) != len(errors):
        raise ValueError(f"{len(ratios)} ratios but {len(errors)} errors")
    threshold = parent_error + delta + _TIE
    best = 0.0
    for ratio, error in sorted(zip(ratios, errors)):
        if error <= threshold:
            best = max(best, ratio)
        elif rule == "monotone":
            break
    return best


def excess_error(accuracy: dict[str, float], nominal: str, shifted: Sequence[str]) -> float:
    """Mean error over shifted distributions minus the error on the nominal one."""
    if not shifted:
        return 0.0
    return fmean(1.0 - accuracy[d] for d in shifted) - (1.0 - accuracy[nominal])


def pruner_metrics(
    pruner: str,
    steps: Sequence[NetworkResult],
    parent: NetworkResult,
    nominal: str,
    shifted: Sequence[str],
    delta: float,
) -> PrunerMetrics:
    ratios = [n.prune_ratio for n in steps]

    def potential(dist: str, rule: Rule) -> float:
        errors = [1.0 - n.accuracy[dist] for n in steps]
        return prune_potential(ratios, errors, 1.0 - parent.accuracy[dist], delta, rule)

    def robust(rule: Rule) -> tuple[float | None, float | None]:
        values = [potential(d, rule) for d in shifted]
        return (fmean(values), min(values)) if values else (None, None)

    mean_p, min_p = robust("paper")
    mono_mean, mono_min = robust("monotone")
    parent_excess = excess_error(parent.accuracy, nominal, shifted)
    return PrunerMetrics(
        pruner=pruner,
        nominal_potential=potential(nominal, "paper"),
        robust_potential_mean=mean_p,
        robust_potential_min=min_p,
        monotone_nominal_potential=potential(nominal, "monotone"),
        monotone_robust_potential_mean=mono_mean,
        monotone_robust_potential_min=mono_min,
        potential_by_distribution={d: potential(d, "paper") for d in [nominal, *shifted]},
        delta_excess_error=[excess_error(n.accuracy, nominal, shifted) - parent_excess for n in steps],
    )


def derive(distributions: Sequence[Distribution], networks: Sequence[NetworkResult], delta: float) -> Derived:
    """Every aggregate of a run, from its per-(network, distribution) accuracies alone."""
    nominal = next(d.name for d in distributions if d.nominal)
    shifted = [d.name for d in distributions if not d.nominal]
    parent = next(n for n in networks if n.pruner == PARENT)
    pruners = list(dict.fromkeys(n.pruner for n in networks if n.pruner != PARENT))
    return Derived(
        delta=delta,
        parent_excess_error=excess_error(parent.accuracy, nominal, shifted),
        pruners=[
            pruner_metrics(
                p, sorted((n for n in networks if n.pruner == p), key=lambda n: n.step), parent, nominal, shifted, delta
            )
            for p in pruners
        ],
    )

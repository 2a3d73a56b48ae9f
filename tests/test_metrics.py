import pytest

from bench.results.metrics import derive, excess_error, prune_potential
from bench.results.schema import PARENT, Distribution, NetworkResult

RATIOS = [0.2, 0.4, 0.6, 0.8, 0.9]


def test_paper_rule_takes_the_largest_passing_ratio_even_after_a_failure():
    # parent error 0.10, delta 0.005: 0.4 fails, 0.6 passes again, 0.8 and 0.9 fail
    errors = [0.100, 0.120, 0.104, 0.110, 0.200]
    assert prune_potential(RATIOS, errors, 0.10, 0.005, "paper") == 0.6


def test_monotone_rule_stops_at_the_first_failure():
    errors = [0.100, 0.120, 0.104, 0.110, 0.200]
    assert prune_potential(RATIOS, errors, 0.10, 0.005, "monotone") == 0.2


def test_monotone_curve_gives_the_same_value_for_both_rules():
    errors = [0.09, 0.10, 0.105, 0.11, 0.3]
    assert prune_potential(RATIOS, errors, 0.10, 0.005, "paper") == 0.6
    assert prune_potential(RATIOS, errors, 0.10, 0.005, "monotone") == 0.6


def test_no_passing_ratio_gives_zero_and_exact_tie_passes():
    assert prune_potential(RATIOS, [0.5] * 5, 0.10, 0.005) == 0.0
    assert prune_potential([0.5], [0.105], 0.10, 0.005) == 0.5


def test_order_of_the_grid_does_not_matter_and_lengths_must_match():
    errors = [0.100, 0.120, 0.104, 0.110, 0.200]
    assert prune_potential(RATIOS[::-1], errors[::-1], 0.10, 0.005, "monotone") == 0.2
    with pytest.raises(ValueError):
        prune_potential(RATIOS, errors[:2], 0.1, 0.005)


def net(pruner, step, ratio, clean, shifted):
    return NetworkResult(
        pruner=pruner, step=step, target_ratio=ratio, prune_ratio=ratio, nonzero_params=100,
        structured=False, accuracy={"clean": clean, "noise": shifted},
    )


def test_derive_nominal_robust_and_excess_error():
    dists = [Distribution(name="clean", suite="nominal", n_examples=10), Distribution(name="noise", suite="n", n_examples=10)]
    nets = [
        net(PARENT, 0, 0.0, 0.90, 0.80),
        net("wt", 1, 0.5, 0.90, 0.79),  # within delta on both
        net("wt", 2, 0.8, 0.90, 0.70),  # fine on clean, loses 10 points under noise
    ]
    derived = derive(dists, nets, delta=0.02)
    (wt,) = derived.pruners
    assert wt.nominal_potential == 0.8
    assert wt.robust_potential_mean == 0.5 and wt.robust_potential_min == 0.5
    assert derived.parent_excess_error == pytest.approx(0.10)
    assert wt.delta_excess_error == pytest.approx([0.01, 0.10])
    assert excess_error({"c": 0.9, "n": 0.8}, "c", []) == 0.0

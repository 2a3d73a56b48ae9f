from datetime import datetime, timezone
from statistics import NormalDist

import numpy as np
import pytest

from bench.results.metrics import derive, prune_potential
from bench.results.schema import (
    PARENT,
    Distribution,
    NetworkResult,
    Provenance,
    Recipe,
    RunConfig,
    RunResult,
    pack_hits,
)
from bench.results.uncertainty import (
    _bias_corrected_quantiles,
    bias_corrected_interval,
    bootstrap_potentials,
    bootstrap_pruners,
    gap_p_value,
    group_replicates,
    potential_batch,
    replicates,
)

RECIPE = Recipe(epochs=1, batch_size=8, lr=0.1)
RATIOS = (0.5, 0.8, 0.9)
NOISE = [("noise/gaussian_noise/1", "gaussian_noise", 1), ("noise/gaussian_noise/2", "gaussian_noise", 2)]


def make_run(
    lost: dict[str, dict[str, list[int]]],
    n: int = 400,
    parent_correct: int = 360,
    seed: int = 0,
    shifted: list[tuple[str, str, int]] = NOISE,
    suite: str = "noise",
    model: str = "digits_cnn",
    ratios: tuple[float, ...] = RATIOS,
    created: int = 0,
) -> RunResult:
    """A result with real per-example bits: the parent gets `parent_correct` of `n` images right
    on every distribution; step k of a pruner loses lost[pruner][distribution][k] of those images
    (random ones, nested: a later step loses the images of the earlier steps too).

    `lost` is keyed by "clean" for the nominal set and "shifted" for every shifted one unless a
    distribution name is given explicitly.
    """
    pruners = tuple(lost)
    config = RunConfig(
        dataset="digits", model=model, pruners=pruners, suites=(suite,), target_ratios=ratios,
        train=RECIPE, retrain=RECIPE, seed=seed, calibration_size=4,
    )
    dists = [Distribution(name="digits/clean", suite="nominal", n_examples=n)] + [
        Distribution(name=name, suite=suite, corruption=corruption, severity=severity, n_examples=n)
        for name, corruption, severity in shifted
    ]
    rng = np.random.default_rng(seed)
    parent_hits = {}
    for d in dists:
        hits = np.zeros(n, dtype=bool)
        hits[rng.permutation(n)[:parent_correct]] = True
        parent_hits[d.name] = hits

    def network(pruner: str, step: int, hits: dict[str, np.ndarray]) -> NetworkResult:
        ratio = 0.0 if step == 0 else ratios[step - 1]
        return NetworkResult(
            pruner=pruner, step=step, target_ratio=ratio, prune_ratio=ratio, nonzero_params=1000 - int(1000 * ratio),
            structured=False, accuracy={k: float(v.mean()) for k, v in hits.items()},
            hits={k: pack_hits(v) for k, v in hits.items()},
        )

    nets = [network(PARENT, 0, parent_hits)]
    for pruner, per_dist in lost.items():
        order = {d.name: rng.permutation(np.flatnonzero(parent_hits[d.name])) for d in dists}
        for step in range(1, len(ratios) + 1):
            hits = {}
            for d in dists:
                count = (per_dist.get(d.name) or per_dist["clean" if d.nominal else "shifted"])[step - 1]
                hits[d.name] = parent_hits[d.name].copy()
                hits[d.name][order[d.name][:count]] = False
            nets.append(network(pruner, step, hits))
    return RunResult(
        config=config,
        provenance=Provenance(
            config_hash=config.config_hash(), seed=seed, packages={"torch": "x"}, data_checksum="abc",
            distribution_checksums={d.name: "0" for d in dists}, platform="test",
            created_at=datetime(2026, 1, 1, created, tzinfo=timezone.utc), wall_time_s=1.0,
        ),
        distributions=dists,
        networks=nets,
    )


# delta = 0.5 % of 400 images = 2 images: losing 1 passes (mostly), losing 40 always fails
GAP = {"wt": {"clean": [0, 0, 0], "shifted": [0, 40, 40]}}  # fine on clean, breaks under noise at 0.8
NO_GAP = {"wt": {"clean": [0, 2, 40], "shifted": [0, 2, 40]}}  # the same borderline step everywhere


def test_potential_batch_matches_the_scalar_metric_on_every_resample():
    rng = np.random.default_rng(1)
    ratios = [0.3, 0.5, 0.7, 0.9]
    errors = rng.uniform(0.08, 0.14, size=(4, 50))
    parent = rng.uniform(0.08, 0.12, size=50)
    for rule in ("paper", "monotone"):
        batch = potential_batch(ratios[::-1], errors[::-1], parent, 0.01, rule)  # grid order must not matter
        scalar = [prune_potential(ratios, errors[:, b], parent[b], 0.01, rule) for b in range(50)]
        assert batch.tolist() == scalar


def test_intervals_contain_the_point_estimates_of_the_plain_metrics():
    result = make_run(GAP)
    found = bootstrap_potentials([result], "wt", samples=300)
    plain = derive(result.distributions, result.networks, result.config.delta).pruners[0]
    assert found.nominal.estimate == plain.nominal_potential == 0.9
    assert found.robust_mean.estimate == plain.robust_potential_mean == 0.5
    assert found.gap.estimate == pytest.approx(0.4)
    for interval in (found.nominal, found.robust_mean, found.gap):
        assert interval.low <= interval.estimate <= interval.high
    assert found.replicates == 1 and found.samples == 300 and found.gap_draws.shape == (300,)


def test_bias_corrected_interval_is_the_percentile_interval_for_unbiased_draws():
    draws = np.linspace(-1.0, 1.0, 1001)  # half below 0, one tie: p = 1/2, z0 = 0
    low, high = bias_corrected_interval(0.0, draws)
    assert (low, high) == tuple(np.quantile(draws, [0.025, 0.975]))


def test_bias_corrected_interval_moves_its_quantiles_by_the_median_bias():
    draws = np.sort(np.random.default_rng(0).normal(size=4000))
    estimate = draws[3199] + 1e-6  # 3200 of 4000 draws below: p = 0.8
    z0 = NormalDist().inv_cdf(0.8)
    levels = [NormalDist().cdf(2 * z0 - 1.959964), NormalDist().cdf(2 * z0 + 1.959964)]
    low, high = bias_corrected_interval(estimate, draws)
    assert (low, high) == pytest.approx(tuple(np.quantile(draws, levels)), abs=1e-6)
    plain = np.quantile(draws, [0.025, 0.975])
    assert low > plain[0] and high > plain[1]  # towards the side where the estimate sits in its draws


def test_bias_corrected_interval_works_column_by_column():
    rng = np.random.default_rng(1)
    draws, estimates = rng.normal(size=(500, 3, 2)), rng.normal(size=(3, 2))
    low, high = bias_corrected_interval(estimates, draws)
    assert low.shape == high.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert (low[i, j], high[i, j]) == bias_corrected_interval(estimates[i, j], draws[:, i, j])


def test_random_resamples_keep_the_point_inside_its_interval():
    """Property over random bootstrap distributions of prune-potential-like statistics (grid values,
    means over seeds, many ties, skewed): the interval always contains its point; the BC quantiles
    alone already do wherever the point is not in an outer 5 % tail of its own draws."""
    rng = np.random.default_rng(2)
    for _ in range(1500):
        samples = int(rng.integers(50, 1000))
        grid = np.sort(rng.choice([0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95], size=int(rng.integers(1, 8)), replace=False))
        seeds = int(rng.integers(1, 4))
        draws = rng.choice(grid, size=(samples, seeds), p=rng.dirichlet(np.ones(len(grid)))).mean(axis=1)
        estimate = rng.choice([*grid, float(rng.uniform(-0.1, 1.0))])
        low, high = bias_corrected_interval(estimate, draws)
        assert low <= estimate <= high
        below = np.mean(draws < estimate - 1e-9) + 0.5 * np.mean(np.abs(draws - estimate) <= 1e-9)
        if 0.05 <= below <= 0.95:
            raw_low, raw_high = _bias_corrected_quantiles(estimate, draws, 0.95)
            assert raw_low <= estimate + 1e-12 and raw_high >= estimate - 1e-12, (below, estimate, raw_low, raw_high)


def test_resampling_is_paired_a_copy_of_the_parent_passes_in_every_resample():
    found = bootstrap_potentials([make_run({"wt": {"clean": [0, 0, 0], "shifted": [0, 0, 0]}})], "wt", samples=500)
    assert (found.nominal.low, found.nominal.high) == (0.9, 0.9)
    assert (found.robust_mean.low, found.robust_mean.high) == (0.9, 0.9)
    assert found.gap_p_value == 1.0


def test_four_times_more_test_images_narrow_the_interval():
    # 8 shifted sets, each with a step that loses 0.2 % of the images (delta is 0.5 %)
    shifted = [(f"noise/gaussian_noise/{s}", "gaussian_noise", s) for s in range(1, 9)]

    def width(scale: int) -> float:
        lost = {"wt": {"clean": [0, 0, 0], "shifted": [0, scale, 40 * scale]}}
        run = make_run(lost, n=500 * scale, parent_correct=450 * scale, shifted=shifted)
        found = bootstrap_potentials([run], "wt", samples=400)
        assert found.robust_mean.estimate == 0.8  # the same accuracies at both sizes
        return found.robust_mean.high - found.robust_mean.low

    small, large = width(1), width(4)
    assert small > 0.02 and large < small / 2


def test_clear_gap_has_a_small_p_value_and_no_gap_a_large_one():
    gap = bootstrap_potentials([make_run(GAP, seed=s) for s in range(2)], "wt", samples=999)
    assert gap.gap.low > 0.3 and gap.gap_p_value == pytest.approx(2 / 1000)
    same = bootstrap_potentials([make_run(NO_GAP, seed=s) for s in range(2)], "wt", samples=999)
    assert same.gap.low < 0 < same.gap.high and same.gap_p_value > 0.5


def test_p_value_of_constant_draws():
    assert gap_p_value(np.zeros(99)) == 1.0
    assert gap_p_value(np.full(99, -0.1)) == pytest.approx(0.02)


def test_seeds_are_resampled_and_a_seed_counts_once():
    lost = [{"wt": {"clean": [0, 40, 40], "shifted": [0, 40, 40]}},  # P = 0.5
            {"wt": {"clean": [0, 0, 40], "shifted": [0, 0, 40]}},  # P = 0.8
            {"wt": {"clean": [0, 0, 0], "shifted": [0, 0, 0]}}]  # P = 0.9
    runs = [make_run(spec, seed=s) for s, spec in enumerate(lost)]
    found = bootstrap_potentials(runs, "wt", samples=500)
    assert found.replicates == 3 and found.nominal.estimate == pytest.approx(2.2 / 3)
    assert 0.5 <= found.nominal.low < found.nominal.estimate < found.nominal.high <= 0.9

    rerun = make_run(lost[2], seed=2, created=1)  # seed 2 again, newer: replaces the first seed-2 file
    assert replicates([*runs, rerun], "wt")[-1] is rerun
    assert bootstrap_potentials([*runs, rerun], "wt", samples=10).replicates == 3


def test_deterministic_and_independent_of_file_order_and_other_pruners():
    runs = [make_run({"wt": NO_GAP["wt"], "ft": GAP["wt"]}, seed=s) for s in range(3)]
    first = bootstrap_pruners(runs, samples=200, seed=7)
    again = bootstrap_pruners(runs[::-1], samples=200, seed=7)
    alone = bootstrap_potentials(runs, "wt", samples=200, seed=7)
    assert first == again and first["wt"] == alone
    assert np.array_equal(first["wt"].gap_draws, alone.gap_draws)
    other = bootstrap_potentials(runs, "wt", samples=200, seed=8)
    assert not np.array_equal(other.gap_draws, alone.gap_draws)


def test_bad_input_is_a_clear_error():
    run = make_run(GAP)
    with pytest.raises(ValueError, match="no result file ran pruner 'sipp'"):
        bootstrap_potentials([run], "sipp")
    with pytest.raises(ValueError, match="span 2 protocols"):
        bootstrap_pruners([run, make_run(GAP, ratios=(0.5, 0.7, 0.9))])
    assert len(group_replicates([run, make_run(GAP, ratios=(0.5, 0.7, 0.9))])) == 2
    bare = run.model_copy(update={"networks": [n.model_copy(update={"hits": {}}) for n in run.networks]})
    with pytest.raises(ValueError, match="no per-example hits"):
        bootstrap_pruners([bare])


def test_resampled_accuracy_is_the_hit_rate_on_one_index_resample_shared_by_all_networks():
    from bench.results.schema import unpack_hits
    from bench.results.uncertainty import _rng, content_key, resampled_accuracy

    run = make_run({"wt": NO_GAP["wt"], "ft": GAP["wt"]}, n=97)
    accuracy = resampled_accuracy(run, run.networks, 40, seed=3)
    indices = _rng(3, "images", content_key(run)).integers(0, 97, size=(40, 97))  # the draws it makes
    for dist in run.distributions:
        hits = np.stack([unpack_hits(net.hits[dist.name], 97) for net in run.networks])
        assert np.array_equal(accuracy[dist.name], hits[:, indices].mean(axis=2))


def reprovenanced(run: RunResult, hour: int = 5, wall_time_s: float = 123.4, platform: str = "elsewhere") -> RunResult:
    """The same content with other provenance (timestamp, wall time, platform), sealed like a saved file."""
    from bench.results import seal

    provenance = run.provenance.model_copy(update={
        "created_at": datetime(2026, 3, 1, hour, tzinfo=timezone.utc), "wall_time_s": wall_time_s, "platform": platform,
    })
    return seal(run.model_copy(update={"provenance": provenance}))


def with_one_hit_flipped(run: RunResult, pruner: str = "wt", step: int = 1, name: str = "digits/clean") -> RunResult:
    """`run` with one per-example bit of one network flipped (and its accuracy to match), validated."""
    from bench.results.schema import unpack_hits

    raw = run.model_dump(mode="json")
    n = next(d.n_examples for d in run.distributions if d.name == name)
    net = next(x for x in raw["networks"] if x["pruner"] == pruner and x["step"] == step)
    hits = unpack_hits(net["hits"][name], n)
    hits[0] = not hits[0]
    net["hits"][name], net["accuracy"][name] = pack_hits(hits), float(hits.mean())
    return RunResult.model_validate(raw)


def test_statistics_depend_on_content_not_on_provenance():
    from bench.results import seal
    from bench.results.uncertainty import content_key, resampled_accuracy

    runs = [seal(make_run({"wt": NO_GAP["wt"], "ft": GAP["wt"]}, seed=s)) for s in range(2)]
    rerun = [reprovenanced(r, hour=s) for s, r in enumerate(runs)]  # re-running the finished command
    assert all(a.integrity != b.integrity for a, b in zip(runs, rerun))
    assert [content_key(r) for r in runs] == [content_key(r) for r in rerun]

    first, again = bootstrap_pruners(runs, samples=300), bootstrap_pruners(rerun, samples=300)
    assert first == again  # estimates, intervals and p-values
    for pruner in first:
        assert np.array_equal(first[pruner].gap_draws, again[pruner].gap_draws)
    assert {p: v.gap_p_value for p, v in first.items()} == {p: v.gap_p_value for p, v in again.items()}

    # one changed bit gives other image resamples: even the untouched parent's resampled accuracy changes
    flipped = with_one_hit_flipped(runs[0])
    assert content_key(flipped) != content_key(runs[0])
    before = resampled_accuracy(runs[0], [runs[0].parent], 300, seed=0)
    after = resampled_accuracy(flipped, [flipped.parent], 300, seed=0)
    assert not np.array_equal(before["digits/clean"], after["digits/clean"])
    changed = bootstrap_pruners([flipped, runs[1]], samples=300)
    assert not np.array_equal(changed["wt"].gap_draws, first["wt"].gap_draws)  # wt is borderline: draws vary


def test_a_tie_between_files_of_one_seed_is_broken_by_content_not_provenance():
    from bench.results.uncertainty import content_key

    a = make_run({"wt": {"clean": [0, 40, 40], "shifted": [0, 40, 40]}})
    b = make_run({"wt": {"clean": [0, 0, 0], "shifted": [0, 0, 0]}})  # same seed, same created_at
    winner = max((a, b), key=content_key)
    for platform, wall_time_s in [("x", 1.0), ("y", 2.0), ("z", 3.0), ("w", 4.0)]:
        pair = [reprovenanced(r, hour=0, platform=platform, wall_time_s=wall_time_s) for r in (a, b)]
        for order in (pair, pair[::-1]):
            (chosen,) = replicates(order, "wt")
            assert content_key(chosen) == content_key(winner)
    newer = reprovenanced(min((a, b), key=content_key), hour=1)  # a newer file still wins on time
    assert replicates([winner, newer], "wt") == [newer]

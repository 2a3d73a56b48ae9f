"""Bootstrap confidence intervals for nominal and robust prune potential.

Two sources of variation are resampled, both from the result files alone:

* test images: for each result file and bootstrap sample, one resample (with replacement) of the
  image indices, shared by every network of the file (paired: parent and pruned networks are
  scored on the same images) and by every distribution with the same number of examples (the
  shifted test sets are transforms of the clean test images, so index i is one underlying image;
  for unrelated test sets of equal size, resampling the pairs is still a valid bootstrap);
* seeds: result files of one protocol are replicates; each bootstrap sample draws as many of
  them as there are, with replacement, and averages their prune potentials.

A file drawn twice into the same sample reuses that sample's image resample. That keeps the cost
at one matrix product per file and can only widen the intervals (the duplicates are correlated).

Intervals are bias-corrected percentile intervals (BC; Efron 1981, Efron & Tibshirani 1993 ch. 14,
:func:`bias_corrected_interval`). Prune potential is a maximum over a thresholded grid, so image
noise lets higher ratios pass by chance and its resamples sit above the plain estimate: the plain
percentile interval then missed its own point (pfp's robust P mean 15.7 [16.2, 28.1]). BC moves the
quantiles by the resamples' median bias.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist, fmean

import numpy as np

from bench.core.io import canonical_sha256, seed_for
from bench.results.metrics import _TIE, Rule, derive  # the same tie tolerance as the plain metric
from bench.results.schema import PARENT, NetworkResult, PrunerMetrics, RunResult, unpack_hits

# the bootstrap of the leaderboard and of the figures: resamples, their seed, interval level
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
INTERVAL_METHOD = "bias-corrected percentile (BC)"


@dataclass(frozen=True, order=True)
class ReplicateKey:
    """What result files must share to be replicates: protocol (dataset, model, grid, recipes,
    delta) and suites (which decide the shifted test sets)."""

    dataset: str
    model: str
    suites: tuple[str, ...]
    protocol: str


def replicate_key(result: RunResult) -> ReplicateKey:
    cfg = result.config
    return ReplicateKey(cfg.dataset, cfg.model, cfg.suites, cfg.protocol_hash())


def group_replicates(results: Sequence[RunResult]) -> dict[ReplicateKey, list[RunResult]]:
    """Result files grouped by replicate key, keys sorted."""
    groups: dict[ReplicateKey, list[RunResult]] = defaultdict(list)
    for result in results:
        groups[replicate_key(result)].append(result)
    return {key: groups[key] for key in sorted(groups)}


def replicates(results: Sequence[RunResult], pruner: str) -> list[RunResult]:
    """The files that ran `pruner`, one per seed (the newest, if a seed was run twice), by seed.

    Two files with the same seed are the same replicate; counting both would understate the spread.
    Files written at the same instant are ordered by content_key, never by provenance, so that
    which one wins depends only on what they hold (and files with equal content give equal numbers).
    """
    newest: dict[int, RunResult] = {}
    for result in sorted(results, key=lambda r: (r.provenance.created_at, content_key(r))):
        if any(n.pruner == pruner for n in result.networks):
            newest[result.config.seed] = result
    return [newest[s] for s in sorted(newest)]


def pruner_steps(result: RunResult, pruner: str) -> list[NetworkResult]:
    """The networks of one pruner's cascade in `result`, in step order."""
    return sorted((n for n in result.networks if n.pruner == pruner), key=lambda n: n.step)


def replicate_metrics(results: Sequence[RunResult], pruner: str) -> list[tuple[RunResult, PrunerMetrics]]:
    """Each replicate of `pruner` (see replicates) with its metrics recomputed from the accuracies."""
    pairs = []
    for result in replicates(results, pruner):
        found = derive(result.distributions, result.networks, result.config.delta).pruners
        pairs.append((result, next(m for m in found if m.pruner == pruner)))
    return pairs


def has_hits(result: RunResult, pruner: str | None = None) -> bool:
    """Whether every network (or, given `pruner`, the parent and that pruner's cascade) carries
    per-example bits for every distribution."""
    names = {d.name for d in result.distributions}
    networks = result.networks if pruner is None else [result.parent, *pruner_steps(result, pruner)]
    return all(names <= net.hits.keys() for net in networks)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class PotentialIntervals:
    """Point estimates (plain metrics on the full data, mean over replicates) and bias-corrected
    percentile intervals (bias_corrected_interval)."""

    pruner: str
    replicates: int
    samples: int
    confidence: float
    nominal: Interval
    robust_mean: Interval | None  # None without shifted distributions
    gap: Interval | None  # nominal P - robust P mean, paired within every resample
    gap_p_value: float | None  # two-sided bootstrap test of gap = 0, see gap_p_value()
    gap_draws: np.ndarray | None = field(default=None, repr=False, compare=False)


def potential_batch(
    ratios: Sequence[float], errors: np.ndarray, parent_error: np.ndarray, delta: float, rule: Rule = "paper"
) -> np.ndarray:
    """bench.results.metrics.prune_potential for many resamples at once.

    errors: (steps, ...) with one row per ratio; parent_error: broadcastable to errors[0].
    """
    order = np.argsort(np.asarray(ratios, dtype=float), kind="stable")
    grid = np.asarray(ratios, dtype=float)[order].reshape(-1, *([1] * (errors.ndim - 1)))
    passing = errors[order] <= parent_error + delta + _TIE
    if rule == "monotone":
        passing = np.logical_and.accumulate(passing, axis=0)
    return np.where(passing, grid, 0.0).max(axis=0, initial=0.0)


def gap_p_value(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'gap = 0'.

    Twice the share of resamples on the less populated side of 0 (resamples at exactly 0 count on
    both sides, which is conservative for a discrete statistic), with the +1 Monte Carlo
    correction so that B resamples never claim p < 2 / (B + 1).
    """
    beyond = min(int(np.sum(draws <= 0)), int(np.sum(draws >= 0)))
    return min(1.0, 2 * (beyond + 1) / (draws.size + 1))


def _rng(seed: int, *labels: str) -> np.random.Generator:
    """A generator keyed by the seed and labels (bench.core.io.seed_for), so draws do not depend on argument order."""
    return np.random.default_rng(seed_for(seed, *labels))


def content_key(result: RunResult) -> str:
    """sha256 of what the bootstrap resamples: the config hash and every network's accuracies and
    per-example hits (canonical JSON, networks by pruner and step).

    The image resamples of a file are seeded from this key rather than from the file's integrity
    digest, which also covers provenance (created_at, wall_time_s, platform, ...): re-running a
    finished command must give the same intervals and p-values, while a change in any hit must
    give other draws. The config hash is the recorded one (bench.results checks it against the
    config as stored), not a re-dump: a field added to RunConfig later changes no draw.
    """
    networks = sorted(result.networks, key=lambda n: (n.pruner, n.step))
    content = {
        "config_hash": result.provenance.config_hash,
        "networks": [{"pruner": n.pruner, "step": n.step, "accuracy": n.accuracy, "hits": n.hits} for n in networks],
    }
    return canonical_sha256(content)


# image draws made at once (~20 bytes each while counted) and hit-matrix cells held as floats at once
# (4 bytes each; the hits themselves are held as bools, 1 byte each): they bound the bootstrap's
# memory whatever n_examples and the number of test sets are
# (`bench leaderboard` stays within ~200 MB). Chunks split the resamples, and a Generator's stream
# does not depend on how its draws are split into calls; the counts are sums of integers, exact in
# any grouping. So the numbers do not depend on these sizes.
CHUNK_DRAWS = 2**20
CHUNK_HITS = 2**22


def _image_weights(n: int, samples: int, rng: np.random.Generator, dtype: type = np.float32) -> np.ndarray:
    """(n, samples): how often each image is drawn in each resample of n images."""
    draws = rng.integers(0, n, size=(samples, n)) + (np.arange(samples) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=samples * n).reshape(samples, n).T.astype(dtype)


def _hit_matrix(result: RunResult, networks: Sequence[NetworkResult], name: str, n: int) -> np.ndarray:
    rows = []
    for net in networks:
        if name not in net.hits:
            raise ValueError(
                f"{net.pruner} step {net.step} of the seed-{result.config.seed} run has no per-example hits on "
                f"{name!r}; the bootstrap over test images needs them (re-run with a prunebench that stores them)"
            )
        rows.append(unpack_hits(net.hits[name], n))
    return np.stack(rows)


def resampled_accuracy(
    result: RunResult, networks: Sequence[NetworkResult], samples: int, seed: int
) -> dict[str, np.ndarray]:
    """Distribution name -> (networks, samples) accuracies on resampled test images."""
    rng = _rng(seed, "images", content_key(result))
    by_size: dict[int, list[str]] = defaultdict(list)
    for dist in result.distributions:
        by_size[dist.n_examples].append(dist.name)
    accuracy = {}
    for n in sorted(by_size):
        dtype = np.float32 if n < 2**24 else np.float64  # counts are integers up to n: exact either way
        names = by_size[n]
        hits = np.concatenate([_hit_matrix(result, networks, name, n) for name in names])  # bool: 1 byte a hit
        counts = np.empty((hits.shape[0], samples))
        chunk = max(1, CHUNK_DRAWS // n)
        group = max(1, CHUNK_HITS // n)  # rows of hits held as `dtype` at once
        for start in range(0, samples, chunk):
            stop = min(samples, start + chunk)
            weights = _image_weights(n, stop - start, rng, dtype)
            for first in range(0, hits.shape[0], group):
                counts[first:first + group, start:stop] = hits[first:first + group].astype(dtype) @ weights
        for i, name in enumerate(names):
            accuracy[name] = counts[i * len(networks) : (i + 1) * len(networks)] / n
    return accuracy


def _file_draws(
    result: RunResult, pruners: Sequence[str], samples: int, seed: int, rule: Rule
) -> dict[str, np.ndarray]:
    """Pruner -> (distributions, samples) prune potentials of one file; nominal first."""
    present = [p for p in pruners if any(n.pruner == p for n in result.networks)]
    steps = {p: pruner_steps(result, p) for p in present}
    networks = [result.parent, *(net for p in present for net in steps[p])]
    accuracy = resampled_accuracy(result, networks, samples, seed)
    names = [result.nominal.name, *(d.name for d in result.distributions if not d.nominal)]
    errors = 1.0 - np.stack([accuracy[name] for name in names], axis=1)  # (networks, distributions, samples)
    draws, start = {}, 1
    for p in present:
        stop = start + len(steps[p])
        ratios = [n.prune_ratio for n in steps[p]]
        draws[p] = potential_batch(ratios, errors[start:stop], errors[0], result.config.delta, rule)
        start = stop
    return draws


_TIE_TOLERANCE = 1e-9  # draws this close to the estimate are ties (means of the same grid values in another order)


def bias_corrected_interval(estimate: np.ndarray | float, draws: np.ndarray,
                            confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Efron's bias-corrected percentile interval of `estimate` from its bootstrap `draws` (samples
    along axis 0; `estimate` broadcasts against the rest): (low, high).

    The median bias z0 = Phi^-1(p), with p the share of draws below the estimate (ties counted half,
    kept within [1 / 2B, 1 - 1 / 2B]); the bounds are the draws' quantiles at Phi(2 z0 -+ z), z the
    normal quantile of (1 + confidence) / 2. Unbiased draws (p = 1/2) give the plain percentile
    interval. The bounds reach the estimate whenever p lies within the central `confidence` share;
    beyond that (the estimate in a 2.5 % tail of its own resamples) BC has no quantile to move to,
    and the interval is widened to the estimate so that it always contains its point."""
    low, high = _bias_corrected_quantiles(estimate, draws, confidence)
    return np.minimum(low, estimate), np.maximum(high, estimate)


def _bias_corrected_quantiles(estimate: np.ndarray | float, draws: np.ndarray,
                              confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The BC quantiles of bias_corrected_interval, before it widens them to the estimate."""
    draws = np.asarray(draws, dtype=float)
    estimate = np.asarray(estimate, dtype=float)
    samples = draws.shape[0]
    ties = np.abs(draws - estimate) <= _TIE_TOLERANCE
    below = ((draws < estimate) & ~ties).mean(axis=0) + 0.5 * ties.mean(axis=0)
    below = np.clip(below, 0.5 / samples, 1 - 0.5 / samples)
    normal = NormalDist()
    z0 = np.vectorize(normal.inv_cdf, otypes=[float])(below)
    z = normal.inv_cdf((1 + confidence) / 2)
    cdf = np.vectorize(normal.cdf, otypes=[float])
    shape = draws.shape[1:]
    flat = draws.reshape(samples, -1)
    levels = [np.broadcast_to(cdf(2 * z0 + sign * z), shape).ravel() for sign in (-1, 1)]
    low, high = (np.array([np.quantile(flat[:, i], level[i]) for i in range(flat.shape[1])]).reshape(shape)
                 for level in levels)
    return low, high


def _interval(estimate: float, draws: np.ndarray, confidence: float) -> Interval:
    low, high = bias_corrected_interval(estimate, draws, confidence)
    return Interval(estimate, float(low), float(high))


def _check(results: Sequence[RunResult], samples: int, confidence: float) -> None:
    if not results:
        raise ValueError("no result files to bootstrap")
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    keys = {replicate_key(r) for r in results}
    if len(keys) > 1:
        raise ValueError(
            f"the result files span {len(keys)} protocols or suite sets; bootstrap one replicate group at a time "
            "(bench.results.uncertainty.group_replicates)"
        )


def bootstrap_pruners(
    results: Sequence[RunResult],
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    pruners: Sequence[str] | None = None,
    rule: Rule = "paper",
) -> dict[str, PotentialIntervals]:
    """Intervals for every pruner (or the given ones) of a replicate group: files of one protocol
    and suite set, typically different seeds.

    Each pruner is resampled over the files that ran it. Deterministic for a fixed seed and
    independent of the order of `results` and of which other pruners are asked for.
    """
    _check(results, samples, confidence)
    found = sorted({n.pruner for r in results for n in r.networks if n.pruner != PARENT})
    missing = sorted(set(pruners or ()) - set(found))
    if missing:
        raise ValueError(f"no result file ran pruner {missing[0]!r} (found: {', '.join(found) or 'none'})")
    wanted = sorted(set(pruners)) if pruners is not None else found
    chosen = {p: replicate_metrics(results, p) for p in wanted}
    files = {id(r): r for p in wanted for r, _ in chosen[p]}
    draws = {
        key: _file_draws(result, [p for p in wanted if any(r is result for r, _ in chosen[p])], samples, seed, rule)
        for key, result in files.items()
    }
    out = {}
    for pruner in wanted:
        runs = [r for r, _ in chosen[pruner]]
        picks = _rng(seed, "seeds", pruner).integers(0, len(runs), size=(samples, len(runs)))
        stacked = np.stack([draws[id(r)][pruner] for r in runs])  # (files, distributions, samples)
        averaged = stacked[picks, :, np.arange(samples)[:, None]].mean(axis=1)  # (samples, distributions)
        metrics = [m for _, m in chosen[pruner]]
        out[pruner] = _summarise(pruner, metrics, averaged, samples, confidence, rule)
    return out


def _robust_mean(m: PrunerMetrics, monotone: bool) -> float:
    value = m.monotone_robust_potential_mean if monotone else m.robust_potential_mean
    assert value is not None  # set wherever there are shifted distributions
    return value


def _summarise(
    pruner: str, found: list[PrunerMetrics], chosen: np.ndarray, samples: int, confidence: float, rule: Rule
) -> PotentialIntervals:
    """chosen: (samples, distributions) seed-averaged prune potentials, nominal first."""
    monotone = rule == "monotone"
    nominal_point = fmean(m.monotone_nominal_potential if monotone else m.nominal_potential for m in found)
    nominal = _interval(nominal_point, chosen[:, 0], confidence)
    if chosen.shape[1] == 1:
        return PotentialIntervals(pruner, len(found), samples, confidence, nominal, None, None, None)
    robust_draws = chosen[:, 1:].mean(axis=1)
    gap_draws = chosen[:, 0] - robust_draws
    robust_point = fmean(_robust_mean(m, monotone) for m in found)
    return PotentialIntervals(
        pruner=pruner,
        replicates=len(found),
        samples=samples,
        confidence=confidence,
        nominal=nominal,
        robust_mean=_interval(robust_point, robust_draws, confidence),
        gap=_interval(nominal_point - robust_point, gap_draws, confidence),
        gap_p_value=gap_p_value(gap_draws),
        gap_draws=gap_draws,
    )


def bootstrap_potentials(
    results: Sequence[RunResult],
    pruner: str,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    rule: Rule = "paper",
) -> PotentialIntervals:
    """Percentile intervals of nominal P, robust P mean and their gap for one pruner.

    `results` are replicates (same protocol and suites, different seeds); see bootstrap_pruners.
    """
    return bootstrap_pruners(results, samples, confidence, seed, [pruner], rule)[pruner]

"""`bench verify`: re-check a result file against its saved networks, hit by hit.

A result file's integrity digest only catches careless edits: anyone can recompute it. What makes
a number trustworthy is that it can be recomputed. For every network the file names, verification

1. reads the saved network (bench.results.checkpoints) after checking its sha256 against the file's record,
2. counts its nonzero parameters and checks the claimed count and prune ratio against them,
3. rebuilds every test distribution from the recorded config, suites and seed (its checksum must be
   the recorded one),
4. evaluates the network exactly as `bench run` did and compares every per-example hit,

and optionally (`reproduce`) re-runs randomly chosen cascade steps from their saved predecessor,
and (`reproduce_parent`) re-trains the parent from its seeded initialisation.
Every disagreement is reported, per network and test set; a report (`<result>.verify.json`) is
written beside the result file for the leaderboard's "verified" column.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import multiprocessing
import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from bench.core.devices import cpu_name, device_description, resolve_device
from bench.core.io import atomic_write_text
from bench.core.registry import builtins_only
from bench.data import DataBundle, load_dataset
from bench.data.suite import Selection, TestDistribution
from bench.pipeline.exported import EXPORT_SUFFIX, load_exported, network_size
from bench.pipeline.jobs import (
    job_environment,
    load_pruner,
    new_model,
    prune_and_retrain,
    prune_context,
    trained_parent,
    why_parent_cannot_be_retrained,
)
from bench.pipeline.runner import test_distributions
from bench.pipeline.specs import pruner_identity
from bench.pipeline.training import evaluate
from bench.pipeline.verdict import Verification, current_platform, label
from bench.pruning import count_nonzero
from bench.results import load_result, networks_folder, report_path
from bench.results.checkpoints import NetworkFileError, fit_state, read_state, shape_signature, stored_entries
from bench.results.schema import EXTERNAL, PARENT, Distribution, NetworkResult, RunResult, unpack_hits

__all__ = ["REPRODUCE_TOLERANCE", "Verification", "verify_result"]


# a reproduced step on another platform or thread count: retraining is chaotic in float rounding,
# so the weights are not compared there, only what the step claims
REPRODUCE_TOLERANCE = {"prune_ratio": 0.01, "clean_accuracy": 0.02}
RATIO_TOLERANCE = 1e-9
# the tie rule: a recorded hit that differs here counts as a tie (not a disagreement) when the
# network's two largest logits for that example, recomputed in float64, are closer than this: float32
# rounding differences between CPUs, instruction sets and GPUs (~1e-6 of the logits) can then flip
# the prediction honestly. A forged hit on a confident example is still a disagreement.
TIE_MARGIN = 1e-3


def _hit_differences(check: Verification, net: NetworkResult, dist: TestDistribution, outcome: dict[str, object],
                     model: nn.Module, data: DataBundle) -> str | None:
    """What differs between a recorded cell and a fresh evaluation, or None. Differing hits on
    examples whose top-two logits are within TIE_MARGIN (float64) are ties: recorded in `check.ties`."""
    if dist.name in net.hits:
        recorded = unpack_hits(net.hits[dist.name], len(dist.images))
        fresh = unpack_hits(str(outcome["hits"]), len(dist.images))
        differ = np.flatnonzero(recorded != fresh)
        tied = _ties(model, data, dist, differ)
        if tied.size:
            check.ties.append(f"{label(net)} on {dist.name}: {tied.size} hits differ on examples whose top two logits "
                              f"are within {TIE_MARGIN:g} (examples {', '.join(map(str, tied[:5]))}"
                              f"{', ...' if tied.size > 5 else ''})")
        differ = np.setdiff1d(differ, tied)
        if differ.size:
            first = ", ".join(str(i) for i in differ[:5])
            return f"{differ.size} of {recorded.size} per-example hits differ (examples {first}{', ...' if differ.size > 5 else ''})"
        return None  # the recorded accuracy is the mean of the recorded hits (checked when the file is read)
    fresh_accuracy = float(outcome["accuracy"])  # type: ignore[arg-type]
    if not math.isclose(fresh_accuracy, net.accuracy[dist.name], rel_tol=0, abs_tol=1e-12):
        return f"accuracy {net.accuracy[dist.name]:.6f} recorded, {fresh_accuracy:.6f} re-evaluated"
    return None


def _ties(model: nn.Module, data: DataBundle, dist: TestDistribution, indices: np.ndarray) -> np.ndarray:
    """The `indices` of classification examples whose two largest logits, computed in float64 on the
    CPU, differ by less than TIE_MARGIN; none where that cannot be computed (an exported graph,
    segmentation, a test set that is not held in memory)."""
    images = getattr(dist.images, "images", None)
    if not indices.size or images is None or data.task != "classification":
        return indices[:0]
    try:
        exact = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
        with torch.no_grad():
            logits = exact(data.normalize(images[torch.from_numpy(indices)]).to(torch.float64))
    except (RuntimeError, TypeError, AttributeError):
        return indices[:0]
    top = logits.topk(2, dim=1).values
    return indices[(top[:, 0] - top[:, 1]).numpy() < TIE_MARGIN]


def _check_distributions(check: Verification, described_sets: Sequence[Distribution],
                         rebuilt: list[TestDistribution]) -> list[TestDistribution]:
    """The rebuilt test sets that match the `described_sets` of the file (name, size, checksum,
    labels); others are failures."""
    recorded = check.result.provenance.distribution_checksums
    by_name = {d.name: d for d in rebuilt}
    usable = []
    for described in described_sets:
        dist = by_name.get(described.name)
        if dist is None:
            check.fail(described.name, "the recorded suites no longer produce this test set")
        elif dist.images.checksum != recorded.get(described.name):
            check.fail(described.name, "rebuilt test set has another checksum than the recorded one")
        elif len(dist.images) != described.n_examples:
            check.fail(described.name, f"{len(dist.images)} examples rebuilt, {described.n_examples} recorded")
        elif (claimed := _description(described.suite, described.corruption, described.severity, described.level)) != (
                actual := _description(dist.suite, dist.corruption, dist.severity, dist.level)):
            check.fail(described.name, f"recorded as {claimed}, rebuilt as {actual}")
        else:
            usable.append(dist)
    return usable


def _description(suite: str, corruption: str | None, severity: int | None, level: float | None) -> str:
    """A test set's claimed identity, in words: what the board groups and labels it by."""
    return f"suite {suite!r}, corruption {corruption!r}, severity {severity!r}, level {level!r}"


def _load_network(check: Verification, net: NetworkResult, folder: Path, model: nn.Module) -> bool:
    if net.file is None:
        check.fail(label(net), "no saved network recorded (a result file of schema version 1)")
        return False
    path = folder / net.file.name
    try:
        state = read_state(path, net.file.sha256)
        fit_state(model, state, path)
    except NetworkFileError as exc:
        check.fail(label(net), str(exc))
        return False
    if shape_signature(state) != net.file.shape_signature:
        check.fail(label(net), f"{path.name}: shape signature differs from the recorded one")
    stored = stored_entries(state)
    if stored != net.file.nonzero:
        check.fail(label(net), f"{path.name}: {stored} nonzero entries stored, {net.file.nonzero} recorded")
    return True


def _check_sparsity(check: Verification, net: NetworkResult, nonzero: int, parent_nonzero: int) -> None:
    if nonzero != net.nonzero_params:
        check.fail(label(net), f"{nonzero} nonzero parameters measured, {net.nonzero_params} claimed")
    measured = 1.0 - nonzero / parent_nonzero
    if abs(measured - net.prune_ratio) > RATIO_TOLERANCE:
        check.fail(label(net), f"prune ratio {100 * measured:.2f} % measured, {100 * net.prune_ratio:.2f} % claimed "
                               "(the network is denser or sparser than its claim)")


def _reproduce_step(check: Verification, net: NetworkResult, folder: Path, data: DataBundle,
                    nominal: TestDistribution, parent_nonzero: int, device: str = "cpu") -> None:
    """Re-run one cascade step on `device` from its saved predecessor and compare with the saved step."""
    result, config = check.result, check.result.config
    where = f"{label(net)} (reproduced)"
    recorded = result.provenance.pruners.get(net.pruner)
    installed = pruner_identity(net.pruner)
    if recorded is not None and recorded.source_sha256 != installed["source_sha256"]:
        check.fail(where, f"installed pruner {net.pruner!r} differs from the recorded one (source digest); "
                          "cannot reproduce its steps")
        return
    previous = next(n for n in result.networks if n.pruner == (PARENT if net.step == 1 else net.pruner)
                    and n.step == net.step - 1)
    model = new_model(config, data, device=device)
    if not _load_network(check, previous, folder, model) or net.file is None:
        return
    prune_and_retrain(model, load_pruner(net.pruner), net.step, config, data, prune_context(config, data, model),
                      parent_nonzero)
    _compare_reproduction(check, net, model, folder, data, nominal, parent_nonzero, device)


def _reproduce_parent(check: Verification, net: NetworkResult, folder: Path, data: DataBundle,
                      nominal: TestDistribution, parent_nonzero: int, device: str = "cpu") -> None:
    """Re-train the parent on `device` from the config's seeded initialisation and recipe, and compare
    with the saved parent (as a reproduced step is compared)."""
    if net.file is None:
        check.fail(f"{PARENT} (reproduced)", "no saved network recorded (a result file of schema version 1)")
        return
    model = trained_parent(check.result.config, data, device)
    _compare_reproduction(check, net, model, folder, data, nominal, parent_nonzero, device)


def _compare_reproduction(check: Verification, net: NetworkResult, model: nn.Module, folder: Path, data: DataBundle,
                          nominal: TestDistribution, parent_nonzero: int, device: str) -> None:
    """A re-run network against the saved one: bitwise on the recording platform, CPU and thread count;
    elsewhere its prune ratio and clean accuracy within REPRODUCE_TOLERANCE of the claimed ones."""
    result, config = check.result, check.result.config
    where = f"{label(net)} (reproduced)"
    assert net.file is not None
    saved = read_state(folder / net.file.name, net.file.sha256)
    fresh = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    # GPU training is not bitwise reproducible (cuDNN autotuning, atomic adds in backward kernels), nor is
    # CPU training across CPU code paths (AVX2 and AVX-512 kernels sum in other orders); a file that does
    # not name its CPU (written before it was recorded) is held to the tolerance
    same_platform = (result.provenance.platform.startswith(current_platform(result))
                     and result.provenance.device == torch.device(device).type == "cpu"
                     and result.provenance.device_name == cpu_name())
    bitwise = all(torch.equal(fresh[name], saved[name]) for name in saved)
    if bitwise:
        check.reproduced.append(f"{label(net)}: bitwise identical")
        return
    if same_platform:
        check.fail(where, "not bitwise identical to the saved network on the recording platform, CPU and thread count")
        return
    ratio = 1.0 - count_nonzero(model) / parent_nonzero
    accuracy = float(evaluate(model, data, nominal.images, precision=config.precision)["accuracy"])  # type: ignore[arg-type]
    gaps = {"prune_ratio": abs(ratio - net.prune_ratio), "clean_accuracy": abs(accuracy - net.accuracy[nominal.name])}
    over = {k: v for k, v in gaps.items() if v > REPRODUCE_TOLERANCE[k]}
    if over:
        check.fail(where, "off-platform reproduction outside tolerance: "
                          + ", ".join(f"{k} differs by {v:.4f}" for k, v in over.items()))
    else:
        check.reproduced.append(f"{label(net)}: within tolerance (another platform or thread count)")


def verify_result(result_path: Path, networks_dir: Path | None = None, reproduce: int = 0, seed: int = 0,
                  progress: bool = True, write_report: bool = True, device: str = "cpu",
                  sample: int | None = None, plugins: bool = False, reproduce_parent: bool = False) -> Verification:
    """Check one result file against its saved networks (see the module docstring).

    `networks_dir` defaults to the folder `bench run` wrote beside the result. `reproduce`: how many
    randomly chosen cascade steps (drawn with `seed`) to re-run from their saved predecessor.
    `sample`: re-evaluate only that many (network, test set) pairs, drawn with `seed`, every hit of
    each compared (the drawn test sets and the clean one are rebuilt and checked, every network's
    size too); None: all.
    `device`: a `--device` value; networks are evaluated (and steps re-run) there. Hits are
    compared exactly, so verify on the device type the result records (`provenance.device`).
    `plugins`: whether datasets and suites of plugin packages may be imported (else a result that
    needs one fails with a RegistryError); reproduced steps always run in a separate process.
    `reproduce_parent`: also re-train the parent there from its seed (see `why_parent_cannot_be_retrained`).
    """
    arguments = (result_path, networks_dir, reproduce, seed, progress, write_report, device, sample, reproduce_parent)
    if plugins:
        return _verify_result(*arguments)
    with builtins_only():
        return _verify_result(*arguments)


def _verify_result(result_path: Path, networks_dir: Path | None, reproduce: int, seed: int, progress: bool,
                   write_report: bool, device: str, sample: int | None, reproduce_parent: bool) -> Verification:
    device = str(resolve_device(device))
    started = time.perf_counter()
    result_path = Path(result_path)
    result = load_result(result_path)
    check = Verification(result_path, result, device_name=device_description(device)["device_name"])
    folder = Path(networks_dir) if networks_dir is not None else networks_folder(result_path)
    config = result.config
    if reproduce_parent and (why := why_parent_cannot_be_retrained(result)) is not None:
        raise ValueError(f"{result_path}: --reproduce-parent: {why}")
    with job_environment(config):
        data = load_dataset(config.dataset, config.seed, config.per_class, config.image_size)
        if data.checksum != result.provenance.data_checksum:
            check.fail("data", f"dataset {config.dataset!r} here differs from the recorded one (checksum)")
            return _finish(check, started, write_report)
        chosen = _sampled_pairs(result, sample, seed)
        described = result.distributions if chosen is None else [
            d for d in result.distributions if d.nominal or any(name == d.name for _, name in chosen)]
        selection = None if chosen is None else dataclasses.replace(
            Selection.of(config), pairs=frozenset((d.corruption, d.severity) for d in described
                                                  if d.corruption is not None and d.severity is not None))
        distributions = _check_distributions(check, described, test_distributions(config, data, selection))
        check.sample = sample
        parent_nonzero = None
        recorded = result.provenance.device
        hint = "" if recorded == torch.device(device).type else (
            f" (recorded on {recorded}, re-evaluated on {device}: verify with --device {recorded})")
        for net, model in _loaded(check, folder, data, progress, device):
            nonzero = network_size(model)
            parent_nonzero = parent_nonzero if parent_nonzero is not None else nonzero
            _check_sparsity(check, net, nonzero, parent_nonzero)
            for dist in distributions:
                if chosen is not None and (label(net), dist.name) not in chosen:
                    continue
                outcome = evaluate(model, data, dist.images, precision=config.precision)
                check.hits_compared += len(dist.images)
                problem = _hit_differences(check, net, dist, outcome, model, data)
                if problem:
                    check.fail(f"{label(net)} on {dist.name}", problem + hint)
        # `bench eval`'s networks were pruned elsewhere: there is no step to re-run
        steps = [n for n in result.networks if n.pruner != PARENT and config.protocol != EXTERNAL]
        nominal_checked = any(d.name == result.nominal.name for d in distributions)
        if (reproduce or reproduce_parent) and parent_nonzero is not None and nominal_checked:
            chosen_steps = [(n.pruner, n.step) for n in random.Random(seed).sample(steps, min(reproduce, len(steps)))]
            if reproduce_parent:
                chosen_steps.insert(0, (PARENT, 0))
            failures, reproduced = _reproduce_elsewhere(result_path, folder, chosen_steps, parent_nonzero, device)
            check.disagreements.extend(failures)
            check.reproduced.extend(reproduced)
    return _finish(check, started, write_report)


def _reproduce_elsewhere(result_path: Path, folder: Path, steps: list[tuple[str, int]], parent_nonzero: int,
                         device: str) -> tuple[list[str], list[str]]:
    """Re-run `steps` in a fresh spawned process: it imports the pruners (plugins too), so nothing
    their code does can reach this process's checks. Returns (disagreements, reproduced lines)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_reproduce_steps, result_path, folder, steps, parent_nonzero, device).result()


def _reproduce_steps(result_path: Path, folder: Path, steps: list[tuple[str, int]], parent_nonzero: int,
                     device: str) -> tuple[list[str], list[str]]:
    """The child's side of `_reproduce_elsewhere`: each step from its saved predecessor (the parent,
    step 0, from its seed)."""
    result = load_result(result_path)
    check = Verification(result_path, result)
    with job_environment(result.config):
        data = load_dataset(result.config.dataset, result.config.seed, result.config.per_class, result.config.image_size)
        nominal = TestDistribution(name=result.nominal.name, suite=result.nominal.suite, images=data.test)
        for pruner, step in steps:
            net = next(n for n in result.networks if n.pruner == pruner and n.step == step)
            reproduce = _reproduce_parent if pruner == PARENT else _reproduce_step
            reproduce(check, net, folder, data, nominal, parent_nonzero, device)
    return check.disagreements, check.reproduced


def _sampled_pairs(result: RunResult, sample: int | None, seed: int) -> set[tuple[str, str]] | None:
    """`sample` (network label, test set name) pairs drawn with `seed` from all the file records;
    None: all. Only the drawn test sets (and the clean one) are rebuilt."""
    if sample is None:
        return None
    pairs = [(label(net), dist.name) for net in result.networks for dist in result.distributions]
    return set(random.Random(seed).sample(pairs, min(sample, len(pairs))))


def _loaded(check: Verification, folder: Path, data: DataBundle, progress: bool,
            device: str = "cpu") -> Iterator[tuple[NetworkResult, nn.Module]]:
    """Each network of the result that loads (parent first) on `device`, counted in `networks_checked`."""
    networks = sorted(check.result.networks, key=lambda n: n.pruner != PARENT)
    for net in tqdm(networks, desc=f"verify {check.result_path.name}", unit="net", disable=not progress,
                    dynamic_ncols=True, leave=False):
        model = _open_network(check, net, folder, data, device)
        if model is None:
            if net.pruner == PARENT:
                check.fail(PARENT, "without the parent no prune ratio can be checked; stopping")
                return
            continue
        check.networks_checked += 1
        yield net, model.eval()


def _open_network(check: Verification, net: NetworkResult, folder: Path, data: DataBundle,
                  device: str) -> nn.Module | None:
    """The saved network on `device`, or None (a failure recorded): the config's model with its
    weights, or (`bench eval`'s physically smaller networks) a torch.export archive."""
    if net.file is not None and net.file.name.endswith(EXPORT_SUFFIX):
        try:
            return load_exported(folder / net.file.name, net.file.sha256).to(device)
        except NetworkFileError as exc:
            check.fail(label(net), str(exc))
            return None
    model = new_model(check.result.config, data, device=device)
    return model if _load_network(check, net, folder, model) else None


def _finish(check: Verification, started: float, write_report: bool) -> Verification:
    check.seconds = time.perf_counter() - started
    if write_report:
        atomic_write_text(report_path(check.result_path), check.report().model_dump_json(indent=1) + "\n")
    return check


def verify_results(paths: Sequence[Path], workers: int = 1, **options: Any) -> Iterator[Verification]:
    """`verify_result(path, **options)` for every path, in order; with `workers` > 1 the files are
    verified side by side in that many spawned processes (one file per process at a time, no
    progress bars: verifying re-runs one-thread evaluations, so a file per core uses every core).
    With `plugins=True` every file gets a fresh process, so a plugin one file imports cannot change
    another file's verdict."""
    isolate = bool(options.get("plugins"))
    if (workers <= 1 or len(paths) <= 1) and not isolate:
        yield from (verify_result(path, **options) for path in paths)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(paths))), mp_context=context,
                             max_tasks_per_child=1 if isolate else None) as pool:
        yield from pool.map(partial(verify_result, **{**options, "progress": False}), paths)

"""`bench plan`: the jobs a `bench run` would run, how many are cached, and a measured time estimate.

Nothing is trained and nothing is written. The job counts and cache state come from the very keys
bench.pipeline.runner.run uses (bench.pipeline.jobs: parent_spec, chain_keys, eval_spec, run_networks; Store.done).
The estimate extrapolates a short calibration on this machine, with the run's thread count: a few
training steps (forward + backward + optimizer step) of the run's model on a batch of the real
training data, and a few evaluation batches of its test images. A cascade step costs its retraining
plus its size search (SIZE_SEARCH_PASSES forward + backward passes over the S set); an evaluation
costs its test images. Loading the data and building the test sets is measured as it happens.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.devices import resolve_device
from bench.data import DataBundle, load_dataset
from bench.pipeline.jobs import Store, calibration_indices, check_parent_checkpoint, job_environment, new_model
from bench.pipeline.runner import test_distributions
from bench.pipeline.specs import chain_keys, eval_spec, parent_spec, pruner_identity, run_networks, spec_key
from bench.pipeline.training import make_optimizer, precision_context
from bench.results.schema import Recipe, RunConfig

__all__ = ["SIZE_SEARCH_PASSES", "Calibration", "Plan", "Stage", "format_plan", "plan"]

SIZE_SEARCH_PASSES = 15  # forward + backward passes over S per cascade step (size search + propagation)
WARMUP_STEPS, TIMED_STEPS = 2, 5
EVAL_BATCH, EVAL_IMAGES = 256, 512  # evaluation calibration: up to 512 test images in batches of 256


@dataclass(frozen=True)
class Stage:
    """One kind of job of a run: how many there are, how many are cached, and the time the rest take."""

    name: str
    detail: str
    jobs: int
    cached: int
    seconds: float  # estimated wall time of the jobs that are not cached
    parallel: int = 1  # how many of them run at once

    @property
    def todo(self) -> int:
        return self.jobs - self.cached


@dataclass(frozen=True)
class Calibration:
    """What the estimate extrapolates, measured on this machine with the run's thread count."""

    train_step_s: float  # one optimizer step of the parent recipe's batch (forward + backward + step)
    train_batch: int
    eval_image_s: float  # one evaluated test image (batches of EVAL_BATCH)
    device: str
    threads: int

    @property
    def train_image_s(self) -> float:
        """Forward + backward (+ optimizer share) per training image."""
        return self.train_step_s / self.train_batch


@dataclass(frozen=True)
class Plan:
    """The jobs of one run with their cache state, and the estimated wall time of what is left."""

    config: RunConfig
    stages: tuple[Stage, ...]  # parent, cascade steps, evaluations
    test_sets: int
    test_images: int  # summed over the test sets: what one network's evaluation reads
    calibration: Calibration
    load_s: float  # measured: loading the data (every run does it again)
    testsets_s: float  # measured: building the test sets (every run does it again, beside the first jobs)
    workers: int
    critical_s: float  # the longest chain of dependent jobs left: parent, the longest cascade, one evaluation
    busy_cores: float | None = None  # measured: cores other processes kept busy (None: not measurable here)

    @property
    def setup_s(self) -> float:
        return self.load_s + self.testsets_s

    @property
    def work_s(self) -> float:
        """Core-seconds of the jobs not cached (each stage's time times the jobs it runs at once)."""
        return sum(stage.seconds * stage.parallel for stage in self.stages)

    @property
    def remaining_s(self) -> float:
        """Estimated wall time of the jobs that are not cached (0 when everything is): one worker
        runs them in turn; more, as bench.pipeline.scheduler does, as long as the longest dependent chain or
        the work spread over the workers, whichever is longer."""
        if self.workers == 1:
            return self.work_s
        return max(self.critical_s, self.work_s / self.workers)

    @property
    def total_s(self) -> float:
        """What `bench run` should take: loading the data, then the jobs, with the test sets built
        in the main process beside them (one worker: before them)."""
        if self.workers == 1:
            return self.load_s + self.testsets_s + self.work_s
        return self.load_s + max(self.testsets_s, self.critical_s, (self.work_s + self.testsets_s) / self.workers)

    @property
    def free_cores(self) -> float | None:
        return None if self.busy_cores is None else max(0.0, (os.cpu_count() or 1) - self.busy_cores)


def busy_cores(seconds: float = 0.5) -> float | None:
    """Cores other processes keep busy, from /proc/stat over `seconds` (None off Linux)."""
    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    first = sample()
    time.sleep(seconds)
    second = sample()
    if first is None or second is None or second[0] == first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * (total - idle) / total


def _median_time(step: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> float:
    """Median wall time of `step` after `warmup` untimed calls."""
    samples = []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= warmup:
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _loss(data: DataBundle, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if data.task == "segmentation":
        from bench.data.segmentation import segmentation_loss

        return segmentation_loss(output, labels)
    return F.cross_entropy(output, labels)


def _train_step_time(model: nn.Module, data: DataBundle, recipe: Recipe, precision: str, device: torch.device) -> float:
    """Median seconds of one training step on the first `recipe.batch_size` training images."""
    images = data.normalize(data.train.images[:recipe.batch_size]).to(device)
    labels = data.train.labels[:recipe.batch_size].to(device)
    optimizer = make_optimizer(model, recipe)
    model.train()

    def step() -> None:
        with precision_context(model, precision):
            loss = _loss(data, model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _median_time(step, WARMUP_STEPS, TIMED_STEPS, device)


def _eval_image_time(model: nn.Module, data: DataBundle, precision: str, device: torch.device) -> float:
    """Median seconds per test image of inference on up to EVAL_IMAGES test images."""
    count = min(len(data.test), EVAL_IMAGES)
    batches = [(data.test.images[i:i + EVAL_BATCH], data.test.labels[i:i + EVAL_BATCH]) for i in range(0, count, EVAL_BATCH)]
    model.eval()

    @torch.inference_mode()
    def evaluate() -> None:
        with precision_context(model, precision):
            for images, labels in batches:
                (model(data.normalize(images).to(device)).argmax(1) == labels.to(device)).sum()

    return _median_time(evaluate, 1, 3, device) / count


def calibrate(config: RunConfig, data: DataBundle, device: torch.device) -> Calibration:
    """Time a few training steps and evaluation batches of the run's model on its real data."""
    with job_environment(config):
        model = new_model(config, data, device=device)
        train_step_s = _train_step_time(model, data, config.train, config.precision, device)
        eval_image_s = _eval_image_time(model, data, config.precision, device)
    return Calibration(train_step_s=train_step_s, train_batch=min(config.train.batch_size, len(data.train)),
                       eval_image_s=eval_image_s, device=device.type, threads=config.threads)


def training_seconds(recipe: Recipe, train_images: int, calibration: Calibration) -> float:
    """Estimated wall time of `recipe.epochs` epochs over `train_images` images."""
    steps = recipe.epochs * math.ceil(train_images / recipe.batch_size)
    return steps * min(recipe.batch_size, train_images) * calibration.train_image_s


def _steps_left(store: Store, keys: list[str]) -> int:
    """Steps of a chain still to run: from its first missing step to the end (bench.pipeline.jobs.run_step_job)."""
    missing = [index for index, key in enumerate(keys) if not store.done("steps", key)]
    return len(keys) - missing[0] if missing else 0


def plan(config: RunConfig, out_dir: Path, cache_dir: Path | None = None, parent_checkpoint: Path | None = None,
         device: str = "cpu", workers: int = 1) -> Plan:
    """The jobs `bench.pipeline.runner.run(config, out_dir, cache_dir, device=device)` would run, which of them
    the job cache already holds, and an estimate of the wall time, from a short calibration on this
    machine (on `device`).

    Trains nothing and writes nothing. The estimate is for `workers` jobs at a time (`--workers`), each
    as fast as the calibration's single process (one job per core): the parent alone, the pruners'
    cascades side by side, the evaluations spread over every worker, all beside the test sets that the
    main process builds (bench.pipeline.scheduler). It also measures how many cores other processes keep busy
    and says so when the estimate counts on cores that are not free.
    `parent_checkpoint`: checked as `run` checks it.
    """
    started = time.perf_counter()
    target = resolve_device(device)
    kind = target.type  # what the jobs' keys hold (bench.pipeline.specs.device_extras)
    store = Store(Path(cache_dir) if cache_dir is not None else Path(out_dir) / ".cache")
    identities = {name: pruner_identity(name) for name in config.pruners}  # loads each: unknown names fail here
    data = load_dataset(config.dataset, config.seed, config.per_class, config.image_size)
    if parent_checkpoint is not None:
        check_parent_checkpoint(config, data, Path(parent_checkpoint))
    loaded = time.perf_counter()
    distributions = test_distributions(config, data)
    built = time.perf_counter()
    others = busy_cores()
    calibration = calibrate(config, data, target)

    parent_key = spec_key(parent_spec(config, data.checksum, kind))
    parent_cached = store.done("parents", parent_key)
    parent_s = 0.0 if parent_cached else training_seconds(config.train, len(data.train), calibration)

    s_size = len(calibration_indices(config, data))
    step_s = (training_seconds(config.retrain, len(data.train), calibration)
              + SIZE_SEARCH_PASSES * s_size * calibration.train_image_s)
    chains = {name: chain_keys(config, name, parent_key, identities[name], kind) for name in config.pruners}
    left = [_steps_left(store, keys) for keys in chains.values()]
    steps_left, chains_left = sum(left), sum(1 for count in left if count)
    n_steps = sum(len(keys) for keys in chains.values())

    refs = run_networks(config, data.checksum, identities, kind)
    checksums = [d.images.checksum for d in distributions]
    sizes = [len(d.images) for d in distributions]
    evals_left = [size for ref in refs for checksum, size in zip(checksums, sizes)
                  if not store.done("evals", spec_key(eval_spec(ref.key, checksum, config, kind)))]
    n_evals = len(refs) * len(checksums)

    parent_detail = (f"checkpoint {config.parent_checkpoint_sha256[:12]}, " if config.parent_checkpoint_sha256 else "") \
        + f"{config.train.epochs} epochs"
    step_jobs, eval_jobs = _parallel(workers, chains_left), _parallel(workers, len(evals_left))
    stages = (
        Stage("parent", parent_detail, 1, int(parent_cached), parent_s),
        Stage("cascade steps", f"{len(config.pruners)} pruners x {len(config.target_ratios)} ratios, "
              f"{config.retrain.epochs} retrain epochs, S set of {s_size}", n_steps, n_steps - steps_left,
              steps_left * step_s / step_jobs, step_jobs),
        Stage("evaluations", f"{len(refs)} networks x {len(checksums)} test sets", n_evals, n_evals - len(evals_left),
              sum(evals_left) * calibration.eval_image_s / eval_jobs, eval_jobs),
    )
    one_evaluation = sum(sizes) * calibration.eval_image_s if evals_left else 0.0
    return Plan(config=config, stages=stages, test_sets=len(checksums), test_images=sum(sizes),
                calibration=calibration, load_s=loaded - started, testsets_s=built - loaded, workers=workers,
                critical_s=parent_s + max(left, default=0) * step_s + one_evaluation, busy_cores=others)


def _parallel(workers: int, jobs: int) -> int:
    """How many of `jobs` independent jobs run at once on `workers` workers (at least 1)."""
    return max(1, min(workers, jobs))


def duration(seconds: float) -> str:
    """'0 s', '42 s', '2.1 min', '3.5 h'."""
    if seconds < 0.5:
        return "0 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(result: Plan) -> str:
    """The plan as a small markdown table (stage, jobs, cached, estimated time) and a total line."""
    from bench.reports.markdown import table

    config, calibration = result.config, result.calibration
    rows = [[f"{stage.name} ({stage.detail})", str(stage.jobs), str(stage.cached), duration(stage.seconds)]
            for stage in result.stages]
    rows.append(["data and test sets (measured)", "", "", duration(result.setup_s)])
    threads = f"{calibration.threads} thread{'s' if calibration.threads != 1 else ''}"
    where = f"{calibration.device} ({threads})" if calibration.device == "cpu" else calibration.device
    lines = [
        f"{config.dataset} / {config.model}, seed {config.seed}: {result.test_sets} test sets, "
        f"{result.test_images:,} test images per network",
        "",
        table(rows, headers=["stage", "jobs", "cached", "estimated time"]),
        "",
        f"estimated {duration(result.total_s)} on {where}, {duration(result.remaining_s)} of it for the "
        f"{sum(stage.todo for stage in result.stages)} jobs not cached",
        f"calibration: {1000 * calibration.train_step_s:.1f} ms per training step of {calibration.train_batch} images, "
        f"{1e6 * calibration.eval_image_s:.0f} us per evaluated image",
    ]
    if result.free_cores is not None and result.free_cores < result.workers - 0.25:
        lines.append(
            f"note: other processes keep {result.busy_cores:.1f} of {os.cpu_count()} cores busy; the estimate assumes "
            f"{result.workers} free core{'s' if result.workers != 1 else ''} (one per worker) and the calibration ran "
            f"beside them: expect the run to take longer")
    return "\n".join(lines)

"""The benchmark pipeline: parent (cached) -> cascade prune/retrain -> evaluate everywhere."""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench.core import registry
from bench.core.devices import device_description, resolve_device
from bench.data import DataBundle, dataset_spec, load_dataset
from bench.data.suite import Selection, Suite, TestDistribution, in_selection
from bench.pipeline.executors import Executor, LocalExecutor
from bench.pipeline.jobs import Store, calibration_indices, import_parent_checkpoint
from bench.pipeline.scheduler import build_graph, run_graph
from bench.pipeline.specs import NetworkRef, eval_spec, pruner_identity, run_networks, spec_key
from bench.pruning import parse_pruner_label, require_canonical_label
from bench.results import networks_folder, save_result
from bench.results.schema import (
    EXTERNAL,
    Distribution,
    NetworkFile,
    NetworkResult,
    Provenance,
    PrunerIdentity,
    RunConfig,
    RunResult,
)

NOMINAL = "nominal"


def load_suite(name: str) -> Suite:
    return registry.load_class(registry.SUITE_GROUP, name, Suite)()


def package_versions(config: RunConfig) -> dict[str, str]:
    versions = {"python": platform.python_version(), **registry.installed_versions(
        ("prunebench", "torch", "torchvision", "timm", "numpy", "pydantic", "scikit-learn"))}
    # `bench eval`'s methods are not plugins; a label's options are not part of its entry point's name
    pruners = () if config.protocol == EXTERNAL else [parse_pruner_label(p)[0] for p in config.pruners]
    for group, names in ((registry.PRUNER_GROUP, pruners), (registry.SUITE_GROUP, config.suites),
                         (registry.DATASET_GROUP, (config.dataset,))):
        for name in names:
            dist, dist_version = registry.distribution_of(group, name)
            versions.setdefault(dist, dist_version)
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def selected(config: RunConfig, distributions: list[TestDistribution], complete: bool = True) -> list[TestDistribution]:
    """Apply `--corruptions` / `--severities`; names that match nothing are an error (when the
    suites built every test set: `complete`)."""
    for option, wanted, present in () if not complete else (
        ("--corruptions", config.corruptions, {d.corruption for d in distributions}),
        ("--severities", config.severities, {d.severity for d in distributions}),
    ):
        unknown = sorted(set(wanted or ()) - present, key=str)
        if unknown:
            known = ", ".join(str(p) for p in sorted(present - {None}, key=str)) or "none"
            raise ValueError(f"{option}: {unknown} not offered by suites {list(config.suites)} (available: {known})")
    return [d for d in distributions if in_selection(d.corruption, d.severity, config.corruptions, config.severities)]


def test_distributions(config: RunConfig, data: DataBundle, selection: Selection | None = None) -> list[TestDistribution]:
    """The clean test set and every suite's test sets the config selects (`selection`: the config's
    own, Selection.of(config), unless given)."""
    suites = [load_suite(name) for name in config.suites]
    for suite in suites:
        suite.check_dataset(data.name)
    clean = TestDistribution(name=f"{data.name}/clean", suite=NOMINAL, images=data.test)
    chosen = selection or Selection.of(config)
    built = [d for suite in suites for d in checked_sets(suite, suite.distributions(data, config.seed, chosen), data)]
    return [clean] + selected(config, built, complete=selection is None)


def checked_sets(suite: Suite, distributions: list[TestDistribution], data: DataBundle) -> list[TestDistribution]:
    """A suite's test sets, checked like the built-ins' (a plugin's too): uint8 images of the clean
    test set's (C, H, W), one label per image in the dataset's range, no more images than the
    dataset's largest test set. One-line ValueError naming the suite and the set otherwise."""
    shape = tuple(data.test.images.shape[1:]) if hasattr(data.test, "images") else None
    most = dataset_spec(data.name).max_test_examples if data.name in registry.available(registry.DATASET_GROUP) else None
    for dist in distributions:
        where = f"suite {suite.name!r}, test set {dist.name!r}"
        images, labels = getattr(dist.images, "images", None), getattr(dist.images, "labels", None)
        if most is not None and len(dist.images) > most:
            raise ValueError(f"{where}: {len(dist.images)} examples, more than the {most} of any {data.name} test set")
        if images is None or labels is None:
            continue  # file-backed: checked against the clean test set as it is read (bench.data.files)
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != shape:
            raise ValueError(f"{where}: {images.dtype} images of {tuple(images.shape[1:])}, expected uint8 of {shape}")
        if data.task == "classification" and labels.numel() and (
                labels.dtype.is_floating_point or int(labels.min()) < 0 or int(labels.max()) >= data.num_classes):
            raise ValueError(f"{where}: labels outside the dataset's {data.num_classes} classes")
    return distributions


def result_path(config: RunConfig, out_dir: Path) -> Path:
    return out_dir / f"{config.dataset}-{config.model}-s{config.seed}-{config.config_hash()[:12]}.json"


def save_networks(store: Store, refs: list[NetworkRef], folder: Path) -> dict[NetworkRef, NetworkFile]:
    """Copy every evaluated network out of the job cache into `folder` (beside the result file)."""
    files = {}
    for ref in refs:
        saved = store.export_network(ref.kind, ref.key, folder / ref.file_name)
        files[ref] = NetworkFile(name=ref.file_name, **asdict(saved))
    return files


def network_results(config: RunConfig, store: Store, refs: list[NetworkRef], testsets: dict[str, str],
                    files: dict[NetworkRef, NetworkFile], device: str = "cpu") -> list[NetworkResult]:
    """Assemble the result cells from the job artifacts (of the jobs that ran on `device`)."""
    parent_nonzero = store.read_json("parents", refs[0].key)["nonzero_params"]
    parent_meta = {"prune_ratio": 0.0, "target_ratio": 0.0, "nonzero_params": parent_nonzero, "structured": False}
    records = []
    for ref in refs:
        meta = parent_meta if ref.kind == "parents" else store.read_json(ref.kind, ref.key)
        evals = {
            name: store.read_json("evals", spec_key(eval_spec(ref.key, checksum, config, device)))
            for name, checksum in testsets.items()
        }
        records.append(
            NetworkResult(
                pruner=ref.pruner,
                step=ref.step,
                target_ratio=meta["target_ratio"],
                prune_ratio=meta["prune_ratio"],
                nonzero_params=meta["nonzero_params"],
                structured=meta["structured"],
                accuracy={name: e["accuracy"] for name, e in evals.items()},
                hits={name: e["hits"] for name, e in evals.items() if "hits" in e},
                file=files[ref],
            )
        )
    return records


def run(
    config: RunConfig,
    out_dir: Path,
    cache_dir: Path | None = None,
    progress: bool = True,
    executor: Executor | None = None,
    parent_checkpoint: Path | None = None,
    device: str = "cpu",
) -> Path:
    """Run the whole benchmark for one config and write its validated result file.

    Every stage is a cached job (bench.pipeline.jobs): rerunning after a crash resumes, and adding a
    suite only evaluates the existing networks on the new test sets. `parent_checkpoint`: the
    file whose sha256 `config.parent_checkpoint_sha256` names (bench.pipeline.config.default_config
    records it); checked against the model and kept in the job cache for the parent job.
    `device`: a `--device` value (bench.core.devices.resolve_device); every job trains and evaluates
    there, and the result records it. Jobs get `Executor.job_device`: on pinned GPU workers its type
    (`cuda`: the GPU the executor pinned the worker to, bench.pipeline.executors), in this process the
    device itself (`cuda:1` runs on GPU 1, bench.core.devices.device_environment).
    """
    started = time.perf_counter()
    for name in config.pruners:
        require_canonical_label(name)  # fail fast on unknown names and bad options, before any training
    setup = prepare(config, out_dir, cache_dir, progress, executor, device, parent_checkpoint)
    refs = run_networks(config, setup.data.checksum, device=setup.job_device)
    testsets = setup.run_jobs(refs)
    path = result_path(config, out_dir)
    cells = network_results(config, setup.store, refs, testsets.checksums,
                            save_networks(setup.store, refs, networks_folder(path)), setup.job_device)
    return write_result(config, setup.data, testsets.distributions, cells, path, setup.executor.name,
                        time.perf_counter() - started, device)


@dataclass(frozen=True)
class TestSets:
    """A run's test sets, saved in its job store."""

    distributions: list[TestDistribution]
    checksums: dict[str, str]  # distribution name -> test-set checksum


def save_testsets(config: RunConfig, data: DataBundle, store: Store) -> TestSets:
    """Build the config's test sets (bench.pipeline.runner.test_distributions) and save them in `store`."""
    distributions = test_distributions(config, data)
    for d in distributions:
        store.save_testset(d.images)
    return TestSets(distributions, {d.name: d.images.checksum for d in distributions})


@dataclass(frozen=True)
class RunSetup:
    """What every command that runs jobs sets up first (bench.pipeline.runner.run, bench.pipeline.external)."""

    config: RunConfig
    store: Store
    executor: Executor
    job_device: str  # the jobs' device argument: its type is in their keys off the CPU, an index picks the GPU
    data: DataBundle
    bars: bool  # in-process jobs may draw progress bars; workers stay quiet
    progress: bool  # a progress bar over the run's jobs

    def run_jobs(self, refs: list[NetworkRef]) -> TestSets:
        """Train what `refs` (parent first, bench.pipeline.jobs.run_networks) lack and evaluate every network on
        every test set, while this process builds and saves the test sets (bench.pipeline.scheduler);
        returns the test sets. Stored networks and evaluations are not run again."""
        checksums: list[str] = []

        def build() -> TestSets:
            testsets = save_testsets(self.config, self.data, self.store)
            checksums.extend(testsets.checksums.values())
            return testsets

        graph = build_graph(refs, self.store, self.config.model_dump_json(), self.data.checksum,
                            lambda: list(checksums), self.job_device, self.bars)
        testsets: TestSets = run_graph(graph, self.executor, build, self.progress)
        return testsets


def prepare(config: RunConfig, out_dir: Path, cache_dir: Path | None = None, progress: bool = True,
            executor: Executor | None = None, device: str = "cpu", parent_checkpoint: Path | None = None) -> RunSetup:
    """Open the job store, load the dataset and import a parent checkpoint (if given)."""
    store = Store(Path(cache_dir) if cache_dir is not None else Path(out_dir) / ".cache")
    executor = executor or LocalExecutor(progress=progress)
    data = load_dataset(config.dataset, config.seed, config.per_class, config.image_size)
    if parent_checkpoint is not None:
        import_parent_checkpoint(store, config, data, Path(parent_checkpoint))
    return RunSetup(
        config=config, store=store, executor=executor,
        job_device=executor.job_device(str(resolve_device(device))), data=data,
        bars=progress and isinstance(executor, LocalExecutor) and executor.in_process, progress=progress,
    )


def write_result(config: RunConfig, data: DataBundle, distributions: list[TestDistribution],
                 cells: list[NetworkResult], path: Path, executor_name: str, wall_time_s: float,
                 device: str = "cpu") -> Path:
    """Write the validated result file of a run's evaluated cells (with its provenance) to `path`."""
    external = config.protocol == EXTERNAL  # `bench eval`: the methods are no installed pruners, nothing pruned
    testsets = {d.name: d.images.checksum for d in distributions}
    described = [
        Distribution(
            name=d.name,
            suite=d.suite,
            corruption=d.corruption,
            severity=d.severity,
            level=d.level,
            n_examples=len(d.images),
        )
        for d in distributions
    ]
    result = RunResult(
        config=config,
        provenance=Provenance(
            config_hash=config.config_hash(),
            seed=config.seed,
            packages=package_versions(config),
            pruners={} if external else {name: PrunerIdentity(**pruner_identity(name)) for name in config.pruners},
            calibration_indices=[] if external else calibration_indices(config, data),
            data_checksum=data.checksum,
            distribution_checksums=testsets,
            platform=f"{platform.platform()} ({config.threads} threads per job, executor {executor_name})",
            git_commit=git_commit(),
            created_at=datetime.now(timezone.utc),
            wall_time_s=wall_time_s,
            **device_description(resolve_device(device)),
        ),
        distributions=described,
        networks=cells,
        metric="miou" if data.task == "segmentation" else "top1",
    )
    # a result the readers would reject is an error here, never a file written
    return save_result(result, path, {config.dataset: dataset_spec(config.dataset).max_test_examples})

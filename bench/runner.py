"""The benchmark pipeline: parent (cached) -> cascade prune/retrain -> evaluate everywhere."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import platform
import subprocess
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from bench import registry
from bench.data import DataBundle, load_dataset
from bench.metrics import derive
from bench.models import create_model
from bench.pruning import PruneContext, Pruner, classifier_name, count_nonzero, current_masks, prune_to_ratio
from bench.results import save_result
from bench.schema import PARENT, Distribution, NetworkResult, Provenance, RunConfig, RunResult, pack_hits
from bench.suite import Suite, TestDistribution
from bench.training import correct_predictions, train

log = logging.getLogger("bench")
NOMINAL = "nominal"


def load_pruner(name: str) -> Pruner:
    cls = registry.load(registry.PRUNER_GROUP, name)
    pruner = cls()
    if not isinstance(pruner, Pruner):
        raise registry.RegistryError(f"pruner {name!r} ({cls!r}) does not subclass bench.pruning.Pruner")
    return pruner


def load_suite(name: str) -> Suite:
    suite = registry.load(registry.SUITE_GROUP, name)()
    if not isinstance(suite, Suite):
        raise registry.RegistryError(f"suite {name!r} does not subclass bench.suite.Suite")
    return suite


def package_versions(config: RunConfig) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("prunebench", "torch", "torchvision", "timm", "numpy", "pydantic", "scikit-learn"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    for group, names in ((registry.PRUNER_GROUP, config.pruners), (registry.SUITE_GROUP, config.suites)):
        for name in names:
            dist, dist_version = registry.distribution_of(group, name)
            versions.setdefault(dist, dist_version)
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def parent_cache_path(config: RunConfig, data: DataBundle, cache_dir: Path) -> Path:
    """Content address of a parent: everything that determines its weights."""
    spec = {
        "dataset": config.dataset,
        "data": data.checksum,
        "model": config.model,
        "train": config.train.model_dump(mode="json"),
        "seed": config.seed,
        "channels_last": config.channels_last,
        "torch": torch.__version__,
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / "parents" / f"{config.dataset}-{config.model}-s{config.seed}-{key}.pt"


def trained_parent(config: RunConfig, data: DataBundle, cache_dir: Path, progress: bool) -> nn.Module:
    """Train the unpruned parent, or load it when the same (data, model, recipe, seed) was trained."""
    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=data.num_classes, in_chans=data.train.images.shape[1])
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    path = parent_cache_path(config, data, cache_dir)
    if path.exists():
        log.info("parent: loaded from cache %s", path)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    train(model, data, config.train, config.seed, desc=f"parent {config.model}", progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model


def test_distributions(config: RunConfig, data: DataBundle) -> list[TestDistribution]:
    suites = [load_suite(name) for name in config.suites]
    for suite in suites:
        suite.check_dataset(data.name)
    clean = TestDistribution(name=f"{data.name}/clean", suite=NOMINAL, images=data.test)
    return [clean] + [d for suite in suites for d in suite.distributions(data, config.seed)]


def evaluate(model: nn.Module, data: DataBundle, distributions: list[TestDistribution]) -> dict[str, torch.Tensor]:
    """Per-example top-1 correctness on every distribution."""
    return {d.name: correct_predictions(model, data, d.images) for d in distributions}


def network_record(
    model: nn.Module,
    pruner: str,
    step: int,
    target: float,
    parent_nonzero: int,
    structured: bool,
    data: DataBundle,
    distributions: list[TestDistribution],
) -> NetworkResult:
    nonzero = count_nonzero(model)
    hits = evaluate(model, data, distributions)
    return NetworkResult(
        pruner=pruner,
        step=step,
        target_ratio=target,
        prune_ratio=1.0 - nonzero / parent_nonzero,
        nonzero_params=nonzero,
        structured=structured,
        accuracy={name: float(h.double().mean()) for name, h in hits.items()},
        hits={name: pack_hits(h.numpy()) for name, h in hits.items()},
    )


def cascade(
    parent: nn.Module,
    pruner: Pruner,
    config: RunConfig,
    data: DataBundle,
    distributions: list[TestDistribution],
    progress: bool,
) -> list[NetworkResult]:
    """Prune -> retrain (masks fixed) -> evaluate at each target ratio, each step from the last."""
    model = copy.deepcopy(parent)
    parent_nonzero = count_nonzero(parent)
    ctx = PruneContext(
        calibration=data.normalize(data.val.images[: config.calibration_size]),
        seed=config.seed,
        classifier=classifier_name(model),
    )
    records = []
    steps = tqdm(config.target_ratios, desc=f"{pruner.name} cascade", unit="ratio", disable=not progress)
    for step, target in enumerate(steps, start=1):
        outcome = prune_to_ratio(model, pruner, target, parent_nonzero, ctx)
        steps.set_postfix(target=f"{target:.3f}", achieved=f"{outcome.prune_ratio:.3f}")
        masks = current_masks(model)
        train(model, data, config.retrain, config.seed + step, masks=masks, desc=f"retrain {pruner.name}", progress=progress)
        records.append(network_record(model, pruner.name, step, target, parent_nonzero, pruner.structured, data, distributions))
    return records


def result_path(config: RunConfig, out_dir: Path) -> Path:
    return out_dir / f"{config.dataset}-{config.model}-s{config.seed}-{config.config_hash()[:12]}.json"


def run(config: RunConfig, out_dir: Path, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Run the whole benchmark for one config and write its validated result file."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / ".cache"
    pruners = [load_pruner(name) for name in config.pruners]  # fail fast on unknown names
    data = load_dataset(config.dataset, config.seed)
    distributions = test_distributions(config, data)
    parent = trained_parent(config, data, cache_dir, progress)
    parent_nonzero = count_nonzero(parent)
    networks = [network_record(parent, PARENT, 0, 0.0, parent_nonzero, False, data, distributions)]
    for pruner in pruners:
        networks += cascade(parent, pruner, config, data, distributions, progress)
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
            data_checksum=data.checksum,
            distribution_checksums={d.name: d.images.checksum for d in distributions},
            platform=f"{platform.platform()} ({torch.get_num_threads()} threads)",
            git_commit=git_commit(),
            created_at=datetime.now(timezone.utc),
            wall_time_s=time.perf_counter() - started,
        ),
        distributions=described,
        networks=networks,
        derived=derive(described, networks, config.delta),
    )
    return save_result(result, result_path(config, out_dir))

"""Run configurations with their dataset's defaults: the one place `bench run` and the Python API get them.

    from bench.pipeline.config import default_config
    from bench.pipeline.runner import run

    run(default_config(pruners=("pfp",), seed=1), out_dir="results")   # what `bench run --pruner pfp --seed 1` does
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # torch-free at import: `bench --help` imports this module
    from bench.results.schema import RunConfig

__all__ = ["DEFAULT_GRID", "DEFAULT_PRUNERS", "choose_dataset", "default_config", "file_sha256", "ratio_grid",
           "set_hub_policy"]

DEFAULT_PRUNERS = ("wt", "ft", "sipp", "pfp")
DEFAULT_GRID: tuple[Literal["geom", "lin"], float, float, int] = ("geom", 0.3, 0.95, 6)
FALLBACK_DATASET = "digits"


def ratio_grid(kind: Literal["geom", "lin"], low: float, high: float, count: int) -> tuple[float, ...]:
    """Target prune ratios from `low` to `high`: "geom" spaces the keep ratios 1 - r geometrically
    (as the paper does), "lin" the ratios linearly; rounded to 4 digits."""
    if not (0 < low < high < 1 and count >= 1) or kind not in ("geom", "lin"):
        raise ValueError(f"bad ratio grid {kind}:{low}:{high}:{count}: need 0 < LOW < HIGH < 1, N >= 1")
    if kind == "geom":
        return tuple(round(1 - float(k), 4) for k in np.geomspace(1 - low, 1 - high, count))
    return tuple(round(float(r), 4) for r in np.linspace(low, high, count))


def file_sha256(path: Path, what: str = "file") -> str:
    """sha256 of a file's bytes; an unreadable file is a one-line ValueError naming it."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot read ({exc.strerror or exc})") from exc
    return digest.hexdigest()


def choose_dataset(dataset: str | None, suites: tuple[str, ...] | None) -> str:
    """`dataset`, else the one dataset the chosen suites are defined for, else digits."""
    if dataset is not None or not suites:
        return dataset or FALLBACK_DATASET
    from bench.core import registry
    from bench.data.suite import Suite

    needed = {datasets for name in suites
              if (datasets := registry.load_class(registry.SUITE_GROUP, name, Suite).datasets) is not None}
    if len(needed) > 1:
        raise ValueError(f"suites {', '.join(suites)} need different datasets ({sorted(needed)}); run them separately")
    return needed.pop()[0] if needed else FALLBACK_DATASET


def default_config(
    *,
    dataset: str | None = None,
    model: str | None = None,
    pruners: tuple[str, ...] = DEFAULT_PRUNERS,
    suites: tuple[str, ...] | None = None,
    target_ratios: tuple[float, ...] | None = None,
    epochs: int | None = None,
    retrain_epochs: int | None = None,
    train_corruptions: tuple[str, ...] = (),
    seed: int = 0,
    parent_checkpoint: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> RunConfig:
    """A RunConfig whose unset parts come from the dataset's registered spec (bench.data.dataset_spec): model,
    suites, recipes (epochs overridable) and the Mix-training corruption table. `settings` are
    the remaining RunConfig fields (seed, delta, threads, ...). `pruners`: labels, ``name`` or
    ``name:key=value,...``, stored in canonical form (bench.pruning.canonical_pruner_label).

    `parent_checkpoint`: a trained parent's file (state dict or safetensors); the config records its
    sha256, and the parent is fine-tuned for `epochs` (default 0: used as is). Pass the same path to
    bench.pipeline.runner.run, which checks it against the model and reads it."""
    from bench.data import dataset_spec
    from bench.pruning import canonical_pruner_label
    from bench.results.schema import EXTERNAL, RunConfig

    if settings.get("protocol") != EXTERNAL:  # `bench eval`'s methods are names, not installed pruners
        pruners = tuple(canonical_pruner_label(label) for label in pruners)  # options checked, defaults dropped
    if parent_checkpoint is not None:
        settings["parent_checkpoint_sha256"] = file_sha256(Path(parent_checkpoint), "parent checkpoint")
        epochs = 0 if epochs is None else epochs
    dataset = choose_dataset(dataset, suites)
    spec = dataset_spec(dataset)
    train, retrain = spec.train, spec.retrain
    if epochs is not None:  # model_validate, not model_copy: a bad value must fail here
        train = type(train).model_validate({**train.model_dump(), "epochs": epochs})
    if retrain_epochs is not None:
        retrain = type(retrain).model_validate({**retrain.model_dump(), "epochs": retrain_epochs})
    if train_corruptions:
        mix = {"corruption_mix": train_corruptions, "corruption_table": spec.mix_table}
        train, retrain = train.model_copy(update=mix), retrain.model_copy(update=mix)
    return RunConfig(
        dataset=dataset,
        model=model or spec.default_model,
        pruners=pruners,
        suites=suites if suites is not None else spec.default_suites,
        target_ratios=target_ratios if target_ratios is not None else ratio_grid(*(spec.ratio_grid or DEFAULT_GRID)),
        train=train,
        retrain=retrain,
        seed=seed,
        **settings,
    )


def set_hub_policy(pretrained: bool) -> None:
    """The one offline policy: the Hugging Face hub is offline (HF_HUB_OFFLINE=1, unless the user set
    it) except for runs that ask for pretrained weights, so nothing hangs on hub retries without
    network. Called by the CLI (before any command, torch-free) and by every job (workers inherit or
    receive the variable)."""
    if not pretrained:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")

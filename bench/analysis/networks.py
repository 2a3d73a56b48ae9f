"""The networks an analysis compares: a finished run's parent and cascade steps, read back from its
job store, and its control parent (an independently trained parent: same data split and recipe,
another init and data-order seed), a parent job of the store like the run's own
(`bench.pipeline.jobs.run_control_job`), trained on first use and read back after."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from bench.data import DataBundle
from bench.pipeline.jobs import Store, control_config, new_model, open_run, run_control_job
from bench.pipeline.specs import CONTROL_SEED_OFFSET, parent_spec
from bench.results.schema import PARENT, RunConfig, RunResult

__all__ = [
    "CONTROL",
    "CONTROL_KIND",
    "CONTROL_SEED_OFFSET",
    "AnalysisNetwork",
    "RunNetworks",
    "check_parent_first",
    "control_network",
    "control_spec",
    "load_run_networks",
]

CONTROL = "control"  # pruner name of the independently trained parent
CONTROL_KIND = "parents"  # store folder of control networks: they are parent jobs


@dataclass(frozen=True)
class AnalysisNetwork:
    label: str
    pruner: str  # PARENT, a pruner name, or CONTROL
    step: int
    prune_ratio: float
    model: nn.Module


@dataclass(frozen=True)
class RunNetworks:
    """A result file's data and networks, parent first and the control (if any) last."""

    result: RunResult
    data: DataBundle
    networks: list[AnalysisNetwork]


def control_spec(config: RunConfig, data_checksum: str) -> dict[str, object]:
    """The job spec of a run's control: the parent spec of `control_config` on the run's data."""
    return parent_spec(control_config(config), data_checksum)


def control_network(store: Store, config: RunConfig, data: DataBundle, progress: bool = False,
                    device: str = "cpu") -> nn.Module:
    """The parent's recipe on the same split with another seed, on `device`; trained once (there: its
    type is part of the job key off the CPU), then read from the store."""
    key = run_control_job(config.model_dump_json(), str(store.root), data.checksum, progress, device=device)
    return store.load_weights(CONTROL_KIND, key, new_model(control_config(config), data, device=device))


def load_run_networks(
    result: RunResult | Path, cache_dir: Path | None = None, *, control: bool = True, progress: bool = False,
    device: str = "cpu",
) -> RunNetworks:
    """Every network of a result file from its store (default: `<result folder>/.cache`), on `device`."""
    run = open_run(result, cache_dir)
    networks = [AnalysisNetwork(run.label(ref), ref.pruner, ref.step, run.prune_ratio(ref), run.load(ref).to(device))
                for ref in run.refs()]
    if control:
        control_model = control_network(run.store, run.result.config, run.data, progress, device)
        networks.append(AnalysisNetwork(CONTROL, CONTROL, 0, 0.0, control_model))
    return RunNetworks(run.result, run.data, networks)


def check_parent_first(networks: Sequence[AnalysisNetwork]) -> None:
    """Every analysis compares with the first network: it must be the run's parent."""
    if not networks or networks[0].pruner != PARENT:
        raise ValueError("the first network must be the unpruned parent")

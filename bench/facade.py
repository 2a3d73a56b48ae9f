"""The Python entry points for notebooks and scripts: evaluate in-memory networks, load the data a
network must be trained on, load any network of a result file (a model zoo of the board).

Exported from the package (``bench.evaluate``, ``bench.load_dataset``, ``bench.load_network``), as
RobustBench's ``benchmark(model)`` and ``load_model``. :func:`evaluate` is ``bench eval`` on
modules instead of files: the same checks, the same test sets, the same result object.

    >>> import bench
    >>> data = bench.load_dataset("digits", seed=0)  # train your parent on data.train, data.normalize
    >>> result = bench.evaluate(parent, {"mine": [net_50, net_80]}, dataset="digits")
    >>> bench.potentials(result)["mine"].nominal_potential
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from bench.data import DataBundle
    from bench.results.schema import PrunerMetrics, RunResult

__all__ = ["evaluate", "load_dataset", "load_network", "potentials"]


def load_dataset(name: str = "digits", seed: int = 0) -> DataBundle:
    """The exact data of dataset `name` for `seed`, as `bench run` and `bench eval` use it.

    ``.train`` / ``.val`` / ``.test``: uint8 (N, C, H, W) images with their labels (``.images``,
    ``.labels``), the train/validation split drawn with `seed` (the test split is fixed);
    ``.normalize(images)``: the float32 input every network sees (the dataset's channel mean and
    std); ``.num_classes``. A network evaluated with ``seed=S`` should be trained on
    ``load_dataset(name, S).train`` through ``normalize``, with no other preprocessing."""
    from bench.data import load_dataset as load_registered

    return load_registered(name, seed)


def _plain_state(module: nn.Module) -> dict[str, Any]:
    """The module's state dict with torch.nn.utils.prune's reparametrisation folded in, as
    ``prune.remove`` folds it (``X = X_orig * X_mask``), without changing the module: a network
    pruned in place can be passed as it is."""
    from torch.nn.utils import prune

    state = module.state_dict()
    if not prune.is_pruned(module):  # looks at every submodule
        return state
    plain = {}
    for name, tensor in state.items():
        base = name.removesuffix("_orig")
        if name.endswith("_orig") and f"{base}_mask" in state:
            plain[base] = (tensor * state[f"{base}_mask"]).detach()
        elif not (name.endswith("_mask") and f"{name.removesuffix('_mask')}_orig" in state):
            plain[name] = tensor
    return plain


def _as_list(networks: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    from torch import nn

    return [networks] if isinstance(networks, nn.Module) else list(networks)


def evaluate(
    parent: nn.Module,
    networks: Mapping[str, nn.Module | Sequence[nn.Module]],
    dataset: str = "digits",
    suites: Sequence[str] | None = None,
    *,
    model: str | None = None,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    workers: int = 1,
    device: str = "cpu",
    progress: bool = True,
    **settings: Any,
) -> RunResult:
    """Evaluate `parent` and the pruned `networks` ({method: module or modules}) on `dataset`'s
    clean test set and `suites` (default: the dataset's); returns the validated result (accuracies
    and per-example hits in ``.networks``; :func:`potentials` gives the prune potentials).

    Every module must be an instance of `model` (default: the dataset's model, e.g. digits_cnn)
    trained on :func:`load_dataset` (`dataset`, `seed`); a module pruned with
    torch.nn.utils.prune may be passed as it is. Prune ratios are measured from the weights.
    Nothing is written unless `out` names a folder: the result file and its networks go there (as
    ``bench eval --out``), with the job cache in ``out/.cache``. `settings`: other ``bench eval``
    settings (delta, corruptions, severities, threads, precision, ...)."""
    import torch

    from bench.pipeline.executors import LocalExecutor
    from bench.pipeline.external import evaluate_networks, external_config
    from bench.results import load_result

    if not networks:
        raise ValueError("bench.evaluate needs at least one pruned network: {'method': [module, ...]}")
    with tempfile.TemporaryDirectory(prefix="prunebench-") as scratch:
        folder = Path(scratch)
        parent_path = folder / "parent.pt"
        torch.save(_plain_state(parent), parent_path)
        files: list[tuple[str, Path]] = []
        for method, modules in networks.items():
            for index, module in enumerate(_as_list(modules)):
                path = folder / f"{method}-{index}.pt"
                torch.save(_plain_state(module), path)
                files.append((method, path))
        config = external_config(parent_path, files, dataset=dataset, model=model,
                                 suites=tuple(suites) if suites is not None else None, seed=seed, **settings)
        out_dir = Path(out) if out is not None else folder / "result"
        cache = None if out is not None else folder / "cache"
        with closing(LocalExecutor(workers, progress)) as executor:
            path = evaluate_networks(config, parent_path, files, out_dir, cache_dir=cache, progress=progress,
                                     executor=executor, device=device)
        return load_result(path)


def load_network(result_file: str | os.PathLike[str], pruner: str, step: int | None = None,
                 networks: str | os.PathLike[str] | None = None) -> nn.Module:
    """A network saved with a result file (every network on the board), checked against its
    recorded sha256: `pruner`'s cascade step `step` (1 = first ratio; default: the last), or the
    parent (``pruner="parent"``). `networks`: the folder of the network files (default: the one
    `bench run` wrote beside the result). Returns the module in eval mode on the CPU; a
    ``bench eval`` network saved as a torch.export archive comes back as its exported module."""
    from bench.pipeline.exported import read_exported
    from bench.pipeline.jobs import load_checked_dataset, new_model
    from bench.results import load_result, networks_folder
    from bench.results.checkpoints import load_state
    from bench.results.schema import PARENT

    path = Path(result_file)
    result = load_result(path)
    steps = sorted((n for n in result.networks if n.pruner == pruner), key=lambda n: n.step)
    if not steps:
        found = sorted({n.pruner for n in result.networks})
        raise ValueError(f"{path}: no network of pruner {pruner!r} (found: {', '.join(found)})")
    chosen = steps[-1] if step is None or pruner == PARENT else next((n for n in steps if n.step == step), None)
    if chosen is None:
        raise ValueError(f"{path}: pruner {pruner!r} has steps {[n.step for n in steps]}, not {step}")
    if chosen.file is None:
        raise ValueError(f"{path}: no network file is recorded for {pruner} step {chosen.step} (schema version 1)")
    file = Path(networks) if networks is not None else networks_folder(path)
    file = file / chosen.file.name
    if file.name.endswith(".pt2"):
        from bench.results.checkpoints import checked_bytes

        return read_exported(checked_bytes(file, chosen.file.sha256), str(file)).eval()
    data = load_checked_dataset(result.config, result.provenance.data_checksum)
    model = new_model(result.config, data)  # as the run evaluated it (memory format included)
    return load_state(model, file, chosen.file.sha256).eval()


def potentials(result: RunResult) -> dict[str, PrunerMetrics]:
    """Method -> its nominal and robust prune potentials, excess errors and per-distribution P,
    recomputed from the result's accuracies (bench.results.metrics.derive, as the board does)."""
    from bench.results.metrics import derive

    return {m.pruner: m for m in derive(result.distributions, result.networks, result.config.delta).pruners}

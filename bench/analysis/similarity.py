"""Functional similarity under noise (Lost in Pruning, §5): every network sees the same noisy copies
of the test images (uniform U(−ε, ε) in pixel space, `NOISE_MODEL`); per (network, ε) the label
agreement with the parent, the mean softmax ℓ2 distance to the parent and the accuracy, and per
(pruner, ε) the noise prune potential."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bench.analysis.networks import CONTROL, AnalysisNetwork, check_parent_first, load_run_networks
from bench.analysis.reports import NoisePotential, SimilarityCell, SimilarityReport
from bench.core.devices import float64_device, module_device, resolve_device
from bench.core.io import seed_for
from bench.data import DataBundle, ImageSet
from bench.pipeline.jobs import job_environment
from bench.pipeline.training import resident
from bench.results.metrics import prune_potential
from bench.results.schema import PARENT, RunResult

__all__ = [
    "DEFAULT_DRAWS",
    "DEFAULT_EPSILONS",
    "draw_seed",
    "functional_similarity",
    "noise_potentials",
    "noisy_inputs",
    "similarity_analysis",
]

DEFAULT_EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
DEFAULT_DRAWS = 20


def draw_seed(seed: int, epsilon_index: int, draw: int) -> int:
    """The noise seed of one (noise level, draw) of the similarity analysis."""
    return seed_for(seed, "similarity", epsilon_index, draw)


def noisy_inputs(images: torch.Tensor, epsilon: float, generator: torch.Generator, data: DataBundle) -> torch.Tensor:
    """uint8 batch -> standardised float batch with pixel-space uniform noise (see NOISE_MODEL), on the
    images' device; the noise is drawn by the CPU `generator` (the same draws on every device)."""
    pixels = images.float().div_(255.0)
    if epsilon > 0:
        noise = torch.rand(pixels.shape, generator=generator).mul_(2.0).sub_(1.0).mul_(epsilon)
        pixels.add_(noise.to(pixels.device)).clamp_(0.0, 1.0)
    mean = torch.tensor(data.mean, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    return (pixels - mean) / std


@dataclass
class _Tally:
    """Running sums over (image, draw) pairs for one ε: memory independent of the number of draws."""

    agree: np.ndarray
    distance: np.ndarray
    correct: np.ndarray
    count: int = 0

    @classmethod
    def empty(cls, n: int) -> _Tally:
        return cls(np.zeros(n, np.int64), np.zeros(n, np.float64), np.zeros(n, np.int64))

    @torch.inference_mode()
    def add(self, models: Sequence[nn.Module], inputs: torch.Tensor, labels: torch.Tensor) -> None:
        parent_probs = parent_top1 = None
        for i, model in enumerate(models):
            logits = model(inputs)
            probs, top1 = logits.softmax(1), logits.argmax(1)
            if parent_probs is None:
                parent_probs, parent_top1 = probs, top1
            self.agree[i] += int((top1 == parent_top1).sum())
            distances = (probs - parent_probs).norm(dim=1)
            self.distance[i] += float(distances.to(float64_device(distances.device)).double().sum())
            self.correct[i] += int((top1 == labels).sum())
        self.count += len(labels)


def functional_similarity(
    networks: Sequence[AnalysisNetwork],
    data: DataBundle,
    images: ImageSet,
    *,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    delta: float = 0.005,
    batch_size: int = 256,
    config_hash: str = "",
    progress: bool = False,
) -> SimilarityReport:
    """Stream ε → draw → image batch; each noisy batch goes through every network, then is dropped.

    The noise of draw d at ε index i comes from one generator seeded with (seed, i, d), consumed
    batch after batch, so it does not depend on the batch size. Runs on the networks' device (the
    images uploaded once, bench.pipeline.training.resident); the report records its type.
    """
    check_parent_first(networks)
    if draws < 1 or any(not 0.0 <= e <= 1.0 for e in epsilons):
        raise ValueError("need draws >= 1 and every ε in [0, 1]")
    for net in networks:
        net.model.eval()
    models = [net.model for net in networks]
    device = module_device(models[0])
    images = resident(images, device)
    tallies = []
    passes = [(i, e, d) for i, e in enumerate(epsilons) for d in range(draws if e > 0 else 1)]
    tally, current = _Tally.empty(len(networks)), 0
    for i, epsilon, draw in tqdm(passes, desc="noise draws", disable=not progress, leave=False):
        if i != current:
            tallies.append(tally)
            tally, current = _Tally.empty(len(networks)), i
        generator = torch.Generator().manual_seed(draw_seed(seed, i, draw))
        for batch, labels in zip(images.images.split(batch_size), images.labels.split(batch_size)):
            tally.add(models, noisy_inputs(batch.to(device), epsilon, generator, data), labels.to(device))
    tallies.append(tally)
    cells = [
        SimilarityCell(
            network=net.label, pruner=net.pruner, step=net.step, prune_ratio=net.prune_ratio, epsilon=float(epsilon),
            agreement=t.agree[k] / t.count, softmax_l2=t.distance[k] / t.count, accuracy=t.correct[k] / t.count,
        )
        for epsilon, t in zip(epsilons, tallies)
        for k, net in enumerate(networks)
    ]
    return SimilarityReport(
        config_hash=config_hash, epsilons=tuple(float(e) for e in epsilons), draws=draws, n_images=len(images),
        seed=seed, delta=delta, device=device.type, networks=[n.label for n in networks], cells=cells,
        potentials=noise_potentials(cells, delta),
    )


def noise_potentials(cells: Sequence[SimilarityCell], delta: float) -> list[NoisePotential]:
    """Per (pruner, ε): the largest prune ratio with noisy accuracy ≥ the parent's noisy accuracy − δ."""
    pruners = list(dict.fromkeys(c.pruner for c in cells if c.pruner not in (PARENT, CONTROL)))
    potentials = []
    for epsilon in dict.fromkeys(c.epsilon for c in cells):
        at = [c for c in cells if c.epsilon == epsilon]
        parent = next(c for c in at if c.pruner == PARENT)
        for pruner in pruners:
            steps = [c for c in at if c.pruner == pruner]
            value = prune_potential([c.prune_ratio for c in steps], [1.0 - c.accuracy for c in steps],
                                    1.0 - parent.accuracy, delta)
            potentials.append(NoisePotential(pruner=pruner, epsilon=epsilon, potential=value))
    return potentials


def similarity_analysis(
    result: RunResult | Path,
    cache_dir: Path | None = None,
    *,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    draws: int = DEFAULT_DRAWS,
    n_images: int | None = None,
    seed: int | None = None,
    batch_size: int = 256,
    control: bool = True,
    progress: bool = False,
    device: str = "cpu",
) -> SimilarityReport:
    """`bench analyze similarity`: the first `n_images` test images (all by default), seed = the run's,
    on `device` (a `--device` value)."""
    device = str(resolve_device(device))
    run = load_run_networks(result, cache_dir, control=control, progress=progress, device=device)
    config = run.result.config
    test = run.data.test if n_images is None else run.data.test.subset(torch.arange(min(n_images, len(run.data.test))))
    with job_environment(config, device, autotune=False):
        return functional_similarity(
            run.networks, run.data, test, epsilons=epsilons, draws=draws,
            seed=config.seed if seed is None else seed, delta=config.delta, batch_size=batch_size,
            config_hash=config.config_hash(), progress=progress,
        )

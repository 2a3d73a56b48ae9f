"""Beyond test accuracy: how similar pruned networks stay to their parent (Lost in Pruning, §5).

Two analyses of the networks of one `bench run`, read back from its store:

* functional similarity under noise: every network sees the same noisy copies of the test images
  (uniform U(−ε, ε) in pixel space); per (network, ε) the label agreement with the parent, the mean
  softmax ℓ2 distance to the parent and the accuracy, and per (pruner, ε) the noise prune potential;
* informative features: each network's 10 % most informative pixels per image, and every network's
  confidence in the true class when only those pixels are kept.

Both also run an independently trained parent ("control": same data split and recipe, another
init and data-order seed), cached in the store under kind "controls". Each writes a validated
report (`SimilarityReport`, `FeatureReport`; by default `<result folder>/analysis/<result
stem>.similarity.json` / `.features.json`), from which `bench plot` draws its figures.

Pixel selection. One-shot gradient saliency (|x·∇| of the predicted logit on the full image,
`saliency="gradient"`) does not find pixels that inform the network itself: once 90 % of the image
is set to the mean colour the network relies on other pixels, and on digits a network kept only
~16 % true-class confidence on its own top-10 % pixels, less than on some pruned network's. The
default is therefore a batched backward selection (SIS-like, re-linearised each round, then a
swap refinement accepted only where the network's own score rises) of the pixels that keep the
network's true-class log-softmax, with the masking the matrix uses (pixels set to 0 in normalised
space). The search is local, so on ~20-35 % of the images a near-identical network's result (the
parent's for a mildly pruned network, and the other way round) scores higher for the network
than its own; with `multistart` (default) each network keeps, per image, the best of all
networks' search results for itself, scored on the very forward passes the matrix is built from.
Hence, for the true class (the default target), every column of the matrix has its maximum on
the diagonal, exactly.

Rows carry no such guarantee: a row compares different networks' confidences on the same pixels,
and a network with the same decisions but sharper logits (e.g. a mildly pruned network that got
one more epoch of training) is more confident on any pixels it classifies right. Over 15 briefly
trained digits runs (wt at 50 % and 90 %, 200 images) the parent's own confidence exceeded the
90 %-pruned network's and the control's on the parent's pixels by >= 37 points every time, but the
50 %-pruned network's only in 11 runs (by -4.8 to +23 points); a stronger search raises both.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import model_validator
from torch import nn
from tqdm.auto import tqdm

from bench.data import DataBundle, ImageSet
from bench.figures import save_figure, text
from bench.jobs import (
    JOB_VERSION,
    Store,
    job_environment,
    new_model,
    open_run,
    parent_spec,
    spec_key,
)
from bench.markdown import escape, table
from bench.metrics import prune_potential
from bench.pruning import count_nonzero
from bench.io import atomic_write_text
from bench.results import ANALYSIS_REPORT_SUFFIXES
from bench.schema import PARENT, RunConfig, RunResult, Strict
from bench.training import train

CONTROL = "control"  # pruner name of the independently trained parent
CONTROL_KIND = "controls"  # store folder of control networks
CONTROL_SEED_OFFSET = 1000
DEFAULT_EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
DEFAULT_DRAWS = 20
DEFAULT_FEATURE_IMAGES = 200
DEFAULT_KEEP_FRACTION = 0.1
NOISE_MODEL = (
    "uniform U(-eps, eps) i.i.d. per pixel and channel, added in pixel space [0, 1] (uint8 / 255), "
    "clipped to [0, 1], not quantised, then standardised like every input"
)
MASK_VALUE = "0 in normalised space (the train split's mean colour), all channels of a pixel jointly"
Saliency = Literal["backward", "gradient"]
Target = Literal["true", "predicted"]  # the class whose confidence a network's pixel selection keeps
Analysis = Literal["similarity", "features"]
REPORTS_FOLDER = "analysis"  # default home of a run's reports, inside its result file's folder


# ---- the networks of a run ---------------------------------------------------------------------


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
    return {
        "job": "control",
        "version": JOB_VERSION,
        "parent": parent_spec(config, data_checksum),
        "seed": config.seed + CONTROL_SEED_OFFSET,
    }


def control_network(store: Store, config: RunConfig, data: DataBundle, progress: bool = False) -> nn.Module:
    """The parent's recipe on the same split with another seed; trained once, then read from the store."""
    key = spec_key(control_spec(config, data.checksum))
    seed = config.seed + CONTROL_SEED_OFFSET
    model = new_model(config.model_copy(update={"seed": seed}), data)
    if store.done(CONTROL_KIND, key):
        return store.load_weights(CONTROL_KIND, key, model)
    with job_environment(config):
        train(model, data, config.train, seed, desc="control parent", progress=progress)
    store.save_network(CONTROL_KIND, key, model, {"seed": seed, "nonzero_params": count_nonzero(model)})
    return model.eval()


def load_run_networks(
    result: RunResult | Path, cache_dir: Path | None = None, *, control: bool = True, progress: bool = False
) -> RunNetworks:
    """Every network of a result file from its store (default: `<result folder>/.cache`)."""
    run = open_run(result, cache_dir)
    networks = [AnalysisNetwork(run.label(ref), ref.pruner, ref.step, run.prune_ratio(ref), run.load(ref))
                for ref in run.refs()]
    if control:
        control_model = control_network(run.store, run.result.config, run.data, progress)
        networks.append(AnalysisNetwork(CONTROL, CONTROL, 0, 0.0, control_model))
    return RunNetworks(run.result, run.data, networks)


def _check_parent_first(networks: Sequence[AnalysisNetwork]) -> None:
    if not networks or networks[0].pruner != PARENT:
        raise ValueError("the first network must be the unpruned parent")


# ---- functional similarity under noise -----------------------------------------------------------


class SimilarityCell(Strict):
    network: str
    pruner: str
    step: int
    prune_ratio: float
    epsilon: float
    agreement: float  # fraction of (image, draw) pairs with the parent's top-1 on the same noisy input
    softmax_l2: float  # mean ‖softmax − parent's softmax‖₂ on the same noisy input
    accuracy: float


class NoisePotential(Strict):
    pruner: str
    epsilon: float
    potential: float


class SimilarityReport(Strict):
    analysis: Literal["similarity"] = "similarity"
    config_hash: str
    noise: str = NOISE_MODEL
    epsilons: tuple[float, ...]
    draws: int  # per image and ε > 0 (ε = 0 needs a single pass)
    n_images: int
    seed: int
    delta: float
    networks: list[str]
    cells: list[SimilarityCell]
    potentials: list[NoisePotential]

    def cell(self, network: str, epsilon: float) -> SimilarityCell:
        return next(c for c in self.cells if c.network == network and c.epsilon == epsilon)

    @model_validator(mode="after")
    def _consistent(self) -> SimilarityReport:
        grid = [(c.network, c.epsilon) for c in self.cells]
        if sorted(grid) != sorted((n, e) for n in self.networks for e in self.epsilons) or len(set(grid)) != len(grid):
            raise ValueError("cells must hold exactly one (network, ε) pair per network and ε")
        if not self.cells or self.cell(self.networks[0], self.epsilons[0]).pruner != PARENT:
            raise ValueError("the first network must be the unpruned parent")
        for c in self.cells:
            if not (0.0 <= c.agreement <= 1.0 and 0.0 <= c.accuracy <= 1.0 and 0.0 <= c.softmax_l2 <= 2**0.5 + 1e-9):
                raise ValueError(f"{c.network} at ε={c.epsilon}: agreement, accuracy or distance out of range")
        return self


def draw_seed(seed: int, epsilon_index: int, draw: int) -> int:
    digest = hashlib.sha256(f"similarity/{seed}/{epsilon_index}/{draw}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def noisy_inputs(images: torch.Tensor, epsilon: float, generator: torch.Generator, data: DataBundle) -> torch.Tensor:
    """uint8 batch -> standardised float batch with pixel-space uniform noise (see NOISE_MODEL)."""
    pixels = images.float().div_(255.0)
    if epsilon > 0:
        noise = torch.rand(pixels.shape, generator=generator).mul_(2.0).sub_(1.0).mul_(epsilon)
        pixels.add_(noise).clamp_(0.0, 1.0)
    mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
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
            self.distance[i] += float((probs - parent_probs).norm(dim=1).double().sum())
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
    batch after batch, so it does not depend on the batch size.
    """
    _check_parent_first(networks)
    if draws < 1 or any(not 0.0 <= e <= 1.0 for e in epsilons):
        raise ValueError("need draws >= 1 and every ε in [0, 1]")
    for net in networks:
        net.model.eval()
    models = [net.model for net in networks]
    tallies = []
    passes = [(i, e, d) for i, e in enumerate(epsilons) for d in range(draws if e > 0 else 1)]
    tally, current = _Tally.empty(len(networks)), 0
    for i, epsilon, draw in tqdm(passes, desc="noise draws", disable=not progress, leave=False):
        if i != current:
            tallies.append(tally)
            tally, current = _Tally.empty(len(networks)), i
        generator = torch.Generator().manual_seed(draw_seed(seed, i, draw))
        for batch, labels in zip(images.images.split(batch_size), images.labels.split(batch_size)):
            tally.add(models, noisy_inputs(batch, epsilon, generator, data), labels)
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
        seed=seed, delta=delta, networks=[n.label for n in networks], cells=cells,
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
) -> SimilarityReport:
    """`bench analyze similarity`: the first `n_images` test images (all by default), seed = the run's."""
    run = load_run_networks(result, cache_dir, control=control, progress=progress)
    config = run.result.config
    test = run.data.test if n_images is None else run.data.test.subset(torch.arange(min(n_images, len(run.data.test))))
    with job_environment(config):
        return functional_similarity(
            run.networks, run.data, test, epsilons=epsilons, draws=draws,
            seed=config.seed if seed is None else seed, delta=config.delta, batch_size=batch_size,
            config_hash=config.config_hash(), progress=progress,
        )


def similarity_table(report: SimilarityReport) -> str:
    """Markdown: agreement, softmax ℓ2 and accuracy per (network, ε), then the noise P per (pruner, ε)."""
    headers = ["network", *(f"ε={e:g}" for e in report.epsilons)]

    def block(title: str, value: str) -> list[str]:
        rows = [[escape(name), *(_fmt(report.cell(name, e), value) for e in report.epsilons)]
                for name in report.networks]
        return [f"### {title}", "", table(rows, headers), ""]

    pruners = list(dict.fromkeys(p.pruner for p in report.potentials))
    p_rows = [[escape(p), *(f"{100 * q.potential:.1f}" for q in report.potentials if q.pruner == p)] for p in pruners]
    return "\n".join([
        f"## Functional similarity under noise (config {report.config_hash[:12]})",
        "",
        (f"Noise: {report.noise}; {report.draws} draws per image and ε > 0 on {report.n_images} test images, "
         f"seed {report.seed}. Agreement and distance compare each network with the parent on the same noisy input."),
        "",
        *block("Label agreement with the parent (%)", "agreement"),
        *block("Softmax ℓ2 distance to the parent", "softmax_l2"),
        *block("Accuracy (%)", "accuracy"),
        f"### Noise prune potential P(δ = {100 * report.delta:g} %) (%)",
        "",
        table(p_rows, ["pruner", *headers[1:]]) if p_rows else "(no pruned networks)",
    ]) + "\n"


def _fmt(cell: SimilarityCell, field: str) -> str:
    value = getattr(cell, field)
    return f"{value:.4f}" if field == "softmax_l2" else f"{100 * value:.1f}"


def _network_styles(labels: Sequence[str], pruners: Sequence[str]) -> list[dict[str, object]]:
    """Parent black, control grey, each pruner one colour map, darker with more pruning."""
    maps = ["Blues", "Oranges", "Greens", "Purples", "Reds", "YlOrBr", "PuRd", "Greys"]
    order = list(dict.fromkeys(p for p in pruners if p not in (PARENT, CONTROL)))
    counts = {p: pruners.count(p) for p in order}
    seen: dict[str, int] = {}
    styles = []
    for label, pruner in zip(labels, pruners):
        if pruner == PARENT:
            styles.append({"color": "black", "linestyle": "--", "label": text(label)})
        elif pruner == CONTROL:
            styles.append({"color": "0.5", "linestyle": ":", "label": text(label)})
        else:
            seen[pruner] = seen.get(pruner, 0) + 1
            shade = 0.35 + 0.6 * seen[pruner] / counts[pruner]
            styles.append({"color": colormaps[maps[order.index(pruner) % len(maps)]](shade), "label": text(label)})
    return styles


def similarity_figure(report: SimilarityReport) -> Figure:
    """Agreement, softmax ℓ2 distance and noise prune potential against ε."""
    fig = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    eps = np.array(report.epsilons)
    pruners = [next(c.pruner for c in report.cells if c.network == n) for n in report.networks]
    for name, style in zip(report.networks, _network_styles(report.networks, pruners)):
        cells = [report.cell(name, e) for e in report.epsilons]
        axes[0].plot(eps, [100 * c.agreement for c in cells], marker="o", markersize=3, **style)
        axes[1].plot(eps, [c.softmax_l2 for c in cells], marker="o", markersize=3, **style)
    for pruner in dict.fromkeys(p.pruner for p in report.potentials):
        values = [100 * p.potential for p in report.potentials if p.pruner == pruner]
        axes[2].plot(eps, values, marker="o", markersize=3, label=text(pruner))
    titles = ("label agreement with parent (%)", "softmax ℓ2 distance to parent",
              f"noise P (δ = {100 * report.delta:g} %)")
    for ax, title in zip(axes, titles):
        ax.set_xlabel("ε (pixel scale [0, 1])")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[2].set_ylim(0, 100)
    axes[0].legend(fontsize=6, ncols=2)
    if report.potentials:
        axes[2].legend(fontsize=7)
    return fig


def save_similarity_plot(report: SimilarityReport, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf."""
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(similarity_figure(report), Path(stem))


# ---- informative features -------------------------------------------------------------------------


class FeatureReport(Strict):
    analysis: Literal["features"] = "features"
    config_hash: str
    networks: list[str]
    pruners: list[str]
    prune_ratios: list[float]
    saliency: Saliency
    target: Target
    multistart: bool  # each network keeps, per image, the best of all networks' search results for itself
    keep_fraction: float
    kept_pixels: int  # per image
    mask_value: str = MASK_VALUE
    n_images: int
    full_confidence: list[float]  # per network: mean true-class softmax on the unmasked images
    adopted: list[float]  # per network: fraction of images whose mask is another network's search result
    matrix: list[list[float]]  # [pixel source][evaluated network]: mean true-class softmax

    @model_validator(mode="after")
    def _consistent(self) -> FeatureReport:
        n = len(self.networks)
        if n == 0 or self.pruners[0] != PARENT:
            raise ValueError("the first network must be the unpruned parent")
        per_network = (self.pruners, self.prune_ratios, self.full_confidence, self.adopted, *self.matrix)
        if len(self.matrix) != n or any(len(values) != n for values in per_network):
            raise ValueError(f"{n} networks need {n} pruners, ratios, confidences and an {n}x{n} matrix")
        values = [*self.full_confidence, *self.adopted, *(v for row in self.matrix for v in row)]
        if not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError("confidences and fractions must lie in [0, 1]")
        return self


def gradient_saliency(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """|input × ∂ logit of the target (default: predicted) class / ∂ input|, summed over channels: (N, H, W)."""
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        target = logits.argmax(1) if target is None else target
        chosen = logits.gather(1, target.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(chosen, x)
    return (x * grad).abs().sum(1).detach()


def _top_pixels(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool (N, H·W): the `keep` highest-scoring pixels of each image (ties by position)."""
    flat = scores.reshape(scores.shape[0], -1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    return mask.scatter_(1, order[:, :keep], True)


REFINE_SWAPS = (16, 8, 4, 2, 1) * 3  # pixels exchanged per refinement round


def _mask_gradient(model: nn.Module, inputs: torch.Tensor, alive: torch.Tensor,
                   target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, log p(target | inputs with only `alive` pixels) and its gradient w.r.t. the mask.

    The mask gradient of a pixel is Σ_c x·∂/∂x at the masked input: the first-order change of the
    score when the pixel is set to 0 (if kept) or restored (if removed).
    """
    n, _, h, w = inputs.shape
    mask = alive.view(n, 1, h, w).float().requires_grad_(True)
    with torch.enable_grad():
        scores = model(inputs * mask).log_softmax(1).gather(1, target).squeeze(1)
        (grad,) = torch.autograd.grad(scores.sum(), mask)
    return scores.detach(), grad.view(n, -1)


def backward_selection(model: nn.Module, inputs: torch.Tensor, keep: int, shrink: float = 0.85,
                       target: torch.Tensor | None = None) -> torch.Tensor:
    """Batched SIS-like backward selection of the `keep` pixels that best keep the target class
    (per image; default: the class the network predicts on the full image).

    Phase 1 drops pixels in rounds (a fraction 1 − shrink of those left per round), each round
    re-linearised at the current masked input: one-shot |x·∇| ranks pixels for the full image, but
    once most pixels are gone the network relies on others. Phase 2 swaps the least useful kept
    pixels for the most promising removed ones and keeps a swap, per image, only if the network's
    score really rises, so the result is a local optimum of the network's own confidence.
    """
    n, _, h, w = inputs.shape
    if target is None:
        with torch.no_grad():  # not inference_mode: `target` enters the autograd graph below
            target = model(inputs).argmax(1)
    target = target.view(-1, 1)
    alive = torch.ones(n, h * w, dtype=torch.bool)
    remaining = h * w
    while remaining > keep:
        remaining = max(keep, int(remaining * shrink))
        _, grad = _mask_gradient(model, inputs, alive, target)
        alive = _top_pixels(grad.masked_fill(~alive, -math.inf), remaining)
    scores, grad = _mask_gradient(model, inputs, alive, target)
    for swaps in REFINE_SWAPS:
        swaps = min(swaps, keep, h * w - keep)
        if swaps < 1:
            break
        drop = grad.masked_fill(~alive, math.inf).topk(swaps, dim=1, largest=False).indices
        add = grad.masked_fill(alive, -math.inf).topk(swaps, dim=1).indices
        candidate = alive.clone().scatter_(1, drop, False).scatter_(1, add, True)
        new_scores, new_grad = _mask_gradient(model, inputs, candidate, target)
        better = new_scores > scores
        alive = torch.where(better[:, None], candidate, alive)
        grad = torch.where(better[:, None], new_grad, grad)
        scores = torch.where(better, new_scores, scores)
    return alive.view(n, 1, h, w)


def pixel_mask(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, keep: int, saliency: Saliency,
               target: Target) -> torch.Tensor:
    """Bool (N, 1, H, W): the `keep` pixels of each image a network keeps."""
    if saliency == "backward":
        return backward_selection(model, inputs, keep, target=labels if target == "true" else None)
    n, _, h, w = inputs.shape
    return _top_pixels(gradient_saliency(model, inputs, labels if target == "true" else None), keep).view(n, 1, h, w)


def informative_features(
    networks: Sequence[AnalysisNetwork],
    data: DataBundle,
    images: ImageSet,
    *,
    keep_fraction: float = DEFAULT_KEEP_FRACTION,
    saliency: Saliency = "backward",
    target: Target = "true",
    multistart: bool = True,
    batch_size: int = 100,
    config_hash: str = "",
    progress: bool = False,
) -> FeatureReport:
    """Matrix[s][e]: network e's mean softmax on the true class when only network s's pixels remain.

    Every network first searches its own mask (`saliency`). With `multistart`, each network then
    keeps, per image, the mask among all networks' search results on which its own target-class
    confidence is highest (its own search result on ties): the search is a local one, and another
    network's result is one more starting point. Selection and matrix use the same masked inputs
    and the same forward passes, so for the true class a network's own pixels are, image by image,
    the ones among the masks compared that maximise its own confidence: every column of the matrix
    has its maximum on the diagonal.
    """
    _check_parent_first(networks)
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    n = len(networks)
    for net in networks:
        net.model.eval()
    keep = max(1, round(keep_fraction * images.images.shape[2] * images.images.shape[3]))
    sums, full, adopted = np.zeros((n, n)), np.zeros(n), np.zeros(n)
    batches = list(zip(images.images.split(batch_size), images.labels.split(batch_size)))
    for batch, labels in tqdm(batches, desc="informative features", disable=not progress, leave=False):
        inputs = data.normalize(batch)
        found = [pixel_mask(net.model, inputs, labels, keep, saliency, target) for net in networks]
        with torch.inference_mode():
            # true[s, e] / chosen[s, e]: per image, network e's softmax on the true / its target
            # class with only the pixels of network s's search result
            true, chosen = torch.zeros(n, n, len(labels), dtype=torch.float64), torch.zeros(n, n, len(labels))
            for e, net in enumerate(networks):
                probs = net.model(inputs).softmax(1)
                full[e] += float(probs.gather(1, labels[:, None]).double().sum())
                goal = labels if target == "true" else probs.argmax(1)
                for s, mask in enumerate(found):
                    probs = net.model(inputs * mask).softmax(1)
                    true[s, e] = probs.gather(1, labels[:, None]).squeeze(1).double()
                    chosen[s, e] = probs.gather(1, goal[:, None]).squeeze(1)
        # source[s]: per image, whose search result network s keeps
        source = torch.arange(n)[:, None].expand(n, len(labels))
        if multistart:
            own = chosen.diagonal().T  # (n, N): each network's confidence on its own search result
            best = chosen.max(dim=0)  # over sources, per (evaluated network, image)
            source = torch.where(best.values > own, best.indices, source)
        adopted += (source != torch.arange(n)[:, None]).sum(1).numpy()
        # network e on network s's final mask = network e on the search result that s kept
        sums += true.gather(0, source[:, None, :].expand(n, n, len(labels))).sum(2).numpy()
    count = len(images)
    return FeatureReport(
        config_hash=config_hash, networks=[m.label for m in networks], pruners=[m.pruner for m in networks],
        prune_ratios=[m.prune_ratio for m in networks], saliency=saliency, target=target, multistart=multistart,
        keep_fraction=keep_fraction, kept_pixels=keep, n_images=count, full_confidence=(full / count).tolist(),
        adopted=(adopted / count).tolist(), matrix=(sums / count).tolist(),
    )


def features_analysis(
    result: RunResult | Path,
    cache_dir: Path | None = None,
    *,
    n_images: int = DEFAULT_FEATURE_IMAGES,
    keep_fraction: float = DEFAULT_KEEP_FRACTION,
    saliency: Saliency = "backward",
    target: Target = "true",
    multistart: bool = True,
    batch_size: int = 100,
    control: bool = True,
    progress: bool = False,
) -> FeatureReport:
    """`bench analyze features`: on the first `n_images` test images."""
    run = load_run_networks(result, cache_dir, control=control, progress=progress)
    config = run.result.config
    test = run.data.test.subset(torch.arange(min(n_images, len(run.data.test))))
    with job_environment(config):
        return informative_features(
            run.networks, run.data, test, keep_fraction=keep_fraction, saliency=saliency, target=target,
            multistart=multistart, batch_size=batch_size, config_hash=config.config_hash(), progress=progress,
        )


def features_table(report: FeatureReport) -> str:
    """Markdown matrix: rows = network whose pixels are kept, columns = evaluated network."""
    rows = [[escape(src), *(f"{100 * v:.1f}" for v in values)] for src, values in zip(report.networks, report.matrix)]
    rows.append(["all pixels", *(f"{100 * v:.1f}" for v in report.full_confidence)])
    return "\n".join([
        f"## Informative features (config {report.config_hash[:12]})",
        "",
        (f"Mean softmax on the true class (%) over {report.n_images} test images when only the row network's "
         f"{100 * report.keep_fraction:g} % most informative pixels ({report.kept_pixels} per image; {report.saliency} "
         f"saliency for the {report.target} class"
         f"{', best of all networks’ search results per image' if report.multistart else ''}) are kept; the rest "
         f"is set to {report.mask_value}. Columns: evaluated network."),
        "",
        table(rows, ["pixels of \\ evaluated by", *(escape(n) for n in report.networks)]),
    ]) + "\n"


def features_figure(report: FeatureReport) -> Figure:
    """Heatmap of the confidence matrix (rows: pixel source, columns: evaluated network)."""
    n = len(report.networks)
    size = min(20.0, 2.5 + 0.45 * n)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = 100 * np.array(report.matrix)
    image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    if n <= 30:
        for (row, col), value in np.ndenumerate(values):
            ax.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 60 else "white")
    labels = [text(name) for name in report.networks]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("evaluated network")
    ax.set_ylabel(f"pixels kept ({100 * report.keep_fraction:g} % of the row network's)")
    ax.set_title("true-class confidence (%)", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def save_features_plot(report: FeatureReport, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf."""
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(features_figure(report), Path(stem))


# ---- report files ---------------------------------------------------------------------------------

Report = SimilarityReport | FeatureReport
REPORT_MODELS: dict[str, type[Report]] = {"similarity": SimilarityReport, "features": FeatureReport}


class ReportFileError(ValueError):
    """An analysis report that is not valid JSON or does not match its model."""


def report_path(result_path: Path, analysis: Analysis) -> Path:
    """Default report file of a result file: `<result folder>/analysis/<result stem>.<analysis>.json`.

    A subfolder, so that `bench validate results/*.json` never picks a report up; the suffix keeps
    `find_result_files` (leaderboard, `bench plot`) from taking it for a result file anywhere.
    """
    result_path = Path(result_path)
    return result_path.parent / REPORTS_FOLDER / f"{result_path.stem}.{analysis}.json"


def save_report(report: Report, path: Path) -> Path:
    """Atomic write (temporary file + rename) of the report's JSON."""
    path = Path(path)
    atomic_write_text(path, report.model_dump_json(indent=1) + "\n")
    return path


def load_report(path: Path) -> Report:
    """Read and validate a report; the kind comes from the `.similarity.json` / `.features.json` suffix,
    else from the report's `analysis` field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportFileError(f"{path}: cannot read ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise ReportFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    kind = next((name for name in REPORT_MODELS if path.name.endswith(f".{name}.json")), None)
    kind = kind or (raw.get("analysis") if isinstance(raw, dict) else None)
    if kind not in REPORT_MODELS:
        raise ReportFileError(f"{path}: not an analysis report (name it *.similarity.json or *.features.json)")
    try:
        return REPORT_MODELS[kind].model_validate(raw)
    except ValueError as exc:  # pydantic's ValidationError included
        raise ReportFileError(f"{path}: not a valid {kind} report:\n{exc}") from exc


def find_report_files(folder: Path) -> list[Path]:
    """Every `*.similarity.json` / `*.features.json` under `folder`, hidden folders (.cache) skipped."""
    folder = Path(folder)
    return sorted(
        p for suffix in ANALYSIS_REPORT_SUFFIXES for p in folder.rglob(f"*{suffix}")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def load_reports(folder: Path) -> dict[str, Report]:
    """Validated reports under `folder` by name: the file name without `.json` (`<result stem>.similarity`),
    or the path below `folder` where two reports share a file name."""
    folder = Path(folder)
    paths = find_report_files(folder)
    names = [p.name for p in paths]
    return {
        (p.name if names.count(p.name) == 1 else p.relative_to(folder).as_posix()).removesuffix(".json"): load_report(p)
        for p in paths
    }


def report_figure(report: Report) -> Figure:
    return similarity_figure(report) if isinstance(report, SimilarityReport) else features_figure(report)

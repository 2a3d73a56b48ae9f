"""Informative features: each network's most informative pixels per image (10 % by default), and
every network's confidence in the true class when only those pixels are kept.

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

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bench.analysis.networks import AnalysisNetwork, check_parent_first, load_run_networks
from bench.analysis.reports import FeatureReport, Saliency, Target
from bench.core.devices import float64_device, module_device, resolve_device
from bench.data import DataBundle, ImageSet
from bench.pipeline.jobs import job_environment
from bench.pipeline.training import resident
from bench.results.schema import RunResult

__all__ = [
    "DEFAULT_FEATURE_IMAGES",
    "DEFAULT_KEEP_FRACTION",
    "REFINE_SWAPS",
    "backward_selection",
    "features_analysis",
    "gradient_saliency",
    "informative_features",
    "pixel_mask",
]

DEFAULT_FEATURE_IMAGES = 200
DEFAULT_KEEP_FRACTION = 0.1


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
    alive = torch.ones(n, h * w, dtype=torch.bool, device=inputs.device)
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
    has its maximum on the diagonal. Runs on the networks' device (the images uploaded once); the
    report records its type.
    """
    check_parent_first(networks)
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    n = len(networks)
    for net in networks:
        net.model.eval()
    device = module_device(networks[0].model)
    tally = float64_device(device)  # where the float64 sums live (the CPU for MPS)
    images = resident(images, device)
    keep = max(1, round(keep_fraction * images.images.shape[2] * images.images.shape[3]))
    sums, full, adopted = np.zeros((n, n)), np.zeros(n), np.zeros(n)
    batches = list(zip(images.images.split(batch_size), images.labels.split(batch_size)))
    for batch, labels in tqdm(batches, desc="informative features", disable=not progress, leave=False):
        inputs, labels = data.normalize(batch.to(device)), labels.to(device)
        found = [pixel_mask(net.model, inputs, labels, keep, saliency, target) for net in networks]
        with torch.inference_mode():
            # true[s, e] / chosen[s, e]: per image, network e's softmax on the true / its target
            # class with only the pixels of network s's search result
            true = torch.zeros(n, n, len(labels), dtype=torch.float64, device=tally)
            chosen = torch.zeros(n, n, len(labels), device=tally)
            for e, net in enumerate(networks):
                probs = net.model(inputs).softmax(1)
                full[e] += float(probs.gather(1, labels[:, None]).to(tally).double().sum())
                goal = labels if target == "true" else probs.argmax(1)
                for s, mask in enumerate(found):
                    probs = net.model(inputs * mask).softmax(1)
                    true[s, e] = probs.gather(1, labels[:, None]).squeeze(1).to(tally).double()
                    chosen[s, e] = probs.gather(1, goal[:, None]).squeeze(1).to(tally)
        # source[s]: per image, whose search result network s keeps
        source = torch.arange(n, device=tally)[:, None].expand(n, len(labels))
        if multistart:
            own = chosen.diagonal().T  # (n, N): each network's confidence on its own search result
            best = chosen.max(dim=0)  # over sources, per (evaluated network, image)
            source = torch.where(best.values > own, best.indices, source)
        adopted += (source != torch.arange(n, device=tally)[:, None]).sum(1).cpu().numpy()
        # network e on network s's final mask = network e on the search result that s kept
        sums += true.gather(0, source[:, None, :].expand(n, n, len(labels))).sum(2).cpu().numpy()
    count = len(images)
    return FeatureReport(
        config_hash=config_hash, networks=[m.label for m in networks], pruners=[m.pruner for m in networks],
        prune_ratios=[m.prune_ratio for m in networks], saliency=saliency, target=target, multistart=multistart,
        keep_fraction=keep_fraction, kept_pixels=keep, device=device.type, n_images=count,
        full_confidence=(full / count).tolist(),
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
    device: str = "cpu",
) -> FeatureReport:
    """`bench analyze features`: on the first `n_images` test images, on `device` (a `--device` value)."""
    device = str(resolve_device(device))
    run = load_run_networks(result, cache_dir, control=control, progress=progress, device=device)
    config = run.result.config
    test = run.data.test.subset(torch.arange(min(n_images, len(run.data.test))))
    with job_environment(config, device, autotune=False):
        return informative_features(
            run.networks, run.data, test, keep_fraction=keep_fraction, saliency=saliency, target=target,
            multistart=multistart, batch_size=batch_size, config_hash=config.config_hash(), progress=progress,
        )

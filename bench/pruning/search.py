"""Contract enforcement and the size search: `prune_to_ratio` applies a pruner's mask plan and
searches its knob so the measured prune ratio lands on the target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import TypeVar

import torch
from scipy.optimize import brentq
from torch import nn
from tqdm.auto import tqdm

from bench.core.registry import PluginError
from bench.pruning.masks import (
    Masks,
    apply_masks,
    compressible_layers,
    count_nonzero,
    current_masks,
    enforce_parameter_masks,
    parameter_masks,
)
from bench.pruning.propagation import PROPAGATION_PASSES, propagate_compression
from bench.pruning.pruner import PruneContext, Pruner, pruner_context


@dataclass(frozen=True)
class PruneOutcome:
    target_ratio: float
    prune_ratio: float  # measured
    nonzero_params: int
    keep_knob: float


T = TypeVar("T")


def _plugin_call(pruner: Pruner, what: str, call: Callable[[], T]) -> T:
    """Run pruner code; any exception becomes a one-line PluginError naming the pruner."""
    try:
        return call()
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"pruner {pruner.name!r} failed in {what}: {type(exc).__name__}: {exc}") from exc


def checked_masks(pruner: Pruner, masks: object, layers: Mapping[str, nn.Conv2d | nn.Linear],
                  parameters: Mapping[str, torch.Tensor] | None = None) -> Masks:
    """A plan's masks, checked against the mask rules: a dict of compressible layer name -> a
    torch.bool tensor shaped like the layer's weight, or parameter name (of `parameters`) -> a
    torch.bool tensor shaped like the parameter (PluginError naming pruner and layer if not)."""
    if not isinstance(masks, Mapping):
        raise PluginError(f"pruner {pruner.name!r}: its plan returned {type(masks).__name__}, "
                          "expected a dict of layer name -> bool mask")
    parameters = parameters or {}
    for name, mask in masks.items():
        if name not in layers and name not in parameters:
            raise PluginError(f"pruner {pruner.name!r}: mask for {name!r}, which is not a compressible layer "
                              f"(e.g. {', '.join(list(layers)[:3])}) nor a parameter name")
        what, shape = (("layer", layers[name].weight.shape) if name in layers
                       else ("parameter", parameters[name].shape))
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            kind = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise PluginError(f"pruner {pruner.name!r}: mask of {what} {name!r} is {kind}; masks must be torch.bool")
        if mask.shape != shape:
            raise PluginError(f"pruner {pruner.name!r}: mask of {what} {name!r} has shape {tuple(mask.shape)}, "
                              f"its {'weight' if what == 'layer' else 'parameter'} {tuple(shape)}")
    return dict(masks)


class NonFiniteWeights(RuntimeError):
    """A network with NaN or infinite parameters (diverged training or a broken pruner)."""


def check_finite(model: nn.Module, where: str) -> None:
    """Raise NonFiniteWeights naming `where` and the first parameters or floating buffers (BatchNorm
    statistics) that are not finite."""
    bad = [name for name, t in _state(model).items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteWeights(f"{where}: non-finite weights (NaN or inf) in {', '.join(bad[:3])}"
                               f"{' ...' if len(bad) > 3 else ''}")


State = dict[str, torch.Tensor]  # parameter and buffer name -> tensor


def _state(model: nn.Module) -> State:
    return dict(chain(model.named_parameters(), model.named_buffers()))


def _snapshot(model: nn.Module) -> State:
    return {name: t.detach().clone() for name, t in _state(model).items()}


@torch.no_grad()
def _restore(model: nn.Module, snapshot: State) -> None:
    current = _state(model)
    for name, saved in snapshot.items():
        current[name].copy_(saved)


def _check_unchanged(pruner: Pruner, model: nn.Module, snapshot: State, what: str) -> None:
    """PluginError naming the pruner if `model`'s parameters or buffers differ from `snapshot`."""
    current = _state(model)
    changed = [name for name, saved in snapshot.items()
               if name not in current or current[name].shape != saved.shape or current[name].dtype != saved.dtype
               or current[name].device != saved.device or not torch.equal(current[name], saved)]
    changed += [name for name in current if name not in snapshot]
    if changed:
        raise PluginError(f"pruner {pruner.name!r}: {what} changed the model ({', '.join(changed[:3])}"
                          f"{' ...' if len(changed) > 3 else ''}); a plan must leave the model as it found it")


def _call_in_eval_mode(pruner: Pruner, model: nn.Module, what: str, call: Callable[[], T]) -> T:
    """Pruner code as the contract promises: model in eval mode, gradients enabled; gradients left
    behind are cleared."""
    model.eval()
    with torch.enable_grad():
        result = _plugin_call(pruner, what, call)
    model.zero_grad(set_to_none=True)
    return result


def _pruned_count(masks: Masks) -> int:
    return sum(int(mask.numel() - mask.count_nonzero()) for mask in masks.values())


def _check_monotone(pruner: Pruner, seen: dict[float, int], knob: float, pruned: int) -> None:
    """PluginError if the plan pruned more at a larger knob than at a smaller one (`seen`: knob ->
    entries pruned so far, updated)."""
    for other, count in seen.items():
        (low, low_count), (high, high_count) = sorted([(other, count), (knob, pruned)])
        if high_count > low_count:
            raise PluginError(f"pruner {pruner.name!r}: its plan is not monotone: plan({high:.4g}) prunes "
                              f"{high_count} entries, plan({low:.4g}) only {low_count}; a larger keep knob must "
                              "never prune more")
    seen[knob] = pruned


def _reconstruct(model: nn.Module, pruner: Pruner, seen: PruneContext, ctx: PruneContext, snapshot: State,
                 passes: int) -> int:
    """Run the pruner's reconstruct hook on the masked model, zero every entry that was zero before
    it again (no pruned entry regrows), propagate again; return the nonzero count."""
    zeros = parameter_masks(model)
    masks = current_masks(model)
    _call_in_eval_mode(pruner, model, "reconstruct(model, masks, ctx)", lambda: pruner.reconstruct(model, masks, seen))
    current = _state(model)
    moved = [name for name, saved in snapshot.items() if name not in current or current[name].shape != saved.shape]
    if moved:
        raise PluginError(f"pruner {pruner.name!r}: reconstruct changed the model's structure ({', '.join(moved[:3])}); "
                          "it may only update values in place")
    enforce_parameter_masks(model, zeros)
    return propagate_compression(model, ctx, pruner.structured, passes)


def reference_keep_ratio(gap_at: Callable[[float], float], keep: float, start_keep: float) -> float:
    """torchprune's size search (``CompressedNet.compress``): the keep ratio kr (nonzeros over the
    parent's) whose network keeps ``keep``.

    ``gap_at(kr)`` is the kept fraction after masking and propagation minus ``keep``; a gap within
    0.5 % of ``keep`` counts as 0. The first try is kr = keep, which halves the bracket
    [0.4 keep, max(keep, 0.999 start_keep)]; then brentq (20 iterations, xtol = rtol = 5e-3, so it
    may stop outside that 0.5 %), else the best kr tried."""
    gaps: dict[float, float] = {}

    def gap(kr: float) -> float:
        if kr not in gaps:
            diff = gap_at(kr)
            gaps[kr] = 0.0 if abs(diff) < 0.005 * keep else diff
        return gaps[kr]

    low, high = 0.4 * keep, max(keep, 0.999 * start_keep)
    first = gap(keep)
    if first == 0.0:
        return keep
    low, high = (low, keep) if first > 0 else (keep, high)
    try:
        return float(brentq(gap, low, high, maxiter=20, xtol=5e-3, rtol=5e-3, disp=True))
    except (ValueError, RuntimeError):  # no sign change in the bracket, or no convergence
        return min(gaps, key=lambda kr: abs(gaps[kr]))


def _budget_search(model: nn.Module, layers: Mapping[str, nn.Conv2d | nn.Linear], nonzero_at: Callable[[float], int],
                   keep: float, parent_nonzero: int) -> float:
    """The knob of a weight-budget pruner found as the reference finds it: kr -> budget
    ``B = int(kr * parent nonzeros) - nonzeros outside compressible weights`` (clipped to the
    compressible weights still alive), knob ``B / compressible weights``, searched by
    :func:`reference_keep_ratio`. At the same B the masks equal the reference's."""
    total = sum(layer.weight.numel() for layer in layers.values())
    alive = sum(int(layer.weight.count_nonzero()) for layer in layers.values())
    start_nonzero = count_nonzero(model)
    others = start_nonzero - alive  # biases and norm affine entries of the starting network

    def knob(kr: float) -> float:
        return min(max(int(kr * float(parent_nonzero)) - others, 0), alive) / total

    kr = reference_keep_ratio(lambda kr: nonzero_at(knob(kr)) / parent_nonzero - keep, keep,
                              start_nonzero / parent_nonzero)
    return knob(kr)


def _bisection(nonzero_at: Callable[[float], int], target_nonzero: int, tolerance: float, max_steps: int) -> float:
    """The knob whose nonzero count is closest to ``target_nonzero`` among a bisection's tries, which
    stops within ``tolerance`` nonzeros (pruners whose knob is not a weight budget: FT, PFP, tp-*)."""
    low, high = 0.0, 1.0
    best_knob, best_gap = 1.0, float("inf")
    for _ in range(max_steps):
        knob = (low + high) / 2
        nonzero = nonzero_at(knob)
        gap = abs(nonzero - target_nonzero)
        if gap < best_gap:
            best_knob, best_gap = knob, gap
        if gap <= tolerance:
            break
        if nonzero > target_nonzero:
            high = knob
        else:
            low = knob
    return best_knob


def prune_to_ratio(
    model: nn.Module,
    pruner: Pruner,
    target_ratio: float,
    parent_nonzero: int,
    ctx: PruneContext,
    tolerance: float = 1e-3,
    max_steps: int = 30,
    progress: bool = False,
    propagation: str = "once",
) -> PruneOutcome:
    """Prune `model` in place so its measured prune ratio, after propagation over S, is as close to
    `target_ratio` as the pruner's granularity allows. Already-zero parameters stay zero (cascade).

    Enforces the pruner contract (`Pruner`): the plan and each plan(knob) run in eval mode with
    gradients enabled on the unmasked model, which they must leave unchanged; masks are checked; the
    plan must be monotone. The optional reconstruct hook runs once, after the search settled.

    The size search: a weight-budget pruner (``weight_budget``: WT, SiPP) is searched as the reference
    searches (:func:`reference_keep_ratio`: brentq over the keep ratio, within 0.5 % of the kept
    fraction), so its masks equal the reference's; any other pruner's knob by bisection, stopping
    within `tolerance` of the parent's nonzero count. `propagation`: "once" (the reference) or
    "fixpoint" (PROPAGATION_PASSES)."""
    if not 0.0 <= target_ratio < 1.0:
        raise ValueError(f"target prune ratio must be in [0, 1), got {target_ratio}")
    seen = pruner_context(pruner, ctx)
    before = _snapshot(model)
    layers = compressible_layers(model)
    parameters = dict(model.named_parameters())
    target_nonzero = round((1.0 - target_ratio) * parent_nonzero)
    pruned_by_knob: dict[float, int] = {}
    passes = PROPAGATION_PASSES[propagation]

    def call(what: str, code: Callable[[], T]) -> T:
        result = _call_in_eval_mode(pruner, model, what, code)
        _check_unchanged(pruner, model, before, what)
        return result

    def attempt(knob: float) -> int:
        _restore(model, before)  # every call of the plan sees the unmasked model
        masks = checked_masks(pruner, call(f"its plan({knob:.4g})", lambda: plan(knob)), layers, parameters)
        _check_monotone(pruner, pruned_by_knob, knob, _pruned_count(masks))
        apply_masks(model, masks)
        return propagate_compression(model, ctx, pruner.structured, passes)

    was_training = model.training
    try:
        plan = call("plan(model, ctx)", lambda: pruner.plan(model, seen))
        with tqdm(total=max_steps, desc=f"size search {pruner.name} {target_ratio:.3f}", unit="try", leave=False,
                  disable=not progress) as bar:

            def tried(knob: float) -> int:
                nonzero = attempt(knob)
                bar.update(1)
                bar.set_postfix(ratio=f"{1 - nonzero / parent_nonzero:.4f}")
                return nonzero

            if pruner.weight_budget:
                best_knob = _budget_search(model, layers, tried, 1.0 - target_ratio, parent_nonzero)
            else:
                best_knob = _bisection(tried, target_nonzero, tolerance * parent_nonzero, max_steps)
        nonzero = attempt(best_knob)
        if type(pruner).reconstruct is not Pruner.reconstruct:  # optional hook: skip its extra propagation
            nonzero = _reconstruct(model, pruner, seen, ctx, before, passes)
    finally:
        model.train(was_training)
    return PruneOutcome(
        target_ratio=target_ratio,
        prune_ratio=1.0 - nonzero / parent_nonzero,
        nonzero_params=nonzero,
        keep_knob=best_knob,
    )

"""Batched data-informed sensitivities of SiPP and PFP (Baykal et al.; Liebenwein et al.).

For a compressible layer with input activations a (unfolded into patches for convolutions),
the relative contribution of weight W_ij at patch p of image x is

    g_ij(x, p) = |W_ij| a_j(x, p) / |z^s_i(x, p)|,   z^s_i = sum_j W^s_ij a_j,  s = sign(W_ij),

with W^+ / W^- the positive / negative entries and 1/|z| := 0 where |z| <= eps. Inputs with
negative entries are split into a^+ and -a^- (two non-negative "images"), so a >= 0.

SiPP scores weights with max_x mean_p g; PFP scores input channels with max over x, output
filters, kernel offsets and patches of g. Both are computed here for whole batches with
matrix products, chunked to bound memory, instead of one image per forward pass. Everything
runs on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.devices import module_device

# elements of the largest intermediate tensor materialised at once (~256 MB of float32)
_CHUNK_ELEMENTS = 1 << 26
_CACHE_ELEMENTS = 1 << 21  # ~8 MB of float32: the working set of one max-product block
_EPS = torch.finfo(torch.float32).eps

LayerReducer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def layer_patches(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Layer inputs as non-negative patches (B', J, P): J = fan-in, P = output positions."""
    if isinstance(layer, nn.Conv2d):
        padding = cast(tuple[int, ...], layer.padding)  # a string padding ("same") fails in F.unfold
        patches = F.unfold(inputs, layer.kernel_size, layer.dilation, padding, layer.stride)
    else:  # Linear: any leading token dimensions act as positions
        patches = inputs.reshape(inputs.shape[0], -1, inputs.shape[-1]).transpose(1, 2)
    if _has_negative(patches):
        patches = torch.cat([patches.clamp_min(0), (-patches).clamp_min(0)])
    return patches


def _has_negative(x: torch.Tensor) -> bool:
    """Whether x has a negative entry; on the meta device (no values) assume so, so that the
    sign split is traced too."""
    return x.device.type == "meta" or bool((x < 0).any())


def inverse_preactivations(weight: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """1/|z^+| and 1/|z^-|, each (B', C_out, P), 0 where the pre-activation part vanishes."""

    def inverse(part: torch.Tensor) -> torch.Tensor:
        z = torch.matmul(part, patches).abs_()
        return torch.where(z > _EPS, z.reciprocal(), torch.zeros_like(z))

    return inverse(weight.clamp_min(0)), inverse(weight.clamp_max(0))


def _batch_chunks(patches: torch.Tensor, per_item: int) -> Iterator[torch.Tensor]:
    step = max(1, _CHUNK_ELEMENTS // max(per_item, 1))
    yield from patches.split(step)


def sipp_layer_scores(weight: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """max over images of the patch-mean relative contribution, per weight (C_out, J)."""
    w = weight.flatten(1)
    positive = w > 0
    best = torch.zeros_like(w)
    for chunk in _batch_chunks(patches, 2 * w.numel()):
        inv_pos, inv_neg = inverse_preactivations(w, chunk)
        chunk_t = chunk.transpose(1, 2)
        mean_pos = torch.matmul(inv_pos, chunk_t)  # (B, C_out, J), summed over patches
        mean_neg = torch.matmul(inv_neg, chunk_t)
        per_image = torch.where(positive, mean_pos, mean_neg).amax(0)
        best = torch.maximum(best, per_image)
    return (best * w.abs() / patches.shape[2]).view_as(weight)


def _channel_max(magnitudes: torch.Tensor, inverse: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """max over images b, filters i and positions p of magnitudes[i, j] * inverse[b, i, p] * patches[b, j, p].

    There is no matrix-product form of this max-product (O(B I J P) work), so it is memory-bound:
    it runs image by image over blocks of filters whose (I', J, P) product fits in cache, which is
    ~10x faster than materialising large (B, I, J, P) chunks.
    """
    filters, fan_in = magnitudes.shape
    positions = inverse.shape[2]
    best = torch.zeros(fan_in, device=magnitudes.device)
    step = max(1, min(filters, _CACHE_ELEMENTS // max(fan_in * positions, 1)))
    for b in range(inverse.shape[0]):
        for i in range(0, filters, step):
            strongest = (magnitudes[i : i + step, :, None] * inverse[b, i : i + step, None, :]).amax(0)  # (J, P)
            torch.maximum(best, strongest.mul_(patches[b]).amax(1), out=best)
    return best


def pfp_layer_scores(weight: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """max over images, output filters, kernel offsets and patches, per input channel (C_in,)."""
    w = weight.flatten(1)
    best = torch.zeros(w.shape[1], device=w.device)
    for chunk in _batch_chunks(patches, w.numel()):
        inv_pos, inv_neg = inverse_preactivations(w, chunk)
        best = torch.maximum(best, _channel_max(w.clamp_min(0), inv_pos, chunk))
        best = torch.maximum(best, _channel_max((-w).clamp_min(0), inv_neg, chunk))
    return best.view(weight.shape[1], -1).amax(1)


@torch.no_grad()
def layer_sensitivities(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    inputs: torch.Tensor,
    reducer: LayerReducer,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """Run `inputs` through `model` in batches (moved to the model's device); reduce each layer's
    sensitivity with a running max."""
    scores: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Callable[..., None]:
        def hook(layer: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            weight = cast(torch.Tensor, layer.weight)  # a conv or linear (nn.Module types it Tensor | Module)
            batch_scores = reducer(weight.detach(), layer_patches(layer, args[0].detach()))
            scores[name] = batch_scores if name not in scores else torch.maximum(scores[name], batch_scores)

        return hook

    handles = [layer.register_forward_hook(hook_for(name)) for name, layer in layers.items()]
    was_training = model.training
    device = module_device(model)
    model.eval()
    try:
        for batch in inputs.split(batch_size):
            model(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return scores

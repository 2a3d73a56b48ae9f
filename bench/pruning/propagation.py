"""The reference's propagation over the S set: channels that are constant for every S image are
pruned in the layers that read them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from bench.core.devices import module_device
from bench.pruning.masks import compressible_layers, count_nonzero
from bench.pruning.pruner import PruneContext

REFERENCE_S_BATCH = 4  # torchprune's S loader: batches of min(4, test batch size) images


class _ConstantInputs:
    """Forward hooks recording, per compressible layer, which input channels are identical for every
    image and position seen (compared with the first image's): channels of pruned filters."""

    def __init__(self, layers: Mapping[str, nn.Module]) -> None:
        self.first: dict[str, torch.Tensor] = {}
        self.constant: dict[str, torch.Tensor] = {}
        self.handles = [layer.register_forward_hook(self._hook(name)) for name, layer in layers.items()]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(layer: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            x = args[0].detach()
            # Linear: tokens folded into the batch, as the reference does; (rows, channels, positions)
            x = x.reshape(-1, x.shape[-1], 1) if isinstance(layer, nn.Linear) else x.flatten(2)
            first = self.first.setdefault(name, x[:1].clone())
            same = (x == first).all(2).all(0)
            self.constant[name] = same if name not in self.constant else self.constant[name] & same

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def propagation_pass(model: nn.Module, ctx: PruneContext, structured: bool) -> None:
    """One pass of the reference's propagation step (see propagate_compression), on the model's
    device (the S set's batches are moved there); masks are applied with masked_fill_, so nothing is
    read back from the device."""
    layers = compressible_layers(model)
    device = module_device(model)
    model.zero_grad(set_to_none=True)
    constant = _ConstantInputs(layers) if structured else None
    # the reference feeds S in batches of 4 and skips a batch of fewer than 2 images: a last single one
    used = len(ctx.calibration) - (1 if len(ctx.calibration) % REFERENCE_S_BATCH == 1 else 0)
    try:
        with torch.enable_grad():
            for images, labels in zip(ctx.calibration[:used].split(ctx.batch_size), ctx.labels[:used].split(ctx.batch_size)):
                ctx.loss(model(images.to(device)), labels.to(device)).backward()
    finally:
        if constant is not None:
            constant.remove()
    with torch.no_grad():
        if structured:
            assert constant is not None
            for layer in layers.values():
                weight = layer.weight
                if weight.grad is not None:
                    dead = weight.grad.flatten(1).abs().sum(1) == 0  # output filters without gradient
                    weight.masked_fill_(dead.view(-1, *([1] * (weight.ndim - 1))), 0.0)
            for name, channels in constant.constant.items():
                weight = layers[name].weight  # input columns of channels constant over S
                weight.masked_fill_(channels.view(1, -1, *([1] * (weight.ndim - 2))), 0.0)
        else:
            for p in model.parameters():
                if p.grad is not None:
                    p.masked_fill_(p.grad == 0, 0.0)
    model.zero_grad(set_to_none=True)


# RunConfig.propagation -> passes of the propagation step: the reference's one, or until nothing changes
PROPAGATION_PASSES: dict[str, int] = {"once": 1, "fixpoint": 10}


def propagate_compression(model: nn.Module, ctx: PruneContext, structured: bool, max_passes: int = 1) -> int:
    """The reference's propagation step after masking (torchprune `CompressedNet._propagate_compression`).

    Forward + backward passes of the loss over the S set (eval mode, gradients summed over batches;
    like the reference, whose batches of 4 skip a last single image, without that image), then:

    * unstructured (WeightNet): every parameter entry, weights, biases and norm affine alike, whose
      gradient is exactly zero is zeroed;
    * structured (FilterNet): every conv/linear output filter whose gradient is exactly zero is
      zeroed, and every consumer input column ``W[:, c]`` whose input channel c was constant over S
      (e.g. a pruned filter's relu(beta') through BN + ReLU, residual sums included) is zeroed.

    One pass, as the reference does (the default protocol). With ``max_passes`` > 1 (protocol option
    ``--propagation fixpoint``: ``PROPAGATION_PASSES``) passes repeat until nothing changes: zeroing
    a constant channel's columns shifts later pre-activations, and a channel that this turns
    constant (or a parameter whose gradient it turns zero) is removed too, which changes what FT
    is. Parameters without a gradient (layers the forward pass does not reach) are left alone.
    Returns the model's nonzero parameter count.
    """
    if structured and len(ctx.calibration) < 2:
        raise ValueError("structured propagation needs at least 2 S-set images to tell constant channels")
    was_training = model.training
    model.eval()
    try:
        nonzero = count_nonzero(model)
        for _ in range(max_passes):
            propagation_pass(model, ctx, structured)
            nonzero, before = count_nonzero(model), nonzero
            if nonzero == before:
                break
    finally:
        model.train(was_training)
    return nonzero



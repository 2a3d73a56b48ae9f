"""Batched SiPP/PFP sensitivities / one image per forward pass (goal >= 20x).

Three ways to compute the same scores on the same calibration images (normalised digits,
3x32x32, the first --images of the validation split; models randomly initialised and in
channels_last, as the runner hands them to pruners):

* batched: ``bench.pruning.sensitivity.layer_sensitivities(model, layers, x, reducer, batch_size=64)``;
* one image per forward: the same function with ``batch_size=1`` (torchprune's protocol: its
  sensitivity passes re-batch the S set to single images), the hook still vectorised over
  output filters;
* torchprune-style loop: one image per forward, and inside the hook a Python loop over output
  filters that computes the relative contributions g of that one row only, as torchprune's
  ``BaseSensTracker._update_g_sens`` does. Written below from the definition in
  ``bench/pruning/sensitivity.py``'s module docstring, independently of that module's code.

All three must agree (``torch.allclose(atol=1e-5)``) before anything is timed. RATIO is the
smallest batched speedup over the ``batch_size=1`` baseline across models and reducers (the
conservative baseline; the speedups over the torchprune-style loop are printed too).

Run: .venv/bin/python benchmarks/sensitivity.py [--images 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from _timing import (
    Timing,
    compare,
    geometric_mean,
    markdown_table,
    open_benchmark,
    ratio_line,
    run_benchmark,
)
from torch import nn

from bench.data import load_dataset
from bench.models import create_model
from bench.pruning import compressible_layers
from bench.pruning.sensitivity import (
    LayerReducer,
    layer_sensitivities,
    pfp_layer_scores,
    sipp_layer_scores,
)

MODELS = ("digits_cnn", "resnet20_cifar")
REDUCERS: dict[str, tuple[Literal["sipp", "pfp"], LayerReducer]] = {
    "sipp_layer_scores": ("sipp", sipp_layer_scores),
    "pfp_layer_scores": ("pfp", pfp_layer_scores),
}
BATCH_SIZE = 64
GOAL = 20.0
ATOL = 1e-5
EPS = torch.finfo(torch.float32).eps


def nonnegative_patches(layer: nn.Module, activation: torch.Tensor) -> torch.Tensor:
    """One image's layer input as (halves, J, P): unfolded patches, split into a+ and -a- if signed."""
    if isinstance(layer, nn.Conv2d):
        if isinstance(layer.padding, str):
            raise ValueError(f"string padding {layer.padding!r} is not supported by this reference loop")
        patches = F.unfold(activation, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    else:
        patches = activation.reshape(activation.shape[0], -1, activation.shape[-1]).transpose(1, 2)
    if bool((patches < 0).any()):
        return torch.cat([patches.clamp(min=0), (-patches).clamp(min=0)])
    return patches


def filter_loop_scores(weight: torch.Tensor, patches: torch.Tensor, kind: Literal["sipp", "pfp"]) -> torch.Tensor:
    """One image's scores, looping over output filters i and materialising g_i (halves, J, P).

    g_ij(p) = |W_ij| a_j(p) / |z^s_i(p)|, z^s_i = sum_j W^s_ij a_j, s = sign(W_ij), 1/|z| := 0 for |z| <= eps.
    SiPP: per weight, max over halves of the patch mean. PFP: per fan-in entry j, max over
    halves, patches and filters (the caller then maxes over each channel's kernel offsets).
    """
    w = weight.flatten(1)
    rows = []
    for i in range(w.shape[0]):
        row = w[i]
        z_pos = torch.matmul(row.clamp(min=0), patches)  # (halves, P)
        z_neg = torch.matmul(row.clamp(max=0), patches)
        z = torch.where((row > 0)[None, :, None], z_pos[:, None, :], z_neg[:, None, :]).abs()
        inverse = torch.where(z > EPS, 1.0 / z.clamp(min=EPS), torch.zeros_like(z))
        g = row.abs()[None, :, None] * patches * inverse  # (halves, J, P)
        rows.append(g.mean(2).amax(0) if kind == "sipp" else g.amax(dim=(0, 2)))
    per_weight = torch.stack(rows)  # (C_out, J)
    return per_weight if kind == "sipp" else per_weight.amax(0)


@torch.no_grad()
def torchprune_style_sensitivities(
    model: nn.Module, layers: dict[str, nn.Module], inputs: torch.Tensor, kind: Literal["sipp", "pfp"]
) -> dict[str, torch.Tensor]:
    """One image per forward; per layer a Python loop over filters; running max over images."""
    scores: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Callable[..., None]:
        def hook(layer: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            weight = layer.weight
            assert isinstance(weight, torch.Tensor)
            weight = weight.detach()
            image = filter_loop_scores(weight, nonnegative_patches(layer, args[0].detach()), kind)
            if kind == "sipp":
                image = image.view_as(weight)
            else:
                image = image.view(weight.shape[1], -1).amax(1)
            scores[name] = image if name not in scores else torch.maximum(scores[name], image)

        return hook

    handles = [layer.register_forward_hook(hook_for(name)) for name, layer in layers.items()]
    model.eval()
    try:
        for image in inputs.split(1):
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    return scores


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        raise AssertionError(f"different layers: {sorted(a)} vs {sorted(b)}")
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def check_agreement(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor], what: str) -> float:
    for name in reference:
        if not torch.allclose(reference[name], other[name], atol=ATOL):
            diff = float((reference[name] - other[name]).abs().max())
            raise AssertionError(f"{what}: layer {name} differs from the batched scores by {diff:.3g} > {ATOL}")
    return max_difference(reference, other)


def main() -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="calibration images (64-128)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the batched and batch_size=1 sides")
    parser.add_argument("--loop-repeats", type=int, default=1, help="timed runs of the torchprune-style loop")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    open_benchmark(args.threads)

    data = load_dataset("digits", 0)
    inputs = data.normalize(data.val.images[: args.images])
    print(f"calibration: {tuple(inputs.shape)} normalised digits (validation split), batch_size={BATCH_SIZE} vs 1")

    rows = []
    vs_single: list[float] = []
    vs_loop: list[float] = []
    for model_name in MODELS:
        torch.manual_seed(0)
        model = create_model(model_name, num_classes=data.num_classes, in_chans=3)
        model = model.to(memory_format=torch.channels_last).eval()
        layers = compressible_layers(model)
        for reducer_name, (kind, reducer) in REDUCERS.items():

            def batched() -> dict[str, torch.Tensor]:
                return layer_sensitivities(model, layers, inputs, reducer, batch_size=BATCH_SIZE)

            def single() -> dict[str, torch.Tensor]:
                return layer_sensitivities(model, layers, inputs, reducer, batch_size=1)

            def loop() -> dict[str, torch.Tensor]:
                return torchprune_style_sensitivities(model, layers, inputs, kind)

            reference = batched()
            diff_single = check_agreement(reference, single(), "batch_size=1")
            diff_loop = check_agreement(reference, loop(), "torchprune-style loop")
            fast: dict[str, Timing] = compare(
                {"batched": batched, "single": single}, warmup=1, repeats=args.repeats
            )
            slow = compare({"loop": loop}, warmup=0, repeats=args.loop_repeats)["loop"]
            t_batched, t_single = fast["batched"].median, fast["single"].median
            vs_single.append(t_single / t_batched)
            vs_loop.append(slow.median / t_batched)
            rows.append(
                [
                    model_name,
                    reducer_name,
                    str(len(layers)),
                    f"{t_batched:.3f}",
                    f"{t_single:.3f}",
                    f"{slow.median:.2f}",
                    f"{vs_single[-1]:.1f}x",
                    f"{vs_loop[-1]:.0f}x",
                    f"{max(diff_single, diff_loop):.1e}",
                    "met" if vs_single[-1] >= GOAL else "MISSED",
                ]
            )
            print(f"  {model_name} {reducer_name}: done", flush=True)
    print()
    print(
        markdown_table(
            [
                "model",
                "reducer",
                "layers",
                "batched s",
                "batch_size=1 s",
                "per-filter loop s",
                "speedup vs bs=1",
                "speedup vs loop",
                "max |diff|",
                f"goal >= {GOAL:g}x (vs bs=1)",
            ],
            rows,
        )
    )
    print(
        f"(batched and batch_size=1: median of {args.repeats} interleaved runs after 1 warm-up; "
        f"per-filter loop: median of {args.loop_repeats}; {args.images} images)"
    )
    print(f"geometric mean speedup: vs batch_size=1 {geometric_mean(vs_single):.1f}x, vs per-filter loop {geometric_mean(vs_loop):.0f}x")
    print(f"speedup vs per-filter loop, min over cases: {min(vs_loop):.0f}x")
    return ratio_line("sensitivity", min(vs_single), f">= {GOAL:g}, batched vs batch_size=1, min over models x reducers")


if __name__ == "__main__":
    run_benchmark(main)

"""Params, MACs and latency of networks (dense or compressed) under one timing protocol."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Measurement", "compare", "count_macs", "count_params", "measure"]

_aten = torch.ops.aten
# the FlopCounterMode ops that count as MACs: what nn.Conv2d runs (aten.convolution; the others
# are the lower-level convolution entry points flop_counter also has a formula for) and what
# nn.Linear runs (F.linear, inputs of any rank: addmm with a bias, mm without)
_MAC_OPS = frozenset({
    _aten.convolution, _aten._convolution, _aten.cudnn_convolution, _aten._slow_conv2d_forward,
    _aten.convolution_overrideable, _aten.mm, _aten.addmm,
})


def count_params(model: nn.Module) -> int:
    """All parameters (weights, biases, norm affine), zero or not; buffers excluded."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Measurement:
    params: int  # all parameters
    macs: int  # multiply-accumulates of conv and linear layers, per image
    latency_ms: float  # median forward time of one batch
    latency_min_ms: float
    latency_max_ms: float
    protocol: dict[str, Any]


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Conv / linear multiply-accumulates per image of one forward (eval mode, on `example[:1]`):
    half the FLOPs `torch.utils.flop_counter.FlopCounterMode` counts for convolutions and for the
    matrix products of linear layers (mm, addmm). Bias additions are not counted.

    Batched matrix products (bmm, baddbmm) and fused attention (`_scaled_dot_product_*`), i.e.
    attention's q @ k^T and attn @ v, are left out, as the forward-hook count this replaced
    (nn.Conv2d and nn.Linear modules only) left them out: FlopCounterMode's count of them depends on
    the kernel that runs, not on the model. On the CPU, F.scaled_dot_product_attention runs
    `_scaled_dot_product_flash_attention_for_cpu`, which has no FLOP formula (counts 0); its math
    backend, or an unfused attention, runs bmm (counted); the CUDA kernels have a formula (counted)."""
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(example[:1])
    flops = counter.get_flop_counts().get("Global", {})
    return sum(count for op, count in flops.items() if op in _MAC_OPS) // 2


def compare(
    models: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    *,
    batch: int = 64,
    dtype: torch.dtype = torch.float32,
    warmup: int = 5,
    repeats: int = 20,
    threads: int = 2,
    channels_last: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Measurement]:
    """Params, MACs and latency of several models under one protocol, timed interleaved.

    Protocol: eval mode, torch.inference_mode, on `device` (`threads` intra-op CPU threads), one
    fixed random batch (N(0, 1), `seed`, drawn on the CPU) of `batch` x `input_shape` in `dtype`
    (channels_last memory format for 4-D inputs unless disabled, models converted alike), `warmup`
    untimed forwards per model, then `repeats` rounds, each timing one forward of every model in
    turn (A B A B ...); latency = median wall-clock time of one forward of the whole batch. On CUDA
    the device is synchronised before the clock starts and before it stops (`_synchronize`), so a
    time covers the kernels, not their launch."""
    device = torch.device(device)
    protocol = {
        "batch": batch, "input_shape": list(input_shape), "dtype": str(dtype).replace("torch.", ""),
        "warmup": warmup, "repeats": repeats, "threads": threads, "channels_last": channels_last,
        "device": device.type, "timer": "time.perf_counter, median of repeats", "seed": seed,
        "torch": torch.__version__,
    }
    fmt = torch.channels_last if channels_last and len(input_shape) == 3 else torch.contiguous_format
    inputs = torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(seed)).to(device, dtype)
    inputs = inputs.contiguous(memory_format=fmt)
    prepared = {name: copy.deepcopy(m).eval().to(device, dtype).to(memory_format=fmt) for name, m in models.items()}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    samples: dict[str, list[float]] = {name: [] for name in prepared}
    try:
        with torch.inference_mode():
            for m in prepared.values():
                for _ in range(warmup):
                    m(inputs)
            for _ in range(repeats):
                for name, m in prepared.items():
                    _synchronize(device)
                    start = time.perf_counter()
                    m(inputs)
                    _synchronize(device)
                    samples[name].append(1000 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous)
    return {
        name: Measurement(
            params=count_params(models[name]),
            macs=count_macs(prepared[name], inputs),
            latency_ms=statistics.median(samples[name]),
            latency_min_ms=min(samples[name]),
            latency_max_ms=max(samples[name]),
            protocol=protocol,
        )
        for name in prepared
    }


def _synchronize(device: torch.device) -> None:
    """Wait for `device`'s queued kernels (CUDA runs them asynchronously); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: nn.Module, input_shape: Sequence[int], **protocol: Any) -> Measurement:
    """`compare` for one model (same keyword protocol: batch, dtype, warmup, repeats, threads, ...)."""
    return compare({"model": model}, input_shape, **protocol)["model"]


@torch.no_grad()
def max_abs_diff(a: nn.Module, b: nn.Module, inputs: torch.Tensor) -> float:
    """Largest absolute difference of the two networks' outputs (eval mode) on `inputs`."""
    a.eval()
    b.eval()
    return float((a(inputs) - b(inputs)).abs().max())

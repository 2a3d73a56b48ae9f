"""The device every stage runs on: `--device auto|cpu|cuda|cuda:N|mps`, and what is recorded of it.

Jobs receive the device as a plain string and rebuild it with :func:`resolve_device`; only the
device *type* is part of a job's identity (a CUDA artifact is never reused for a CPU run), never a
GPU index, so artifacts do not depend on which GPU ran them. Random numbers are always drawn from
CPU generators and moved to the device, so seeds mean the same thing everywhere.
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import nn

__all__ = ["DEVICE_HELP", "DeviceDescription", "device_description", "module_device", "resolve_device"]

DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and bool(backend.is_available())


def resolve_device(spec: str) -> torch.device:
    """The torch.device a `--device` value names; `auto` picks CUDA, else MPS, else CPU.

    An unknown value, or a device this machine lacks, is a one-line ValueError naming the value.
    """
    text = spec.strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise ValueError(f"--device {spec}: no MPS device is available")
        return torch.device("mps")
    kind, colon, index = text.partition(":")
    if kind != "cuda" or (colon and not index.isdigit()):
        raise ValueError(f"--device {spec}: unknown device; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: no CUDA device is available")
    if not colon:
        return torch.device("cuda")
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise ValueError(f"--device {spec}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", int(index))


class DeviceDescription(TypedDict):
    """The device fields of bench.schema.Provenance."""

    device: str
    device_name: str | None
    cuda_version: str | None
    cudnn_version: str | None


def device_description(device: torch.device | str) -> DeviceDescription:
    """What a result records of a device: its type, its name (the GPU's), and on CUDA the CUDA and
    cuDNN versions torch was built with."""
    device = torch.device(device)
    described = DeviceDescription(device=device.type, device_name=None, cuda_version=None, cudnn_version=None)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        described["device_name"] = torch.cuda.get_device_name(index)
        described["cuda_version"] = torch.version.cuda
        described["cudnn_version"] = None if cudnn is None else str(cudnn)
    elif device.type == "mps":
        described["device_name"] = "Apple MPS"
    return described


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (else buffer); CPU for a module without tensors."""
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")

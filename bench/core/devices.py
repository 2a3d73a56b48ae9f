"""The device every stage runs on: `--device auto|cpu|cuda|cuda:N|mps`, and what is recorded of it.

Jobs receive the device as a plain string and rebuild it with :func:`resolve_device`; only the
device *type* is part of a job's identity (a CUDA artifact is never reused for a CPU run), never a
GPU index, so artifacts do not depend on which GPU ran them. Random numbers are always drawn from
CPU generators and moved to the device, so seeds mean the same thing everywhere.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

import torch
from torch import nn

__all__ = [
    "DEVICE_HELP",
    "RESIDENT_MARGIN",
    "DeviceDescription",
    "cpu_name",
    "device_description",
    "device_environment",
    "fits_on_device",
    "float64_device",
    "module_device",
    "resolve_device",
]

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
    """The device fields of bench.results.schema.Provenance."""

    device: str
    device_name: str | None
    cuda_version: str | None
    cudnn_version: str | None


# settings that switch MKL's and oneDNN's CPU kernels, and so the float sums, without changing the CPU
CPU_KERNEL_SETTINGS = ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def _cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo's on Linux, else what the platform module says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_name() -> str:
    """This CPU as its float results depend on it: the model and the code path torch dispatches to
    (``ATEN_CPU_CAPABILITY``), with any MKL / oneDNN kernel setting in the environment, e.g.
    ``AMD EPYC 7B13 (ATen AVX2)``. Training repeats bit for bit only where this is the same."""
    settings = [f"ATen {torch.backends.cpu.get_cpu_capability()}"]
    settings += [f"{name}={os.environ[name]}" for name in CPU_KERNEL_SETTINGS if os.environ.get(name)]
    return f"{_cpu_model()} ({', '.join(settings)})"


def device_description(device: torch.device | str) -> DeviceDescription:
    """What a result records of a device: its type, its name (the GPU's; on the CPU, `cpu_name`), and
    on CUDA the CUDA and cuDNN versions torch was built with."""
    device = torch.device(device)
    described = DeviceDescription(device=device.type, device_name=None, cuda_version=None, cudnn_version=None)
    if device.type == "cpu":
        described["device_name"] = cpu_name()
    elif device.type == "cuda":
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


@contextmanager
def device_environment(device: torch.device | str, autotune: bool = True) -> Iterator[None]:
    """Run a job on `device`: on CUDA make its GPU the current one (a `cuda:N` job then also puts
    what it creates as plain `cuda` on GPU N) and, with `autotune`, let cuDNN time and pick its
    kernels (`torch.backends.cudnn.benchmark`: faster, but the pick, and so the float results,
    can change from run to run); both restored after. Nothing changes elsewhere, so CPU numbers
    stay what they were."""
    device = torch.device(device)
    if device.type != "cuda":
        yield
        return
    autotuned, previous = torch.backends.cudnn.benchmark, None
    if device.index is not None:
        previous = torch.cuda.current_device()
        torch.cuda.set_device(device.index)
    torch.backends.cudnn.benchmark = autotune
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = autotuned
        if previous is not None:
            torch.cuda.set_device(previous)


RESIDENT_MARGIN = 0.25  # of a GPU's memory left free for the model, activations and the allocator's cache


def fits_on_device(nbytes: int, device: torch.device | str) -> bool:
    """Whether a data set of `nbytes` should live on `device` for a whole job (uploaded once, then
    indexed there) rather than be copied batch by batch: never on the CPU (it is there already),
    on CUDA when it leaves RESIDENT_MARGIN of the GPU's memory free, elsewhere (MPS: unified memory,
    meta: no memory) always."""
    device = torch.device(device)
    if device.type == "cpu":
        return False
    if device.type != "cuda":
        return True
    free, total = torch.cuda.mem_get_info(device)
    return nbytes <= free - RESIDENT_MARGIN * total


def float64_device(device: torch.device | str) -> torch.device:
    """Where float64 work for `device` runs: the device itself, or the CPU for MPS, which has no
    float64 (so MPS gets the CPU's exact numbers)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device

"""Physically smaller networks as torch.export archives (`.pt2`).

`bench compress --export-dir` writes them, `bench eval` reads them (bench.external). An archive
holds the network's graph and weights, so it runs without the code that built it; its batch size
is dynamic, so any evaluation batch fits. The graph is exported in eval mode (BatchNorm with its
running statistics), for inference only. Unlike a state dict, an archive is not read safely:
torch.export.load unpickles its weights (`weights_only=False` inside torch), so load archives only
from sources you trust.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
from torch import nn

from bench.checkpoints import NetworkFileError, checked_bytes
from bench.io import atomic_path
from bench.pruning import count_nonzero

__all__ = ["EXPORT_SUFFIX", "ExportedNetwork", "export_network", "load_exported", "network_size", "read_exported"]

EXPORT_SUFFIX = ".pt2"


class ExportedNetwork(nn.Module):
    """An exported program as an inference module. torch.export's modules refuse train() / eval();
    the graph is fixed in eval mode, so switching modes does nothing here."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        self.graph_module = program.module()

    def train(self, mode: bool = True) -> ExportedNetwork:
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.graph_module(images)


def export_network(model: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Export `model` in eval mode with a dynamic batch size (`example`: one input batch) to `path`,
    atomically; returns the archive's sha256."""
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    payload = buffer.getvalue()
    with atomic_path(Path(path)) as temporary:
        temporary.write_bytes(payload)
    return hashlib.sha256(payload).hexdigest()


def read_exported(payload: bytes, source: str) -> ExportedNetwork:
    """The network in a torch.export archive's bytes (`source` names it in errors)."""
    try:
        program = torch.export.load(io.BytesIO(payload))
    except Exception as exc:  # torch raises many types for foreign bytes
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise NetworkFileError(f"{source}: not a torch.export archive ({type(exc).__name__}: {reason})") from exc
    return ExportedNetwork(program).eval()


def load_exported(path: Path, sha256: str | None = None) -> ExportedNetwork:
    """The network in the archive `path`; with `sha256`, the file's bytes are checked first."""
    return read_exported(checked_bytes(path, sha256), str(path))


def network_size(model: nn.Module) -> int:
    """What a network's prune ratio is measured by: for an exported (physically smaller) network its
    parameter count, zeros included (it stores every entry); else its nonzero parameters."""
    if isinstance(model, ExportedNetwork):
        return sum(p.numel() for p in model.parameters())
    return count_nonzero(model)

"""What `compress` removed: one `LayerChange` per rewritten layer, in a `CompressionReport`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerChange:
    """One conv/linear of the masked net and what compression made of it."""

    name: str
    in_channels: tuple[int, int]  # before, after
    out_channels: tuple[int, int]
    folded_inputs: int  # constant (nonzero) input channels folded into the bias
    border_correction: bool  # a folded constant meets zero padding
    gathered: bool  # reads a subset of its (kept) input's channels
    unread_inputs: int  # kept input channels with all-zero weights (cheaper than a gather)


@dataclass(frozen=True)
class CompressionReport:
    layers: list[LayerChange]
    params_before: int
    params_after: int
    scatters: int  # ExpandChannels / AddChannels modules with a scatter (residual sums, outputs)
    barriers: list[str] = field(default_factory=list)  # nodes the analysis treated as reading everything

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

"""The module types of a compressed network (`surgery.compress` builds them).

They read compact tensors: a subset of a full tensor's channels, in the original order. A conv or
linear may gather the channels it reads first (`in_index`) and carries folded constants in its
bias; `ExpandChannels` and `AddChannels` scatter compact tensors back into wider ones. Every
index op keeps the input's memory format (channels_last or contiguous).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["AddChannels", "CompressedConv2d", "CompressedLinear", "ExpandChannels", "gather_channels"]


def _is_nhwc(x: torch.Tensor) -> bool:
    """A 4-D tensor stored channels_last (and not also plain contiguous)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _rows(x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """`x` with channels on dim 1 for index ops: the (N*H*W, C) view when `like` (default `x`) is
    channels_last (a view of `x` if `x` is; index ops on it keep the memory format and run ~2x
    faster than on the permuted 4-D view), else `x` itself."""
    if _is_nhwc(x if like is None else like):
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    return x


def gather_channels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    if _is_nhwc(x):
        n, _, h, w = x.shape
        return _rows(x).index_select(1, index).view(n, h, w, -1).permute(0, 3, 1, 2)
    return x.index_select(1, index)


def _new_like(x: torch.Tensor, channels: int) -> torch.Tensor:
    shape = (x.shape[0], channels, *x.shape[2:])
    fmt = torch.channels_last if _is_nhwc(x) else torch.contiguous_format
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)


def _broadcast(vector: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return vector.view(1, -1, *([1] * (like.dim() - 2)))


class CompressedConv2d(nn.Conv2d):
    """A Conv2d over a subset of its input's channels (`in_index`, gathered first) whose bias
    holds folded constant input channels, plus their border correction where the zero padding
    hides some kernel taps (`border`: the constants' contribution per tap, (C_out, kh, kw))."""

    in_index: torch.Tensor | None  # buffers
    border: torch.Tensor | None

    def __init__(self, *args: Any, in_index: torch.Tensor | None = None, border: torch.Tensor | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("in_index", in_index)
        self.register_buffer("border", border)
        self._corrections: dict[tuple[Any, ...], list[tuple[tuple[slice, slice], torch.Tensor]]] = {}

    def _border_patches(self, h: int, w: int, ref: torch.Tensor) -> list[tuple[tuple[slice, slice], torch.Tensor]]:
        """(row slice, column slice) -> correction, for the border rows and columns of the output."""
        key = (h, w, ref.device, ref.dtype)
        if key not in self._corrections:
            assert self.border is not None
            assert isinstance(self.padding, tuple)  # surgery builds it from a conv with tuple padding
            valid = []
            for size, k, s, p, d in zip((h, w), self.kernel_size, self.stride, self.padding, self.dilation):
                out = (size + 2 * p - d * (k - 1) - 1) // s + 1
                pos = torch.arange(out)[:, None] * s - p + torch.arange(k)[None, :] * d
                valid.append((pos >= 0) & (pos < size))  # (out, k): tap inside the image
            rows, cols = valid
            invalid = ~(rows[:, None, :, None] & cols[None, :, None, :])  # (ho, wo, kh, kw)
            correction = -torch.einsum("ijkl,okl->oij", invalid.double(), self.border.double())
            ho, wo = correction.shape[1:]

            def edges(v: torch.Tensor, n: int) -> tuple[int, int]:
                bad = (~v.all(1)).tolist()
                top = next((i for i, b in enumerate(bad) if not b), n)
                bottom = next((i for i, b in enumerate(reversed(bad)) if not b), n)
                return top, bottom

            top, bottom = edges(rows, ho)
            left, right = edges(cols, wo)
            if top + bottom >= ho or left + right >= wo:
                regions = [(slice(0, ho), slice(0, wo))]
            else:
                mid = slice(top, ho - bottom)
                regions = [(slice(0, top), slice(0, wo)), (slice(ho - bottom, ho), slice(0, wo)),
                           (mid, slice(0, left)), (mid, slice(wo - right, wo))]
            patches = []
            for r, c in regions:
                if r.stop > r.start and c.stop > c.start:
                    patches.append(((r, c), correction[:, r, c].to(ref.dtype).to(ref.device).unsqueeze(0)))
            self._corrections[key] = patches
        return self._corrections[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_index is not None:
            x = gather_channels(x, self.in_index)
        out = self._conv_forward(x, self.weight, self.bias)
        if self.border is not None:
            for (r, c), patch in self._border_patches(x.shape[2], x.shape[3], out):
                out[:, :, r, c] += patch
        return out


class CompressedLinear(nn.Linear):
    """A Linear over a subset of its input features (`in_index`); folded constants in the bias."""

    in_index: torch.Tensor | None  # buffer

    def __init__(self, *args: Any, in_index: torch.Tensor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("in_index", in_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_index is not None:
            x = x.index_select(1, self.in_index)
        return super().forward(x)


class ExpandChannels(nn.Module):
    """Scatter a compact tensor into `width` channels at `index`, the others set to `fill`."""

    index: torch.Tensor  # buffers
    fill: torch.Tensor

    def __init__(self, index: torch.Tensor, fill: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index)
        self.register_buffer("fill", fill)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _new_like(x, self.fill.numel())
        out.copy_(_broadcast(self.fill, out).expand_as(out))
        _rows(out).index_copy_(1, self.index, _rows(x, like=out))
        return out

    def extra_repr(self) -> str:
        return f"{self.index.numel()} -> {self.fill.numel()} channels"


class AddChannels(nn.Module):
    """a + b for compact operands: each scattered to the `width` channels of the sum (index
    None: it already has them), plus `const` (constant channels of one operand whose partner
    channel is kept)."""

    index_a: torch.Tensor | None  # buffers
    index_b: torch.Tensor | None
    const: torch.Tensor | None

    def __init__(self, width: int, index_a: torch.Tensor | None, index_b: torch.Tensor | None,
                 const: torch.Tensor | None) -> None:
        super().__init__()
        self.width = width
        self.register_buffer("index_a", index_a)
        self.register_buffer("index_b", index_b)
        self.register_buffer("const", const)

    @staticmethod
    def _add_into(out: torch.Tensor, index: torch.Tensor, x: torch.Tensor) -> None:
        _rows(out).index_add_(1, index, _rows(x, like=out))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.index_a is None and self.index_b is None:
            out = a + b
        elif self.index_a is None or self.index_b is None:
            full, part, index = (a, b, self.index_b) if self.index_a is None else (b, a, self.index_a)
            assert index is not None  # exactly one index is None here
            out = full.clone(memory_format=torch.preserve_format)
            self._add_into(out, index, part)
        else:
            out = _new_like(a, self.width).zero_()
            self._add_into(out, self.index_a, a)
            self._add_into(out, self.index_b, b)
        if self.const is not None:
            out.add_(_broadcast(self.const, out))
        return out

    def extra_repr(self) -> str:
        def n(index: torch.Tensor | None) -> str:
            return "all" if index is None else str(index.numel())

        return f"width={self.width}, a={n(self.index_a)}, b={n(self.index_b)}"

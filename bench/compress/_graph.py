"""The graph side of channel removal: which torch.fx nodes keep, read or change the channel axis
(elementwise ops, pools, pads, flattens, sums), and the shapes and arguments the rewrite reads.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d,
)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.hardswish, F.elu, torch.sigmoid,
    torch.tanh, F.sigmoid, F.tanh,
}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}
_SCALAR_OPS = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.mul}
_POOL_FUNCTIONS = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
_PAD_FUNCTIONS = {F.pad, torch._C._nn.pad}
_ADD_FUNCTIONS = {operator.add, torch.add}
_FLATTEN_FUNCTIONS = {torch.flatten}


# ---- analysis and rewrite ---------------------------------------------------------------------


@dataclass
class _Info:
    """A tensor of the new graph: `node` holds channels `kept` (sorted, original numbering) of a
    `const.numel()`-channel tensor; the others are constant `const` (0 where unneeded)."""

    node: fx.Node
    kept: torch.Tensor
    const: torch.Tensor

    @property
    def width(self) -> int:
        return self.const.numel()

    def is_full(self) -> bool:
        return self.kept.numel() == self.width


def _meta(node: Any) -> TensorMetadata | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return meta if isinstance(meta, TensorMetadata) and len(meta.shape) >= 2 else None


def _shape(node: Any) -> torch.Size:
    """The shape of a tracked tensor (one whose `_meta` is known)."""
    meta = _meta(node)
    assert meta is not None
    return meta.shape


def _input(node: fx.Node) -> fx.Node:
    """The tensor that a conv, linear, BatchNorm or pad node reads: its first argument."""
    arg = node.args[0]
    assert isinstance(arg, fx.Node)
    return arg


def _node_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _channel_pad(node: fx.Node, modules: Mapping[str, nn.Module]) -> tuple[int, int] | None:
    """(front, back) channels of an F.pad that pads only the channel axis of a 4-D tensor with zeros."""
    args = list(node.args) + [None] * 4
    pad = node.kwargs.get("pad", args[1])
    mode = node.kwargs.get("mode", args[2] if args[2] is not None else "constant")
    value = node.kwargs.get("value", args[3])
    meta = _meta(node.args[0])
    if meta is None or len(meta.shape) != 4 or mode != "constant" or value not in (None, 0, 0.0):
        return None
    if not isinstance(pad, (tuple, list)) or len(pad) != 6 or any(p != 0 for p in pad[:4]):
        return None
    front, back = pad[4], pad[5]
    return (front, back) if isinstance(front, int) and isinstance(back, int) and front >= 0 and back >= 0 else None


def _keeps_channels(index: Any) -> bool:
    """x[index] leaves dims 0 and 1 alone (only slices after them)."""
    if not isinstance(index, tuple) or len(index) < 2:
        return False
    full = slice(None, None, None)
    return index[0] == full and index[1] == full and all(isinstance(i, slice) for i in index)


def _flattens_pooled(node: fx.Node, start: Any, end: Any) -> bool:
    meta = _meta(node.args[0])
    return (meta is not None and start == 1 and end in (-1, len(meta.shape) - 1)
            and math.prod(meta.shape[2:]) == 1)


def _flatten_ok(node: fx.Node) -> bool:
    """torch.flatten(x, 1) / x.flatten(1) of an (N, C, 1, 1) tensor: channels stay features."""
    start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
    end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
    return _flattens_pooled(node, start, end)


def _mean_over_space(node: fx.Node) -> bool:
    meta = _meta(node.args[0])
    dims: Any = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)  # int or ints
    if meta is None or dims is None:
        return False
    dims = [dims] if isinstance(dims, int) else list(dims)
    ndim = len(meta.shape)
    return all(isinstance(d, int) for d in dims) and all(d % ndim >= 2 for d in dims) and \
        not any(k not in ("dim", "keepdim") for k in node.kwargs) and len(node.args) <= 3


def _classify(node: fx.Node, modules: Mapping[str, nn.Module], calls: Mapping[str, int]) -> str:
    """conv, linear, bn, elementwise, scalar, same (channel- and constant-preserving), pad, add,
    shape (reads a non-channel size), source, output or barrier (reads every channel)."""
    if node.op in ("placeholder", "get_attr"):
        return "source"
    if node.op == "output":
        return "output"
    tracked = [a for a in _node_args(node) if _meta(a) is not None]
    if _reads_non_channel_size(node, tracked):
        return "shape"
    if len(tracked) != len(_node_args(node)):  # an untracked tensor/shape argument
        return "barrier"
    if _meta(node) is None or len(tracked) != 1 and not (node.target in _ADD_FUNCTIONS and len(tracked) == 2):
        return "barrier"
    (src,) = tracked[:1]
    if node.op == "call_module":
        assert isinstance(node.target, str)
        m = modules[node.target]
        stateful = any(True for _ in m.parameters()) or any(True for _ in m.buffers())
        if stateful and calls[node.target] > 1 or len(node.args) != 1 or node.kwargs:
            return "barrier"  # (a shared conv/BN is kept whole; shared ReLUs and pools are fine)
        if isinstance(m, nn.Conv2d) and type(m) is nn.Conv2d:
            ok = m.groups == 1 and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
            return "conv" if ok else "barrier"
        if type(m) is nn.Linear:
            return "linear" if len(_shape(src)) == 2 else "barrier"
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.track_running_stats and m.running_mean is not None:
            return "bn"
        if isinstance(m, _ELEMENTWISE_MODULES):
            return "elementwise"
        if isinstance(m, (nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            return "same"
        if isinstance(m, nn.AvgPool2d) and m.padding in (0, (0, 0)):
            return "same"
        if isinstance(m, nn.Flatten) and _flattens_pooled(node, m.start_dim, m.end_dim):
            return "same"
        return "barrier"
    if node.op == "call_function":
        target = node.target
        if target in _ADD_FUNCTIONS and len(tracked) == 2:
            a, b = node.args[:2] if len(node.args) >= 2 else (None, None)
            same = isinstance(a, fx.Node) and isinstance(b, fx.Node) and _shape(a) == _shape(b)
            return "add" if same and not node.kwargs and len(node.args) == 2 else "barrier"
        if node.args[0] is not src:
            return "scalar" if target in _SCALAR_OPS and _scalar_op(node) else "barrier"
        if target in _ELEMENTWISE_FUNCTIONS:
            return "elementwise"
        if target in _SCALAR_OPS:
            return "scalar" if _scalar_op(node) else "barrier"
        if target in _POOL_FUNCTIONS:
            return "same"
        if target is operator.getitem and len(node.args) == 2 and _keeps_channels(node.args[1]):
            return "same"
        if target in _PAD_FUNCTIONS and _channel_pad(node, modules) is not None:
            return "pad"
        if target in _FLATTEN_FUNCTIONS and _flatten_ok(node):
            return "same"
        return "barrier"
    if node.op == "call_method" and node.args[0] is src:
        if node.target in _ELEMENTWISE_METHODS:
            return "elementwise"
        if node.target == "flatten" and _flatten_ok(node):
            return "same"
        if node.target == "mean" and _mean_over_space(node):
            return "same"
    return "barrier"


def _reads_non_channel_size(node: fx.Node, tracked: list[fx.Node]) -> bool:
    """x.size(d) for d != 1: the same on the compact tensor, and it reads no channel."""
    if node.op != "call_method" or node.target != "size" or len(tracked) != 1 or node.args[0] is not tracked[0]:
        return False
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    return isinstance(dim, int) and dim % len(_shape(tracked[0])) != 1


def _scalar_op(node: fx.Node) -> bool:
    """x op number (or number op x): elementwise, applied the same to every channel."""
    return len(node.args) == 2 and not node.kwargs and \
        sum(isinstance(a, fx.Node) for a in node.args) == 1 and \
        all(isinstance(a, (fx.Node, int, float)) for a in node.args)


def _weight_reads(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in) bool: output row o has a nonzero weight on input channel c."""
    return weight.detach().ne(0).flatten(2).any(2) if weight.dim() > 2 else weight.detach().ne(0)


def source_arg(node: fx.Node) -> fx.Node:
    """The first argument of `node` that is a tracked tensor."""
    return next(a for a in _node_args(node) if _meta(a) is not None)


def needed_channels(nodes: list[fx.Node], kinds: Mapping[fx.Node, str], modules: Mapping[Any, Any]
                    ) -> dict[fx.Node, torch.Tensor]:
    """The backward pass: per tracked node, which of its channels anything downstream reads."""
    need: dict[Any, torch.Tensor] = {n: torch.zeros(_shape(n)[1], dtype=torch.bool) for n in nodes if _meta(n) is not None}
    for node in reversed(nodes):
        kind = kinds[node]
        if kind in ("barrier", "output"):
            for arg in _node_args(node):
                if arg in need:
                    need[arg][:] = True
            continue
        if kind in ("source", "shape"):
            continue
        out = need[node]
        if kind in ("conv", "linear"):
            reads = _weight_reads(modules[node.target].weight)
            need[node.args[0]] |= reads[out].any(0)
        elif kind == "pad":
            pad = _channel_pad(node, modules)
            assert pad is not None
            front, _ = pad
            src = node.args[0]
            need[src] |= out[front:front + need[src].numel()]
        elif kind == "add":
            for operand in node.args[:2]:
                need[operand] |= out
        else:  # bn, elementwise, scalar, same
            need[source_arg(node)] |= out
    return need


def fetch_attr(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value

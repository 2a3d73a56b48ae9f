"""Graph analysis and channel removal: rewrite a masked network (traced with torch.fx) into a
smaller one with the same function.

**Which channels are removed.** Every tensor with a channel axis (dim 1) is analysed per channel:

* *needed* (backward pass from the outputs): a channel is needed when some consumer reads it: a
  conv/linear whose weight on it is nonzero in a needed output row, an elementwise op or pool
  whose output channel is needed, either operand of a needed sum, or anything the analysis does
  not understand (a *barrier*: reshapes, concatenations, ...; it reads all channels);
* *constant* (forward pass): a channel is constant when its value is the same at every position
  and for every input, and known: a conv/linear output whose nonzero weights read only constant
  channels (the output is then bias + sum of constants, provided the conv has no zero padding or
  the constants it reads are 0; a zero-padded conv reading a nonzero constant gives a
  border-dependent map, which is *not* constant), and BatchNorm / activations / pools /
  channel-only slicing and padding of a constant, the sum of two constants, the zero channels
  that option-A shortcuts pad in.

A channel is **kept** (computed in the compressed net) iff it is needed and not constant; all
others are removed. Unneeded channels are dropped outright. A needed constant channel k is folded
into every consumer exactly:

* a linear or unpadded conv adds k * sum(W[:, c]) to its bias;
* a zero-padded conv adds the interior value k * sum(W[:, c]) to its bias and corrects its
  border rows/columns, where some kernel taps fall on the padding, by - k * sum(W[:, c] over
  those taps) (`CompressedConv2d.border`, (C_out, kh, kw) per layer, resolution-independent);
* a residual sum with a kept partner channel adds k to it (`AddChannels`);
* BatchNorm (eval), activations, pools and channel-only slicing/padding map it to another
  known constant, computed by running the original op on the constants.

So FT's zeroed filters (whose BatchNorm shift still makes them output relu(beta') != 0) are
removed together with the consumers' input columns, and PFP's pruned input channels remove their
producing filters. Residual streams keep their width where any block writes to a channel;
a consumer that reads only part of a kept tensor gathers its channels first (`in_index`) when
that drops at least `MIN_GATHER_FRACTION` of them (else it keeps zero weight columns: a gather
copies the input), and a sum whose operands keep different channels scatters one into the other.
Outputs, and the inputs of barriers, are restored to their full width (constants filled in).
A module with parameters or buffers called at several places of the graph is a barrier too.

Exactness: every rewrite is an algebraic identity on the masked network in eval mode (BatchNorm
uses running statistics); only float rounding differs (the test asserts 1e-5 on the logits).
The compressed network is for inference: BatchNorm keeps its running statistics but the
structure no longer matches the parent's state dict.

The node tables and graph helpers: bench.compress._graph.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from bench.compress._graph import (
    _channel_pad,
    _classify,
    _Info,
    _input,
    _meta,
    _shape,
    _weight_reads,
    fetch_attr,
    needed_channels,
    source_arg,
)
from bench.compress.measure import count_params
from bench.compress.modules import AddChannels, CompressedConv2d, CompressedLinear, ExpandChannels
from bench.compress.report import CompressionReport, LayerChange

__all__ = [
    "MIN_GATHER_FRACTION",
    "TOLERANCE",
    "CompressionReport",
    "LayerChange",
    "compress",
]

TOLERANCE = 1e-5  # max abs logit difference accepted between masked and compressed nets
# a gather copies its input (~1/4 of a 16->16 3x3 conv's time at 32x32 on CPU, channels_last), so
# a layer gathers only when it drops at least this fraction of its kept input's channels
MIN_GATHER_FRACTION = 0.25


class _Compressor:
    """The rewrite: traces `model`, runs the backward analysis, then builds the compressed graph node by node."""

    def __init__(self, model: nn.Module, example: torch.Tensor, min_gather: float) -> None:
        self.min_gather = min_gather
        self.gm = fx.symbolic_trace(model)
        ShapeProp(self.gm).propagate(example)
        self.modules = dict(self.gm.named_modules())
        self.nodes = list(self.gm.graph.nodes)
        calls: dict[str, int] = {}
        for node in self.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        self.kinds = {node: _classify(node, self.modules, calls) for node in self.nodes}
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.env: dict[fx.Node, Any] = {}  # untracked old node -> new node
        self.info: dict[fx.Node, _Info] = {}
        self.expanded: dict[tuple[fx.Node, tuple[int, ...]], fx.Node] = {}
        self.layers: list[LayerChange] = []
        self.scatters = 0
        self.need = needed_channels(self.nodes, self.kinds, self.modules)

    # -- forward: build the compressed graph --

    def _add_module(self, node: fx.Node, module: nn.Module) -> str:
        name = node.name
        self.root.add_module(name, module)
        return name

    def _set(self, node: fx.Node, new: fx.Node, kept: torch.Tensor, const: torch.Tensor) -> None:
        const = const.clone()
        const[kept] = 0
        const[~self.need[node]] = 0
        self.info[node] = _Info(new, kept, const)

    def _full(self, node: fx.Node) -> fx.Node:
        """The new node holding `node`'s tensor at its full width."""
        info = self.info[node]
        return info.node if info.is_full() else self._expand(node, torch.arange(info.width))

    def _expand(self, node: fx.Node, target: torch.Tensor) -> fx.Node:
        info = self.info[node]
        if torch.equal(info.kept, target):
            return info.node
        key = (node, tuple(target.tolist()))
        if key not in self.expanded:
            index = torch.searchsorted(target, info.kept)
            name = f"{node.name}_expand{len(self.expanded)}"
            self.root.add_module(name, ExpandChannels(index, info.const[target].clone()))
            self.expanded[key] = self.graph.call_module(name, (info.node,))
            self.scatters += 1
        return self.expanded[key]

    def _arg(self, node: Any) -> Any:
        """Map an old argument to the new graph, at full width (for barriers and outputs)."""
        if node in self.info:
            return self._full(node)
        return self.env[node]

    def run(self) -> fx.GraphModule:
        barriers: list[str] = []
        for node in self.nodes:
            kind = self.kinds[node]
            getattr(self, f"_do_{kind}")(node)
            if kind == "barrier" and node.op != "get_attr":
                barriers.append(node.name)
        self.barriers = barriers
        gm = fx.GraphModule(self.root, self.graph, class_name="CompressedModule")
        gm.eval()
        return gm

    def _do_source(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            new = self.graph.node_copy(node)
        else:
            assert isinstance(node.target, str)
            value = fetch_attr(self.gm, node.target)
            name = f"{node.name}_attr"
            if isinstance(value, nn.Parameter):
                self.root.register_parameter(name, nn.Parameter(value.detach().clone(), value.requires_grad))
            elif isinstance(value, torch.Tensor):
                self.root.register_buffer(name, value.detach().clone())
            else:
                setattr(self.root, name, copy.deepcopy(value))
            new = self.graph.get_attr(name)
        self._record(node, new)

    def _record(self, node: fx.Node, new: fx.Node) -> None:
        meta = _meta(node)
        if meta is None:
            self.env[node] = new
        else:
            channels = meta.shape[1]
            self._set(node, new, torch.arange(channels), torch.zeros(channels, dtype=meta.dtype))

    def _do_barrier(self, node: fx.Node) -> None:
        if node.op == "call_module":
            name = f"{node.name}_module"
            self.root.add_module(name, copy.deepcopy(self.modules[node.target]))
            new = self.graph.create_node("call_module", name, fx.node.map_arg(node.args, self._arg),
                                         fx.node.map_arg(node.kwargs, self._arg), node.name)
        else:
            new = self.graph.node_copy(node, self._arg)
        self._record(node, new)

    def _do_shape(self, node: fx.Node) -> None:
        self.env[node] = self.graph.node_copy(node, lambda n: self.info[n].node if n in self.info else self.env[n])

    def _do_output(self, node: fx.Node) -> None:
        self.graph.output(fx.node.map_arg(node.args[0], self._arg))

    def _constant_of(self, node: fx.Node, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        src = self.info[source_arg(node)]
        ndim = len(_shape(node))
        probe = src.const.view(1, -1, *([1] * (ndim - 2)))
        with torch.no_grad():
            return fn(probe.clone()).reshape(-1)

    def _do_same(self, node: fx.Node) -> None:
        src = self.info[source_arg(node)]
        new = self.graph.node_copy(node, lambda n: self.info[n].node if n in self.info else self.env[n])
        if node.op == "call_module":  # the module itself is unchanged (pools, flatten)
            new.target = self._add_module(node, copy.deepcopy(self.modules[node.target]))
        self._set(node, new, src.kept, src.const)

    def _do_elementwise(self, node: fx.Node) -> None:
        src = self.info[source_arg(node)]
        if node.op == "call_module":
            module = copy.deepcopy(self.modules[node.target])
            if isinstance(module, nn.Identity):
                self._set(node, src.node, src.kept, src.const)
                return
            name = self._add_module(node, module)
            new = self.graph.call_module(name, (src.node,))
            const = self._constant_of(node, module)
        else:
            new = self.graph.node_copy(node, lambda n: self.info[n].node if n in self.info else self.env[n])
            target = node.target
            if node.op == "call_method":
                assert isinstance(target, str)
                method = target
                const = self._constant_of(node, lambda x: getattr(x, method)(*node.args[1:], **node.kwargs))
            else:
                assert callable(target)
                fn = target
                const = self._constant_of(node, lambda x: fn(x, *node.args[1:], **node.kwargs))
        self._set(node, new, src.kept, const)

    def _do_scalar(self, node: fx.Node) -> None:
        src = self.info[source_arg(node)]
        new = self.graph.node_copy(node, lambda n: self.info[n].node)
        fn = node.target
        assert callable(fn)

        def apply(x: torch.Tensor) -> torch.Tensor:
            return fn(*(x if isinstance(a, fx.Node) else a for a in node.args))

        self._set(node, new, src.kept, self._constant_of(node, apply))

    def _do_pad(self, node: fx.Node) -> None:
        src = self.info[_input(node)]
        pad = _channel_pad(node, self.modules)
        assert pad is not None
        front, back = pad
        const = torch.cat([src.const.new_zeros(front), src.const, src.const.new_zeros(back)])
        self._set(node, src.node, src.kept + front, const)  # the compact tensor is unchanged

    def _do_add(self, node: fx.Node) -> None:
        arg_a, arg_b = node.args[:2]
        assert isinstance(arg_a, fx.Node) and isinstance(arg_b, fx.Node)
        a, b = self.info[arg_a], self.info[arg_b]
        width = a.width
        in_a = torch.zeros(width, dtype=torch.bool)
        in_a[a.kept] = True
        in_b = torch.zeros(width, dtype=torch.bool)
        in_b[b.kept] = True
        kept_mask = in_a | in_b  # (an operand may keep channels the sum's consumers do not read)
        kept = kept_mask.nonzero().flatten()
        # constants of one operand whose partner channel is kept
        const_in = torch.where(in_a, torch.zeros_like(a.const), a.const) + \
            torch.where(in_b, torch.zeros_like(b.const), b.const)
        extra = torch.where(kept_mask & (in_a ^ in_b), const_in, torch.zeros_like(const_in))[kept]
        index_a = None if torch.equal(a.kept, kept) else torch.searchsorted(kept, a.kept)
        index_b = None if torch.equal(b.kept, kept) else torch.searchsorted(kept, b.kept)
        module = AddChannels(kept.numel(), index_a, index_b, extra if extra.ne(0).any() else None)
        if index_a is not None or index_b is not None:
            self.scatters += 1
        name = self._add_module(node, module)
        new = self.graph.call_module(name, (a.node, b.node))
        self._set(node, new, kept, a.const + b.const)

    def _do_bn(self, node: fx.Node) -> None:
        src = self.info[_input(node)]
        old = self.modules[node.target]
        const = self._constant_of(node, old)
        if src.is_full():
            module = copy.deepcopy(old)
        else:
            k = src.kept
            module = type(old)(k.numel(), eps=old.eps, momentum=old.momentum, affine=old.affine,
                               track_running_stats=True)
            with torch.no_grad():
                if old.affine:
                    module.weight.copy_(old.weight[k])
                    module.bias.copy_(old.bias[k])
                module.running_mean.copy_(old.running_mean[k])
                module.running_var.copy_(old.running_var[k])
                module.num_batches_tracked.copy_(old.num_batches_tracked)
        module.eval()
        new = self.graph.call_module(self._add_module(node, module), (src.node,))
        self._set(node, new, src.kept, const)

    def _do_conv(self, node: fx.Node) -> None:
        self._weighted(node, self.modules[node.target])

    def _do_linear(self, node: fx.Node) -> None:
        self._weighted(node, self.modules[node.target])

    def _weighted(self, node: fx.Node, old: nn.Conv2d | nn.Linear) -> None:
        src = self.info[_input(node)]
        conv = isinstance(old, nn.Conv2d)
        weight = old.weight.detach()
        w4 = weight if conv else weight[:, :, None, None]
        c_out, c_in = w4.shape[:2]
        reads = _weight_reads(w4)
        in_kept = torch.zeros(c_in, dtype=torch.bool)
        in_kept[src.kept] = True
        # contribution of the constant input channels, per output and kernel tap
        taps = torch.einsum("c,ockl->okl", src.const.double(), w4.double())
        padding = old.padding if isinstance(old, nn.Conv2d) else ()
        assert isinstance(padding, tuple)  # _classify: a conv's padding is a tuple
        padded = any(p > 0 for p in padding)
        bias = old.bias.detach().double() if old.bias is not None else torch.zeros(c_out, dtype=torch.float64)
        varies = (reads & in_kept).any(1)
        if padded:
            varies |= taps.flatten(1).ne(0).any(1)
        need = self.need[node]
        kept_mask = need & varies
        if not kept_mask.any():
            kept_mask[int(need.nonzero()[0]) if need.any() else 0] = True
        kept_out = kept_mask.nonzero().flatten()
        const_out = (bias + taps.sum((1, 2))).to(src.const.dtype)

        read_in = reads[kept_out].any(0) & in_kept
        if not read_in.any():
            read_in[src.kept[0]] = True
        vin = read_in.nonzero().flatten()
        unread = src.kept.numel() - vin.numel()
        if unread and unread < self.min_gather * src.kept.numel():
            vin = src.kept  # gathering (a copy of the input) would cost more than these zero columns
        pos = torch.searchsorted(src.kept, vin)
        in_index = None if torch.equal(pos, torch.arange(src.kept.numel())) else pos
        new_weight = w4[kept_out][:, vin].contiguous()
        folded = bool(taps[kept_out].ne(0).any())
        new_bias = (bias[kept_out] + taps[kept_out].sum((1, 2))).to(weight.dtype)
        has_bias = old.bias is not None or folded
        border = padded and folded
        module: CompressedConv2d | CompressedLinear
        if isinstance(old, nn.Conv2d):
            module = CompressedConv2d(
                vin.numel(), kept_out.numel(), old.kernel_size, stride=old.stride, padding=old.padding,
                dilation=old.dilation, bias=has_bias, in_index=in_index,
                border=taps[kept_out].to(weight.dtype).contiguous() if border else None,
            )
        else:
            module = CompressedLinear(vin.numel(), kept_out.numel(), bias=has_bias, in_index=in_index)
            new_weight = new_weight[:, :, 0, 0]
        with torch.no_grad():
            module.weight.copy_(new_weight)
            if has_bias:
                assert module.bias is not None
                module.bias.copy_(new_bias)
        module.to(device=weight.device)
        new = self.graph.call_module(self._add_module(node, module), (src.node,))
        folded_inputs = int((src.const.ne(0) & reads[kept_out].any(0)).sum())
        self.layers.append(LayerChange(
            name=str(node.target), in_channels=(c_in, vin.numel()), out_channels=(c_out, kept_out.numel()),
            folded_inputs=folded_inputs, border_correction=border, gathered=in_index is not None,
            unread_inputs=int((~reads[kept_out][:, vin].any(0)).sum()),
        ))
        self._set(node, new, kept_out, const_out)


def compress(
    model: nn.Module,
    example: torch.Tensor | Sequence[int] = (1, 3, 32, 32),
    min_gather_fraction: float = MIN_GATHER_FRACTION,
) -> tuple[fx.GraphModule, CompressionReport]:
    """Physically remove the dead channels of a (structured-)masked network; see the module doc.

    `example`: an input batch or its shape (spatial sizes are traced; the compressed net works at
    any resolution the original does). A conv/linear whose kept input holds channels it does not
    read gathers the ones it reads only when that drops at least `min_gather_fraction` of them
    (0: always); otherwise it keeps zero weight columns. The original model is not modified.
    Returns the compressed network (a torch.fx GraphModule, eval mode) and what was removed."""
    device = next(model.parameters()).device
    source = copy.deepcopy(model).cpu().eval()  # analysis and rewrite on the CPU
    if not isinstance(example, torch.Tensor):
        example = torch.zeros(tuple(example), dtype=next(source.parameters()).dtype)
    with torch.no_grad():
        compressor = _Compressor(source, example.cpu(), min_gather_fraction)
        compressed = compressor.run().to(device)
    report = CompressionReport(
        layers=compressor.layers,
        params_before=count_params(model),
        params_after=count_params(compressed),
        scatters=compressor.scatters,
        barriers=compressor.barriers,
    )
    return compressed, report

"""Real compression of structured-pruned networks: physically remove dead channels.

Pruners mask: a pruned filter is a zeroed weight row, and the network keeps its shape. This
package rewrites a masked network (traced with torch.fx) into a smaller one with the same
function, and measures params, MACs and latency of both.

* `surgery`: graph analysis and channel removal (`compress`; which channels go and why: its doc);
* `modules`: the module types of a compressed network (`CompressedConv2d`, `AddChannels`, ...);
* `measure`: params, MACs and latency under one timing protocol (`compare`, `measure`);
* `driver`: `bench compress` over a finished run (`compress_run`), its report and table.

Layer: compress. May import: bench.core, bench.corruptions, bench.results, bench.reports, bench.data,
bench.models, bench.pruning, bench.pipeline.
"""

from bench.compress.driver import (
    NetworkCompression,
    RunCompression,
    compress_run,
    compression_table,
)
from bench.compress.measure import (
    Measurement,
    compare,
    count_macs,
    count_params,
    max_abs_diff,
    measure,
)
from bench.compress.modules import (
    AddChannels,
    CompressedConv2d,
    CompressedLinear,
    ExpandChannels,
)
from bench.compress.surgery import (
    MIN_GATHER_FRACTION,
    TOLERANCE,
    CompressionReport,
    LayerChange,
    compress,
)

__all__ = [
    "MIN_GATHER_FRACTION",
    "TOLERANCE",
    "AddChannels",
    "CompressedConv2d",
    "CompressedLinear",
    "CompressionReport",
    "ExpandChannels",
    "LayerChange",
    "Measurement",
    "NetworkCompression",
    "RunCompression",
    "compare",
    "compress",
    "compress_run",
    "compression_table",
    "count_macs",
    "count_params",
    "max_abs_diff",
    "measure",
]

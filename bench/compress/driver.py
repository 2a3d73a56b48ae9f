"""`bench compress`: compress the structured networks of a finished run, check them against the
masked ones, time both, and write the comparison (JSON models, markdown table)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.compress.measure import compare, max_abs_diff
from bench.compress.surgery import TOLERANCE, compress
from bench.pipeline.exported import EXPORT_SUFFIX, export_network
from bench.pipeline.store import NETWORK_SUFFIX
from bench.results.schema import Strict

__all__ = ["NetworkCompression", "RunCompression", "compress_run", "compression_table", "structured_pruners"]


class NetworkCompression(Strict):
    network: str
    pruner: str
    step: int
    prune_ratio: float  # measured, from the result file (nonzero parameters)
    params_dense: int  # all parameters of the masked network
    params_compressed: int
    macs_dense: int  # conv + linear multiply-accumulates per image
    macs_compressed: int
    latency_dense_ms: float  # median of one batch
    latency_compressed_ms: float
    speedup: float  # latency dense / compressed
    max_abs_diff: float  # of the logits on the checked test images
    scatters: int
    exported: str | None = None  # the torch.export archive written (`--export-dir`), if any


class RunCompression(Strict):
    result: str
    dataset: str
    model: str
    config_hash: str
    checked_images: int
    tolerance: float
    protocol: dict[str, Any]
    networks: list[NetworkCompression]

    @property
    def exact(self) -> bool:
        return all(n.max_abs_diff <= self.tolerance for n in self.networks)


def structured_pruners(names: Sequence[str]) -> list[str]:
    from bench.pruning import load_pruner

    return [name for name in names if load_pruner(name).structured]


def compress_run(
    result: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    pruners: Sequence[str] | None = None,
    batch: int = 64,
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = None,
    check_images: int = 256,
    progress: bool = False,
    export_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> RunCompression:
    """Compress every network of the run's structured pruners (or of `pruners`) read back from
    its job cache (default `<result folder>/.cache`); check the logits on the first
    `check_images` test images and time dense vs compressed (`compare`: the run's thread count
    and memory format unless `threads` is given). `export_dir`: also write each compressed network
    there as a torch.export archive `<pruner>-<step>.pt2` (bench.pipeline.exported; `bench eval` reads it).
    `device`: a `--device` value; the latencies are timed there (surgery and the logit check stay on
    the CPU), and the protocol records its type."""
    from bench.core.devices import resolve_device
    from bench.pipeline.jobs import job_environment, open_run

    path = Path(result)
    device = str(resolve_device(device))
    run = open_run(path, cache_dir)
    config, data = run.result.config, run.data
    available = structured_pruners(config.pruners)
    if pruners is None:
        chosen = available
    else:
        unknown = [p for p in pruners if p not in config.pruners]
        if unknown:
            raise ValueError(f"pruner(s) {', '.join(unknown)} not in this run ({', '.join(config.pruners)})")
        unstructured = [p for p in pruners if p not in available]
        if unstructured:
            raise ValueError(f"pruner(s) {', '.join(unstructured)} are not structured: nothing to remove physically")
        chosen = list(pruners)
    if not chosen:
        raise ValueError(f"run {path.name} has no structured pruner ({', '.join(config.pruners)})")
    images = data.normalize(next(iter(data.test.batches(check_images)))[0])
    input_shape = tuple(images.shape[1:])
    n_threads, channels_last = config.threads if threads is None else threads, config.channels_last
    rows: list[NetworkCompression] = []
    protocol: dict[str, Any] = {}
    refs = [ref for ref in run.refs() if ref.pruner in chosen]
    with job_environment(config, device):
        for ref in refs:
            dense = run.load(ref)
            compressed, report = compress(dense, images[:1])
            diff = max_abs_diff(dense, compressed, images)
            m = compare({"dense": dense, "compressed": compressed}, input_shape, batch=batch, warmup=warmup,
                        repeats=repeats, threads=n_threads, channels_last=channels_last, device=device)
            protocol = m["dense"].protocol
            ratio = run.prune_ratio(ref)
            exported = None
            if export_dir is not None:
                exported = Path(export_dir) / (ref.file_name.removesuffix(NETWORK_SUFFIX) + EXPORT_SUFFIX)
                export_network(compressed, images, exported)
            rows.append(NetworkCompression(
                network=run.label(ref), pruner=ref.pruner, step=ref.step, prune_ratio=ratio,
                params_dense=m["dense"].params, params_compressed=m["compressed"].params,
                macs_dense=m["dense"].macs, macs_compressed=m["compressed"].macs,
                latency_dense_ms=m["dense"].latency_ms, latency_compressed_ms=m["compressed"].latency_ms,
                speedup=m["dense"].latency_ms / m["compressed"].latency_ms, max_abs_diff=diff,
                scatters=report.scatters, exported=None if exported is None else str(exported),
            ))
            if progress:
                print(f"compressed {rows[-1].network}", file=sys.stderr)
    return RunCompression(
        result=str(path), dataset=config.dataset, model=config.model, config_hash=config.config_hash(),
        checked_images=int(images.shape[0]), tolerance=TOLERANCE, protocol=protocol, networks=rows,
    )


def compression_table(report: RunCompression) -> str:
    """Markdown: one row per compressed network."""
    from bench.reports.markdown import escape, table

    def count(n: int) -> str:
        return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)

    headers = ["network", "ratio %", "params dense", "params compr.", "MACs dense", "MACs compr.",
               "latency dense ms", "latency compr. ms", "speedup", "max abs Δ logit"]
    rows = [[escape(n.network), f"{100 * n.prune_ratio:.1f}", count(n.params_dense), count(n.params_compressed),
             count(n.macs_dense), count(n.macs_compressed), f"{n.latency_dense_ms:.2f}",
             f"{n.latency_compressed_ms:.2f}", f"{n.speedup:.2f}x", f"{n.max_abs_diff:.1e}"]
            for n in report.networks]
    p = report.protocol
    lines = [
        f"### {escape(report.dataset)} / {escape(report.model)}: masked (dense) vs compressed",
        "",
        table(rows, headers),
        "",
        (f"Latency: median of {p.get('repeats')} interleaved forwards of a batch of {p.get('batch')} "
         f"on {p.get('device', 'cpu')} ({p.get('dtype')}, {'channels_last' if p.get('channels_last') else 'NCHW'}, threads={p.get('threads')}, "
         f"{p.get('warmup')} warm-up); MACs: conv + linear per image; params: all parameters; "
         f"max abs Δ logit on {report.checked_images} test images (tolerance {report.tolerance:g})."),
    ]
    return "\n".join(lines)

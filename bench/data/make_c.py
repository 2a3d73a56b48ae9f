"""Generate corrupted test sets in the official CIFAR-10-C file layout (`bench data make-c`).

Layout (as the released CIFAR-10-C / CIFAR-100-C, Zenodo 2535967): one ``<corruption>.npy``
per corruption, uint8 ``(S * N, H, W, C)``, where block ``k`` (rows ``[k * N, (k + 1) * N)``)
holds the k-th requested severity of the same N test images in their order, plus
``labels.npy`` (the N labels repeated S times; uint8 when they fit, else int64).  With the
default ``severities=(1, 2, 3, 4, 5)`` this is exactly the official layout: severity s at rows
``[(s - 1) * N, s * N)``.  A subset of severities keeps the same order, only shorter: e.g.
``(2, 5)`` gives severity 2 at ``[0, N)`` and 5 at ``[N, 2N)``; ``prunebench-make-c.json``
records which severities (and the table, seed and corruptions) a folder holds.

Reproducible byte for byte: image i at (corruption, severity) draws its random numbers from its
own generator seeded with ``seed_for(seed, "make-c", corruption, severity, i)``, so the files do
not depend on the chunk size and two runs give identical bytes.  Images are processed in
chunks (memory bounded: one chunk of float images plus a memory-mapped output file).  Every
file is written to a temporary name in the output folder and renamed into place
(``os.replace``), so an interrupted run never leaves a partial file under a final name.  The
sha256 of every file written is merged into ``prunebench-manifest.json`` (the format that
``bench.data.files.verify_files`` checks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.corruptions.tables import (
    ALL_CORRUPTIONS,
    CIFAR10_C,
    TABLES,
    Constant,
)

if TYPE_CHECKING:  # torch is imported lazily: `bench --help` must stay fast
    import torch

PARAMETERS = "prunebench-make-c.json"
SEVERITIES = (1, 2, 3, 4, 5)
SEED_SCHEME = "seed_for(seed, 'make-c', corruption, severity, image_index)"


def _check_inputs(images: torch.Tensor, labels: torch.Tensor) -> None:
    if str(images.dtype) != "torch.uint8" or images.dim() != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match {images.shape[0]} images")


def _label_array(labels: torch.Tensor, repeats: int) -> np.ndarray:
    values = labels.long().numpy()
    fits = values.size == 0 or (values.min() >= 0 and values.max() <= 255)
    return np.tile(values.astype(np.uint8 if fits else np.int64), repeats)


def _selection(
    table: Mapping[str, Sequence[Constant]], corruptions: Sequence[str] | None, severities: Sequence[int]
) -> tuple[list[str], list[int]]:
    names = [n for n in ALL_CORRUPTIONS if n in table] + [n for n in table if n not in ALL_CORRUPTIONS]
    if corruptions is not None:
        unknown = [n for n in corruptions if n not in table]
        if unknown:
            raise ValueError(f"unknown corruption(s) {', '.join(unknown)}; this table has: {', '.join(names)}")
        names = list(dict.fromkeys(corruptions))
    chosen = sorted({int(s) for s in severities})
    if not chosen or any(s not in SEVERITIES for s in chosen):
        raise ValueError(f"severities must be a non-empty subset of 1-5, got {tuple(severities)}")
    return names, chosen


def make_c(
    images: torch.Tensor,
    labels: torch.Tensor,
    out_dir: str | Path,
    table: Mapping[str, Sequence[Constant]] = CIFAR10_C,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    progress: bool = True,
    chunk_size: int = 1000,
    device: str = "cpu",
    table_name: str | None = None,
) -> dict[str, str]:
    """Write ``<corruption>.npy`` and ``labels.npy`` for uint8 NCHW ``images`` into ``out_dir``.

    ``table`` maps corruption -> 5 per-severity constants (:mod:`bench.corruptions.tables`);
    ``corruptions`` None means every corruption of the table (official order).  Rows follow
    the sorted requested ``severities`` (see the module notes).  Returns ``{file name: sha256}``
    of the files written (also merged into ``prunebench-manifest.json``).  ``device``: where the
    corruptions run (random draws stay on the CPU); the bytes are reproducible per device type, and
    a device other than the CPU is recorded in ``prunebench-make-c.json``, with ``table_name``
    (default: the name of a built-in table, else "custom").
    """
    import torch
    from tqdm import tqdm

    from bench.core.io import atomic_path, atomic_write_text
    from bench.corruptions import corrupt, seed_for
    from bench.data.files import sha256_file, update_manifest

    images = torch.as_tensor(images)
    labels = torch.as_tensor(labels)
    _check_inputs(images, labels)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    names, chosen = _selection(table, corruptions, severities)
    n, c, h, w = images.shape
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    written: dict[str, str] = {}
    with atomic_path(out / "labels.npy") as temporary, open(temporary, "wb") as handle:
        np.save(handle, _label_array(labels, len(chosen)), allow_pickle=False)
    written["labels.npy"] = sha256_file(out / "labels.npy")

    starts = range(0, n, chunk_size)
    bar = tqdm(total=len(names) * len(chosen) * len(starts), desc="make-c", unit="chunk", disable=not progress)
    try:
        for name in names:
            bar.set_description(f"make-c {name}")
            path = out / f"{name}.npy"
            with atomic_path(path) as temporary:
                rows = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=(len(chosen) * n, h, w, c))
                for block, severity in enumerate(chosen):
                    level = table[name][severity - 1]
                    for start in starts:
                        stop = min(start + chunk_size, n)
                        seeds = [seed_for(seed, "make-c", name, severity, i) for i in range(start, stop)]
                        corrupted = corrupt(images[start:stop].to(device), name, level, seeds)
                        rows[block * n + start : block * n + stop] = corrupted.permute(0, 2, 3, 1).cpu().numpy()
                        bar.update(1)
                rows.flush()
                del rows
            written[path.name] = sha256_file(path)
    finally:
        bar.close()

    update_manifest(out, written)
    table_name = table_name or next((key for key, value in TABLES.items() if value is table), "custom")
    parameters: dict[str, Any] = {
        "table": table_name,
        "seed": int(seed),
        "seed_scheme": SEED_SCHEME,
        "severities": chosen,
        "corruptions": names,
        "images": n,
        "image_shape": [h, w, c],
        "labels_dtype": str(np.load(out / "labels.npy", mmap_mode="r").dtype),
        "constants": {name: [table[name][s - 1] for s in chosen] for name in names},
    }
    if torch.device(device).type != "cpu":  # absent on the CPU: files made before devices stay identical
        parameters["device"] = torch.device(device).type
    atomic_write_text(out / PARAMETERS, json.dumps(parameters, indent=1) + "\n")
    return written


def corruption_table(name: str) -> Mapping[str, Sequence[Any]]:
    """The constants of a table of bench.corruptions.tables or of a registered corruption suite."""
    from bench.core import registry
    from bench.corruptions.tables import TABLES
    from bench.data.suite import CorruptionSuite, Suite

    if name in TABLES:
        return TABLES[name]
    if name in registry.available(registry.SUITE_GROUP):
        suite = registry.load_class(registry.SUITE_GROUP, name, Suite)
        if issubclass(suite, CorruptionSuite):
            return suite.table
    suites = [s for s in registry.available(registry.SUITE_GROUP)
              if issubclass(registry.load_class(registry.SUITE_GROUP, s, Suite), CorruptionSuite)]
    raise ValueError(f"unknown corruption table {name!r}; known: {', '.join(sorted([*TABLES, *suites]))}")


def own_corruption_suite(dataset: str) -> str | None:
    """The dataset's own corruption suite: a default suite of it, defined for it alone, whose sets
    `bench data make-c` reproduces (``per_image_seeds``)."""
    from bench.core import registry
    from bench.data import dataset_spec
    from bench.data.suite import CorruptionSuite, Suite

    for name in dataset_spec(dataset).default_suites:
        suite = registry.load_class(registry.SUITE_GROUP, name, Suite)
        if issubclass(suite, CorruptionSuite) and suite.datasets == (dataset,) and suite.per_image_seeds:
            return name
    return None


def make_c_for_dataset(dataset: str, out: Path, *, seed: int = 0, table_name: str | None = None,
                       corruptions: Sequence[str] | None = None, severities: Sequence[int] = SEVERITIES,
                       progress: bool = True, chunk_size: int = 1000, device: str = "cpu") -> tuple[list[str], int]:
    """`bench data make-c`: the corrupted copy of registered `dataset`'s test split (its split for
    `seed`) in `out`, with `table_name`'s constants (default: the dataset's own corruption suite,
    whose sets a run of the same seed evaluates, else cifar10-c). Returns (files written, images)."""
    import torch

    from bench.data import load_dataset

    test = load_dataset(dataset, seed).test
    images = getattr(test, "images", None)
    if images is None:  # a lazily read test source
        images = torch.cat([batch for batch, _ in test.batches(256)])
    name = table_name or own_corruption_suite(dataset) or "cifar10-c"
    written = make_c(images, test.labels, out, table=corruption_table(name), table_name=name, corruptions=corruptions,
                     severities=severities, seed=seed, progress=progress, chunk_size=chunk_size, device=device)
    return list(written), len(images)

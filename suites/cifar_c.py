"""The official CIFAR-10-C / CIFAR-100-C layout (Hendrycks & Dietterich 2019), shared by the
`cifar10c` and `cifar100c` suites: 19 corruptions x 5 severities of the clean test set.

Layout `<folder>/<corruption>.npy`: uint8 (5N, 32, 32, 3), severity s in rows [(s-1)N, sN) of the
same N clean test images in order, and `labels.npy` (uint8 (5N,)): the N clean test labels, in order,
once per severity. Before anything is evaluated, every selected file is checked against the clean
test set (image shape and dtype, row count, labels equal to the clean ones), so a wrong file stops
the run with one line naming it. Files are memory-mapped and streamed batch by batch, never loaded
whole; select a subset with `--corruptions` / `--severities`. `--download` fetches the suite's tar,
checks it against its pinned md5 (and sha256 where published) and extracts it. Every file is checked
against the folder's sha256 manifest (`prunebench-manifest.json`: written by `bench data make-c`,
else recorded on first use of an extracted archive) and a file that differs is refused. Any folder
in this layout works, e.g. one written by `bench data make-c` (an environment variable per suite
points to a folder elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from bench.api import (
    CIFAR10_C,
    EVERYTHING,
    MAKE_C_PARAMETERS,
    Archive,
    DataBundle,
    DataInvalid,
    DataMissing,
    NpyRows,
    Selection,
    Suite,
    TestDistribution,
    check_npy_images,
    check_npy_labels,
    data_root,
    fetch_archive,
    load_json,
    local_manifest,
    verify_files,
)


def severity_blocks(folder: Path) -> dict[int, int]:
    """Severity -> row block: the official files hold 1-5 in order; a `bench data make-c` folder
    made for some severities holds those, in order (its prunebench-make-c.json says which)."""
    parameters = folder / MAKE_C_PARAMETERS
    if not parameters.exists():
        return {s: s - 1 for s in range(1, 6)}
    written = load_json(parameters)
    severities = written.get("severities") if isinstance(written, dict) else None
    valid = isinstance(severities, list) and all(isinstance(s, int) and 1 <= s <= 5 for s in severities)
    if not valid or not severities or len(set(severities)) != len(severities):
        raise DataInvalid(f"{parameters}: no list of distinct severities 1-5 (written by `bench data make-c`; "
                          "write the folder again)")
    return {s: block for block, s in enumerate(severities)}


def check_files(folder: Path, files: list[str], blocks: int, data: DataBundle) -> None:
    """Check the selected `<corruption>.npy` files and `labels.npy` against the clean test set: uint8
    images of its H x W x C, `blocks` severities of its rows each, and its labels once per severity."""
    clean = data.test
    n, c, h, w = clean.images.shape
    for name in files:
        if name == "labels.npy":
            continue
        rows = check_npy_images(folder / name, (h, w, c), data.name)
        if rows != blocks * n:
            raise DataInvalid(f"{folder / name}: {rows} images, expected {blocks} severities x {n} clean "
                              f"{data.name} test images = {blocks * n}")
    check_npy_labels(folder / "labels.npy", blocks * n, data.num_classes,
                     np.tile(clean.labels.numpy().astype(np.int64), blocks),
                     f"the clean {data.name} test labels repeated for each of the {blocks} severities")


class CifarCFiles(Suite):
    """A suite of official `.npy` corruption files of one dataset's clean test set. A subclass names
    the suite, its one dataset (`datasets`), the folder under the data root, the environment
    variable that overrides it and the pinned archive."""

    folder_name: ClassVar[str]  # under the data root, also the archive's top folder
    folder_env: ClassVar[str]
    archive: ClassVar[Archive]

    @classmethod
    def folder(cls) -> Path:
        return Path(os.environ.get(cls.folder_env, data_root() / cls.folder_name)).expanduser().resolve()

    def distributions(self, data: DataBundle, seed: int, selection: Selection = EVERYTHING) -> list[TestDistribution]:
        folder, archive = self.folder(), self.archive
        if not folder.is_dir():
            fetch_archive(archive, folder.parent, missing=DataMissing.not_found(
                self.folder_name, folder, f"rerun with --download (fetches {archive.filename}, 2.9 GB, from "
                f"{archive.url}), extract that archive into {folder.parent}, or write a folder in the same layout "
                f"with `bench data make-c --dataset {data.name} --out {folder}`"))
        pairs = [(c, s) for c in CIFAR10_C for s in range(1, 6) if selection.wants(c, s)]
        files = sorted({f"{c}.npy" for c, _ in pairs}) + ["labels.npy"]
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise DataMissing(f"{folder} lacks {', '.join(missing)} (select others with --corruptions)")
        blocks = severity_blocks(folder)
        absent = sorted({s for _, s in pairs} - set(blocks))
        if absent:
            raise DataMissing(f"{folder} holds severities {sorted(blocks)} only, not {absent} (see --severities)")
        check_files(folder, files, len(blocks), data)  # before the first use records their checksums
        hashes = verify_files(folder, local_manifest(folder, files), files)
        per_severity = len(data.test)
        out = []
        for corruption, severity in pairs:
            block = blocks[severity]
            rows = NpyRows(str(folder / f"{corruption}.npy"), str(folder / "labels.npy"),
                           block * per_severity, (block + 1) * per_severity,
                           (hashes[f"{corruption}.npy"], hashes["labels.npy"]))
            out.append(TestDistribution(name=f"{self.name}/{corruption}/{severity}", suite=self.name, images=rows,
                                        corruption=corruption, severity=severity))
        return out

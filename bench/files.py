"""Data on disk: where it lives, how it is fetched and verified, and test sets read lazily from it.

* The data root is `--data-dir`, else `$PRUNEBENCH_DATA`, else `./data`. Nothing is downloaded
  unless the user allows it (`bench run --download`); a missing folder raises `DataMissing` with
  a message that says how to get it.
* `verify_files` checks files against a sha256 manifest: pinned by us for downloaded archives,
  or `prunebench-manifest.json` next to the files (written by `bench data make-c` and on the first
  use of a folder). A file whose checksum differs is refused, naming the file.
* `NpyRows` (memory-mapped rows of an official `.npy`, e.g. one CIFAR-10-C severity) and
  `ImageFiles` (decoded JPEG/PNG files, e.g. one ImageNet-C severity) are test sources: the
  evaluation streams their batches and never loads a whole file. They describe themselves as a
  small JSON reference, which the job cache stores instead of a copy of the images.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATA_ENV = "PRUNEBENCH_DATA"
DOWNLOAD_ENV = "PRUNEBENCH_DOWNLOAD"
LOCAL_MANIFEST = "prunebench-manifest.json"


class DataMissing(FileNotFoundError):
    """Data that is not on disk; the message says how to get it."""

    @classmethod
    def not_found(cls, what: str, where: Path, how: str) -> DataMissing:
        """The one wording of every missing-data error: what, where it was looked for, how to get it."""
        return cls(f"{what} not found in {where}: {how} (--data-dir or ${DATA_ENV} choose the data root)")


class ChecksumMismatch(ValueError):
    """A file on disk differs from its manifest entry."""


@contextmanager
def data_environment(root: Path | None, download: bool) -> Iterator[None]:
    """Set the data root / download permission for this run (and the workers it spawns), then
    restore the previous values: one run's `--download` must not leak into the next."""
    saved = {key: os.environ.get(key) for key in (DATA_ENV, DOWNLOAD_ENV)}
    if root is not None:
        os.environ[DATA_ENV] = str(Path(root).expanduser().resolve())
    if download:
        os.environ[DOWNLOAD_ENV] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def data_root() -> Path:
    return Path(os.environ.get(DATA_ENV, "data")).expanduser().resolve()


def download_allowed() -> bool:
    return os.environ.get(DOWNLOAD_ENV, "") == "1"


def file_digest(path: Path, algorithm: str = "sha256", chunk: int = 1 << 22) -> str:
    """Hex digest of a file, read in chunks (md5 only as a checksum, never for security)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def update_manifest(folder: Path, hashes: Mapping[str, str]) -> dict[str, str]:
    """Merge sha256 `hashes` (name -> hex) into the folder's `prunebench-manifest.json`, atomically."""
    from bench.io import atomic_write_text

    path = folder / LOCAL_MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest.update(hashes)
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


VERIFIED = ".prunebench-verified.json"  # name -> [sha256, size, mtime_ns] of files already hashed


def file_hashes(folder: Path, names: Sequence[str]) -> dict[str, str]:
    """sha256 of `names` (relative to folder), hashing a file again only when its size or mtime
    changed since it was last hashed (remembered in `<folder>/.prunebench-verified.json`), so a
    large folder is read once, not on every run."""
    from bench.io import atomic_write_text

    record_path = folder / VERIFIED
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    hashes, changed = {}, False
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataMissing(f"{path} is missing")
        stat = path.stat()
        known = record.get(name)
        if known is None or known[1:] != [stat.st_size, stat.st_mtime_ns]:
            record[name], changed = [sha256_file(path), stat.st_size, stat.st_mtime_ns], True
        hashes[name] = record[name][0]
    if changed:
        try:
            atomic_write_text(record_path, json.dumps(record, sort_keys=True))
        except OSError:  # a read-only data folder: hash again next time
            pass
    return hashes


def verify_files(folder: Path, manifest: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    """Check `names` (relative to folder) against the sha256 `manifest`; return their hashes."""
    unknown = [name for name in names if name not in manifest]
    if unknown:
        raise ChecksumMismatch(f"{folder / unknown[0]} has no entry in the manifest of {folder}; refusing an unknown file")
    hashes = file_hashes(folder, names)
    for name in names:
        if hashes[name] != manifest[name]:
            raise ChecksumMismatch(
                f"{folder / name}: sha256 {hashes[name][:16]}... differs from the manifest ({manifest[name][:16]}...); "
                "the file is corrupted or not the official one; delete it and fetch it again"
            )
    return hashes


def local_manifest(folder: Path, names: Sequence[str]) -> dict[str, str]:
    """The folder's manifest; created on first use from the files present (trust on first use)."""
    path = folder / LOCAL_MANIFEST
    if path.exists():
        return json.loads(path.read_text())
    present = [name for name in names if (folder / name).is_file()]
    return update_manifest(folder, file_hashes(folder, present))  # also records them as verified


@dataclass(frozen=True)
class Archive:
    """A pinned download: URL, file name, md5 (and sha256 when published)."""

    url: str
    filename: str
    md5: str
    sha256: str | None = None
    size: int | None = None


def fetch_archive(archive: Archive, into: Path, missing: DataMissing) -> None:
    """Download (only when allowed, else raise `missing`), verify md5/sha256, extract a tar into `into`."""
    target = into / archive.filename
    if not target.exists():
        if not download_allowed():
            raise missing
        from torchvision.datasets.utils import download_url

        download_url(archive.url, str(into), filename=archive.filename)
    actual = file_digest(target, "md5")
    if actual != archive.md5:
        raise ChecksumMismatch(f"{target}: md5 {actual} differs from the pinned {archive.md5}; delete it and retry")
    if archive.sha256 is not None and sha256_file(target) != archive.sha256:
        raise ChecksumMismatch(f"{target}: sha256 differs from the pinned {archive.sha256}; delete it and retry")
    with tarfile.open(target) as tar:
        tar.extractall(into, filter="data")


# ---- lazy test sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NpyRows:
    """Rows [start, stop) of an (N, H, W, C) uint8 `.npy` and of a labels `.npy`, memory-mapped.

    `file_hashes` are the verified sha256 of both files: the checksum is derived from them and
    the rows, so it is content-addressed without reading the images.
    """

    images_path: str
    labels_path: str
    start: int
    stop: int
    file_hashes: tuple[str, str]

    def __post_init__(self) -> None:
        images = self._images()
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"{self.images_path}: expected uint8 (N, H, W, C), got {images.dtype} {images.shape}")
        if not 0 <= self.start < self.stop <= images.shape[0]:
            raise ValueError(f"{self.images_path}: rows [{self.start}, {self.stop}) outside {images.shape[0]} rows")

    def _images(self) -> np.ndarray:
        return np.load(self.images_path, mmap_mode="r")

    def __len__(self) -> int:
        return self.stop - self.start

    @cached_property
    def labels(self) -> torch.Tensor:
        labels = np.load(self.labels_path, mmap_mode="r")[self.start : self.stop]
        return torch.from_numpy(np.array(labels, dtype=np.int64))

    @cached_property
    def checksum(self) -> str:
        key = json.dumps({"npy": self.file_hashes, "rows": [self.start, self.stop]}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self._images(), self.labels
        for begin in range(self.start, self.stop, batch_size):
            end = min(begin + batch_size, self.stop)
            chunk = torch.from_numpy(np.array(images[begin:end]))  # copies only this batch from the map
            yield chunk.permute(0, 3, 1, 2).contiguous(), labels[begin - self.start : end - self.start]

    def reference(self) -> dict[str, Any]:
        return {"kind": "npy-rows", "images_path": self.images_path, "labels_path": self.labels_path,
                "start": self.start, "stop": self.stop, "file_hashes": list(self.file_hashes)}


def decode_image(path: str) -> torch.Tensor:
    """An image file as uint8 (3, H, W) RGB."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


@dataclass(frozen=True)
class ImageFiles:
    """Image files of equal size with their labels, decoded batch by batch (nothing resized)."""

    paths: tuple[str, ...]
    targets: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.targets) or not self.paths:
            raise ValueError(f"need one label per file and at least one file, got {len(self.paths)} files")

    def __len__(self) -> int:
        return len(self.paths)

    @cached_property
    def labels(self) -> torch.Tensor:
        return torch.tensor(self.targets, dtype=torch.int64)

    @cached_property
    def checksum(self) -> str:
        """Over the files' contents and labels (hashes cached per folder, see `file_hashes`)."""
        folder = Path(os.path.commonpath(self.paths)) if len(self.paths) > 1 else Path(self.paths[0]).parent
        names = [str(Path(p).relative_to(folder)) for p in self.paths]
        hashes = file_hashes(folder, names)
        digest = hashlib.sha256()
        for sha, target in zip((hashes[n] for n in names), self.targets):
            digest.update(f"{target}:".encode())
            digest.update(bytes.fromhex(sha))
        return digest.hexdigest()

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for begin in range(0, len(self.paths), batch_size):
            images = [decode_image(p) for p in self.paths[begin : begin + batch_size]]
            shapes = {tuple(i.shape) for i in images}
            if len(shapes) != 1:
                raise ValueError(f"images of one test set must share a size, found {sorted(shapes)} "
                                 f"in {self.paths[begin]} ...")
            yield torch.stack(images), self.labels[begin : begin + len(images)]

    def reference(self) -> dict[str, Any]:
        return {"kind": "image-files", "paths": list(self.paths), "targets": list(self.targets)}


def source_from_reference(reference: Mapping[str, Any]) -> NpyRows | ImageFiles:
    kind = reference.get("kind")
    if kind == "npy-rows":
        return NpyRows(reference["images_path"], reference["labels_path"], int(reference["start"]),
                       int(reference["stop"]), tuple(reference["file_hashes"]))
    if kind == "image-files":
        return ImageFiles(tuple(reference["paths"]), tuple(int(t) for t in reference["targets"]))
    raise ValueError(f"unknown test source kind {kind!r}")

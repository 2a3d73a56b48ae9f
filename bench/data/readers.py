"""Test sets read lazily from disk, and the checks of such files.

`NpyRows` (memory-mapped rows of an official `.npy`, e.g. one CIFAR-10-C severity) and
`ImageFiles` (decoded JPEG/PNG files, e.g. one ImageNet-C severity) are test sources: the
evaluation streams their batches and never loads a whole file. They describe themselves as a
small JSON reference, which the job cache stores instead of a copy of the images.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: the dataset specs stay torch-free
    import torch
from bench.data.files import DataInvalid, DataMissing, file_hashes


def shape_text(shape: Sequence[int]) -> str:
    """A shape as `32x32x3`."""
    return "x".join(str(int(n)) for n in shape)


def open_npy(path: str | Path) -> np.ndarray:
    """A `.npy` file memory-mapped read-only. A truncated or malformed file, or one longer than its
    header says, raises DataInvalid naming it (numpy alone says `mmap length is greater than file size`)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataMissing(f"{path} is missing") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataInvalid(f"{path}: not a readable .npy file, truncated or corrupted ({exc})") from None
    expected, size = getattr(array, "offset", 0) + array.nbytes, os.path.getsize(path)
    if size != expected:
        raise DataInvalid(f"{path}: {size} bytes, but its header promises {array.dtype} {tuple(array.shape)} "
                          f"({expected} bytes); truncated or corrupted")
    return array


def check_npy_images(path: str | Path, clean_hwc: Sequence[int], dataset: str) -> int:
    """Check that a `.npy` holds test images like the clean test set of `dataset`: uint8 (N, H, W, C)
    with the clean set's H, W, C (`clean_hwc`); return N. Errors name the file."""
    images = open_npy(path)
    if images.ndim != 4:
        raise DataInvalid(f"{path}: holds an array of shape {tuple(images.shape)}, not images (N, H, W, C)")
    if tuple(images.shape[1:]) != tuple(clean_hwc):
        raise DataInvalid(f"{path}: images are {shape_text(images.shape[1:])}, the clean {dataset} test set is "
                          f"{shape_text(clean_hwc)}")
    if images.dtype != np.uint8:
        raise DataInvalid(f"{path}: images are {images.dtype}, the clean {dataset} test set is uint8")
    return int(images.shape[0])


def check_npy_labels(path: str | Path, rows: int, num_classes: int, expected: np.ndarray | None = None,
                     expected_what: str = "") -> None:
    """Check a `.npy` of class labels: integers of shape (rows,) in [0, num_classes), and equal to
    `expected` (described by `expected_what`) when the format promises which labels it holds."""
    labels = open_npy(path)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataInvalid(f"{path}: labels must be integers of shape (N,), got {labels.dtype} {tuple(labels.shape)}")
    if labels.shape[0] != rows:
        raise DataInvalid(f"{path}: {labels.shape[0]} labels for {rows} images")
    values = np.asarray(labels, dtype=np.int64)
    outside = np.flatnonzero((values < 0) | (values >= num_classes))
    if outside.size:
        raise DataInvalid(f"{path}: {outside.size} labels outside [0, {num_classes}) (first at row {outside[0]}: "
                          f"{values[outside[0]]})")
    if expected is not None:
        differ = np.flatnonzero(values != expected)
        if differ.size:
            raise DataInvalid(f"{path}: {differ.size} of {rows} labels differ from {expected_what} (first at row "
                              f"{differ[0]}: {values[differ[0]]}, expected {expected[differ[0]]}); shuffled or "
                              "not this data set's file")


def image_size(path: str) -> tuple[int, int]:
    """(H, W) of an image file, read from its header (nothing decoded); DataInvalid names an unreadable file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DataMissing(f"{path} is missing") from None
    except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise DataInvalid(f"{path}: not a readable image ({exc})") from None
    return height, width


# ---- lazy test sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NpyRows:
    """Rows [start, stop) of an (N, H, W, C) uint8 `.npy` and of a labels `.npy`, memory-mapped.

    `file_hashes` are the verified sha256 of both files: the checksum is derived from them and
    the rows, so it is content-addressed without reading the images. The suites check the files
    against the clean test set (`check_npy_images`, `check_npy_labels`) before building one.
    """

    images_path: str
    labels_path: str
    start: int
    stop: int
    file_hashes: tuple[str, str]

    def __post_init__(self) -> None:
        images, labels = self._images(), open_npy(self.labels_path)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataInvalid(f"{self.images_path}: expected uint8 (N, H, W, C), got {images.dtype} {images.shape}")
        if not 0 <= self.start < self.stop <= images.shape[0]:
            raise DataInvalid(f"{self.images_path}: rows [{self.start}, {self.stop}) outside {images.shape[0]} rows")
        if labels.ndim != 1 or labels.shape[0] < self.stop:
            raise DataInvalid(f"{self.labels_path}: labels of shape {labels.shape} do not cover rows "
                              f"[{self.start}, {self.stop})")

    def _images(self) -> np.ndarray:
        return open_npy(self.images_path)

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def nbytes(self) -> int:
        """The size of its rows of images."""
        return len(self) * self._images()[0].nbytes

    @cached_property
    def labels(self) -> torch.Tensor:
        import torch
        labels = open_npy(self.labels_path)[self.start : self.stop]
        return torch.from_numpy(np.array(labels, dtype=np.int64))

    @cached_property
    def checksum(self) -> str:
        key = json.dumps({"npy": self.file_hashes, "rows": [self.start, self.stop]}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images = self._images()
        for index in range(batch_count(self, batch_size)):
            yield self._batch(images, index, batch_size)

    def batch(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index` of `batches(batch_size)` alone (what a DataLoader worker reads)."""
        return self._batch(self._images(), index, batch_size)

    def _batch(self, images: np.ndarray, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        begin = self.start + index * batch_size
        end = min(begin + batch_size, self.stop)
        chunk = torch.from_numpy(np.array(images[begin:end]))  # copies only this batch from the map
        return chunk.permute(0, 3, 1, 2).contiguous(), self.labels[begin - self.start : end - self.start]

    def reference(self) -> dict[str, Any]:
        return {"kind": "npy-rows", "images_path": self.images_path, "labels_path": self.labels_path,
                "start": self.start, "stop": self.stop, "file_hashes": list(self.file_hashes)}


def decode_image(path: str) -> torch.Tensor:
    """An image file as uint8 (3, H, W) RGB; DataInvalid names a file that cannot be decoded."""
    import torch
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DataMissing(f"{path} is missing") from None
    except (OSError, ValueError) as exc:  # unidentified or truncated image files
        raise DataInvalid(f"{path}: not a readable image ({exc})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


@dataclass(frozen=True)
class ImageFiles:
    """Image files of equal size with their labels, decoded batch by batch (nothing resized).

    `shape`, when given, is the (H, W, C) every decoded image must have (the clean test set's):
    `check_sample` checks the headers of the first file of each class on construction, `batches`
    every image it decodes.
    """

    paths: tuple[str, ...]
    targets: tuple[int, ...]
    shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.targets) or not self.paths:
            raise ValueError(f"need one label per file and at least one file, got {len(self.paths)} files")

    def __len__(self) -> int:
        return len(self.paths)

    @cached_property
    def labels(self) -> torch.Tensor:
        import torch
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

    def check_sample(self, dataset: str) -> None:
        """Check the header size of the first file of each class against `shape` (the clean test set of
        `dataset`), without decoding; `batches` checks every image as it decodes it."""
        if self.shape is None:
            return
        firsts: dict[int, str] = {}
        for path, target in zip(self.paths, self.targets):
            firsts.setdefault(target, path)
        for path in firsts.values():
            self._check_size(path, image_size(path), f"the clean {dataset} test set")

    def _check_size(self, path: str, size: tuple[int, int], clean: str) -> None:
        if self.shape is not None and size != self.shape[:2]:
            raise DataInvalid(f"{path}: images are {shape_text((*size, self.shape[2]))}, {clean} is "
                              f"{shape_text(self.shape)}")

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in range(batch_count(self, batch_size)):
            yield self.batch(index, batch_size)

    def batch(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index` of `batches(batch_size)` alone, decoded and checked (what a DataLoader worker reads)."""
        import torch

        begin = index * batch_size
        paths = self.paths[begin : begin + batch_size]
        images = [decode_image(p) for p in paths]
        for path, image in zip(paths, images):
            self._check_size(path, (image.shape[1], image.shape[2]), "the clean test set")
        shapes = {tuple(i.shape) for i in images}
        if len(shapes) != 1:
            raise DataInvalid(f"images of one test set must share a size, found {sorted(shapes)} "
                              f"in {self.paths[begin]} ...")
        return torch.stack(images), self.labels[begin : begin + len(images)]

    def reference(self) -> dict[str, Any]:
        reference: dict[str, Any] = {"kind": "image-files", "paths": list(self.paths), "targets": list(self.targets)}
        if self.shape is not None:
            reference["shape"] = list(self.shape)
        return reference


FileSource = NpyRows | ImageFiles


def batch_count(source: FileSource, batch_size: int) -> int:
    """How many batches of `batch_size` (the last one possibly short) a file-backed source yields."""
    return -(-len(source) // batch_size)


class _Batches:
    """A file-backed source as a map-style data set of whole batches: item i = `source.batch(i)`
    (DataLoader needs only `__len__` and `__getitem__`; a module-level class, so spawned loader
    workers can unpickle it)."""

    def __init__(self, source: FileSource, batch_size: int) -> None:
        self.source, self.batch_size = source, batch_size

    def __len__(self) -> int:
        return batch_count(self.source, self.batch_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source.batch(index, self.batch_size)


def loader_batches(source: FileSource, batch_size: int, workers: int,
                   pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of `source.batches(batch_size)`, in order, read and decoded by `workers` DataLoader
    worker processes (0: in this process) ahead of their use, in pinned host memory on request (for
    asynchronous copies to a GPU)."""
    from torch.utils.data import DataLoader, Dataset

    batches = cast("Dataset[tuple[torch.Tensor, torch.Tensor]]", _Batches(source, batch_size))
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]] = DataLoader(
        batches, batch_size=None, num_workers=workers, pin_memory=pin_memory, persistent_workers=False)
    yield from loader


def source_from_reference(reference: Mapping[str, Any]) -> NpyRows | ImageFiles:
    kind = reference.get("kind")
    if kind == "npy-rows":
        return NpyRows(reference["images_path"], reference["labels_path"], int(reference["start"]),
                       int(reference["stop"]), tuple(reference["file_hashes"]))
    if kind == "image-files":
        shape = reference.get("shape")
        return ImageFiles(tuple(reference["paths"]), tuple(int(t) for t in reference["targets"]),
                          None if shape is None else (int(shape[0]), int(shape[1]), int(shape[2])))
    raise ValueError(f"unknown test source kind {kind!r}")

"""Datasets: uint8 image splits, their specs and the registry-backed lookup of installed datasets.

Images are kept as uint8 NCHW, the format of the official corruption files; networks see
`DataBundle.normalize(images)` (float, standardised with the spec's normalisation). Each dataset is
a `DatasetSpec` registered under the `prunebench.datasets` entry points (built-ins: bench.data.builtin);
this module never names a concrete one, except the two convenience loaders at the end.

Layer: data (the dataset specs here; the built-in datasets in `builtin`, data on disk in `files`
and `readers`, `normalization`, the suite API in `suite`, `make_c`, training `recipes`,
`segmentation`). May import: bench.core, bench.results, bench.corruptions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import numpy as np

from bench.core import registry
from bench.corruptions.tables import TABLES
from bench.data.files import DataInvalid, DataMissing, data_root, load_json
from bench.data.normalization import channel_stats, standardize
from bench.results.schema import Recipe

if TYPE_CHECKING:  # torch is imported where it is used: the specs and board stay torch-free
    import torch


class TestSource(Protocol):
    """What evaluation needs from a test set: labels, a content checksum and uint8 NCHW batches.

    `reference()` is None when the job cache must keep a copy of the images (generated sets),
    else a small JSON description to re-open the files (bench.data.readers.NpyRows, ImageFiles).
    """

    @property
    def labels(self) -> torch.Tensor: ...

    @property
    def checksum(self) -> str: ...

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def reference(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,) class per image, or (N, H, W) class per pixel (segmentation)

    def __post_init__(self) -> None:
        import torch
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        n, _, h, w = self.images.shape
        if tuple(self.labels.shape) not in ((n,), (n, h, w)):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} fits neither {n} images nor their {h}x{w} pixels")

    def __len__(self) -> int:
        return self.images.shape[0]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return zip(self.images.split(batch_size), self.labels.split(batch_size))

    def reference(self) -> None:
        return None

    def subset(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[indices].contiguous(), self.labels[indices].contiguous())

    @cached_property
    def checksum(self) -> str:
        import torch
        digest = hashlib.sha256()
        digest.update(str(tuple(self.images.shape)).encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.to(torch.int64).contiguous().numpy().tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class DataBundle:
    name: str
    train: ImageSet
    val: ImageSet  # held out from training; the calibration (S) set of data-informed pruners
    test: ImageSet
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    task: str = "classification"  # or "segmentation": labels are (N, H, W) masks, metric mIoU

    @cached_property
    def checksum(self) -> str:
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            digest.update(split.checksum.encode())
        return digest.hexdigest()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 standardised with the data set's channel statistics."""
        return standardize(images, self.mean, self.std)


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Split indices into len(fractions)+1 parts, class by class; the last part takes the rest."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        bounds = np.cumsum([round(f * len(members)) for f in fractions])
        for part, chunk in zip(parts, np.split(members, bounds)):
            part.append(chunk)
    return [np.sort(np.concatenate(part)) for part in parts]


def saved_split(path: Path, labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: a stratified seeded split, saved on first use and reused after."""
    if path.exists():
        saved = load_json(path)
        if not isinstance(saved, dict) or not isinstance(saved.get("val"), list):
            raise DataInvalid(f"{path}: not a saved split (no list of validation indices); delete it to make a new one")
        if saved.get("n") != len(labels) or saved.get("seed") != seed:
            raise ValueError(f"{path} holds a split of {saved.get('n')} images (seed {saved.get('seed')}), "
                             f"not of these {len(labels)} (seed {seed}); delete it to make a new one")
        val = np.array(saved["val"])
        if val.ndim != 1 or not (val.size == 0 or np.issubdtype(val.dtype, np.integer)) or (
                val.size and (val.min() < 0 or val.max() >= len(labels))):
            raise DataInvalid(f"{path}: validation indices are not integers in [0, {len(labels)}); "
                              "delete it to make a new one")
        val = val.astype(np.int64)
    else:
        from bench.core.io import atomic_write_text

        val, _ = stratified_split(labels, (val_fraction,), seed)
        atomic_write_text(path, json.dumps({"n": len(labels), "seed": seed, "val": val.tolist()}))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def folder_images(folder: Path, per_class: int | None = None, classes: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
    """ImageFolder layout `<folder>/<class>/*.JPEG`: sorted files, their class indices and the classes.

    `per_class` keeps the first K files of each class (sorted by name): a fixed, class-balanced subset
    that picks the same images in every corruption folder.
    """
    if not folder.is_dir():
        raise DataMissing(f"{folder} is missing")
    classes = classes or sorted(p.name for p in folder.iterdir() if p.is_dir())
    paths, targets = [], []
    for index, name in enumerate(classes):
        files = sorted(str(p) for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files = files[:per_class] if per_class is not None else files
        paths += files
        targets += [index] * len(files)
    if not paths:
        raise DataMissing(f"{folder} holds no images in <class>/*.JPEG folders")
    return paths, targets, classes


SEGMENTATION_IGNORE = 255  # the label of unlabelled pixels (bench.data.segmentation.data.IGNORE_INDEX)


@dataclass(frozen=True)
class DataSplits:
    """What a dataset's loader returns: the three splits and the number of classes."""

    train: ImageSet
    val: ImageSet  # held out from training; the calibration (S) set of data-informed pruners
    test: ImageSet
    num_classes: int


class Loader(Protocol):
    """A dataset's loader: `(seed, per_class, image_size) -> DataSplits`. The seed fixes the split;
    `per_class` (`--per-class K`) and `image_size` (`--image-size S`) may be ignored by datasets
    that have no use for them. Raise bench.data.files.DataMissing, with how to get the data, when it is
    not on disk."""

    def __call__(self, seed: int, per_class: int | None, image_size: int | None, /) -> DataSplits: ...


Task = Literal["classification", "segmentation"]  # segmentation: labels are (N, H, W) masks, metric mIoU
TASKS: tuple[str, ...] = get_args(Task)


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """Everything prunebench knows about one dataset, in one place.

    A package registers a dataset by naming one `DatasetSpec` instance (not a class, not a factory)
    under the `prunebench.datasets` entry-point group, with the spec's `name` as the entry point's
    name; prunebench's built-ins (bench.data.builtin) are registered the same way in its pyproject.
    """

    name: str
    loader: Loader  # the splits, seeded
    task: Task = "classification"
    # (mean, std) per channel of pixels in [0, 1], or None: the train split's channel statistics
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    default_model: str
    default_suites: tuple[str, ...]
    train: Recipe  # the parent's recipe
    retrain: Recipe  # every retraining step's recipe (its own epochs)
    mix_table: Literal["cifar10-c", "imagenet-c"] = "cifar10-c"  # constants of Mix (re)training (--train-corruptions)
    # the most examples one of its test sets holds, clean or shifted (the clean test split; every
    # suite transforms or subsets it, or has fewer images): bounds n_examples of its result files
    max_test_examples: int
    # its default ratio grid as (kind, low, high, count) for bench.pipeline.config.ratio_grid; None: DEFAULT_GRID
    ratio_grid: tuple[Literal["geom", "lin"], float, float, int] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"dataset spec {self.name!r}: task {self.task!r} is none of {', '.join(TASKS)}")
        if self.normalization is not None and len(set(map(len, self.normalization))) != 1:
            raise ValueError(f"dataset spec {self.name!r}: normalization needs one mean and one std per channel")
        if self.mix_table not in TABLES:
            raise ValueError(f"dataset spec {self.name!r}: mix_table {self.mix_table!r} is none of {', '.join(TABLES)}")
        if self.max_test_examples < 1:
            raise ValueError(f"dataset spec {self.name!r}: max_test_examples must be positive")

    def load(self, seed: int, per_class: int | None = None, image_size: int | None = None) -> DataBundle:
        """The dataset's splits with its name, task and normalisation (uncached: see `load_dataset`)."""
        splits = self.loader(seed, per_class, image_size)
        if len(splits.test) > self.max_test_examples:
            raise ValueError(f"dataset {self.name!r}: its test split holds {len(splits.test)} examples, more than "
                             f"its spec's max_test_examples ({self.max_test_examples})")
        self._check_splits(splits)
        mean, std = self.normalization or channel_stats(splits.train.images)
        return DataBundle(name=self.name, train=splits.train, val=splits.val, test=splits.test,
                          num_classes=splits.num_classes, mean=mean, std=std, task=self.task)

    def _check_splits(self, splits: DataSplits) -> None:
        """What every loader must return, built-in or plugin: the same uint8 (C, H, W) in every split,
        the normalisation's channel count, integer labels in range. One-line ValueError naming it."""
        import torch

        where = f"dataset {self.name!r} (its loader)"
        if not isinstance(splits.num_classes, int) or isinstance(splits.num_classes, bool) or splits.num_classes < 2:
            raise ValueError(f"{where}: num_classes must be an integer >= 2, got {splits.num_classes!r}")
        shape = None
        for split_name in ("train", "val", "test"):
            split = getattr(splits, split_name)
            images, labels = getattr(split, "images", None), getattr(split, "labels", None)
            if images is None or labels is None:
                continue  # a file-backed test source: checked as it streams
            if images.dtype != torch.uint8 or images.ndim != 4:
                raise ValueError(f"{where}: the {split_name} split must hold uint8 (N, C, H, W) images, got "
                                 f"{images.dtype} {tuple(images.shape)}")
            shape = shape or tuple(images.shape[1:])
            if tuple(images.shape[1:]) != shape:
                raise ValueError(f"{where}: the {split_name} split's images are {tuple(images.shape[1:])}, the train "
                                 f"split's {shape}")
            if self.normalization is not None and images.shape[1] != len(self.normalization[0]):
                raise ValueError(f"{where}: {images.shape[1]} channels, but its normalization has "
                                 f"{len(self.normalization[0])}")
            if labels.dtype.is_floating_point or labels.dtype == torch.bool:
                raise ValueError(f"{where}: the {split_name} split's labels are {labels.dtype}, not integers")
            valid = labels[labels != SEGMENTATION_IGNORE] if self.task == "segmentation" else labels
            if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= splits.num_classes):
                raise ValueError(f"{where}: the {split_name} split has labels in [{int(valid.min())}, "
                                 f"{int(valid.max())}], outside [0, {splits.num_classes - 1}]")


def dataset_spec(name: str) -> DatasetSpec:
    """The spec an installed package registers under `name` (`prunebench.datasets` entry points);
    an unknown name is a one-line ValueError suggesting close matches."""
    if name not in registry.available(registry.DATASET_GROUP):
        raise ValueError(f"unknown dataset {name!r}.{registry.alternatives(registry.DATASET_GROUP, name)}")
    return registry.load_instance(registry.DATASET_GROUP, name, DatasetSpec)


class _InstalledDatasets(Mapping[str, DatasetSpec]):
    """Name -> spec of every installed dataset, read from the entry points on each access."""

    def __getitem__(self, name: str) -> DatasetSpec:
        if name not in self:
            raise KeyError(name)
        return dataset_spec(name)

    def __contains__(self, name: object) -> bool:
        return name in registry.available(registry.DATASET_GROUP)

    def __iter__(self) -> Iterator[str]:
        return iter(registry.available(registry.DATASET_GROUP))

    def __len__(self) -> int:
        return len(registry.available(registry.DATASET_GROUP))


DATASETS: Mapping[str, DatasetSpec] = _InstalledDatasets()  # what `bench list` shows


def load_dataset(name: str, seed: int, per_class: int | None = None, image_size: int | None = None) -> DataBundle:
    """A registered dataset, loaded once per process for each (arguments, data root): every job of a
    worker shares it instead of decoding the files again."""
    dataset_spec(name)  # a clear error for unknown names
    return _load_once(name, seed, per_class, image_size, str(data_root()))


@lru_cache(maxsize=2)
def _load_once(name: str, seed: int, per_class: int | None, image_size: int | None, _root: str) -> DataBundle:
    return dataset_spec(name).load(seed, per_class, image_size)


def load_digits(seed: int) -> DataBundle:
    """The built-in `digits` dataset (bench.data.builtin), uncached."""
    return dataset_spec("digits").load(seed)


def load_cifar10(seed: int) -> DataBundle:
    """The built-in `cifar10` dataset (bench.data.builtin) from the data root, uncached."""
    return dataset_spec("cifar10").load(seed)

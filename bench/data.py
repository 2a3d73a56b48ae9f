"""Datasets as uint8 image tensors with seeded, stratified splits and content checksums.

Images are kept as uint8 NCHW, the format of the official corruption files; networks see
`DataBundle.normalize(images)` (float, standardised with train-split statistics).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from bench.files import DataInvalid, DataMissing, data_root, decode_image, download_allowed, load_json
from bench.normalization import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    standardize,
)
from bench.recipes import CIFAR_RESNET, DEEPLAB_VOC, DIGITS_RETRAIN, DIGITS_TRAIN, IMAGENET_RESNET
from bench.schema import Recipe


class TestSource(Protocol):
    """What evaluation needs from a test set: labels, a content checksum and uint8 NCHW batches.

    `reference()` is None when the job cache must keep a copy of the images (generated sets),
    else a small JSON description to re-open the files (bench.files.NpyRows, ImageFiles).
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


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pixels = images.float().div(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).clamp_min(1e-3).tolist())


def upsample_digits(raw: np.ndarray, size: int = 32, channels: int = 3) -> torch.Tensor:
    """sklearn digits (N, 64) with values 0..16 -> uint8 (N, channels, size, size), bilinear."""
    small = torch.from_numpy(raw.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0)
    large = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return large.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).expand(-1, channels, -1, -1).contiguous()


def load_digits(seed: int) -> DataBundle:
    """scikit-learn's digits (shipped inside the package, no download), upsampled to 3x32x32.

    Stratified split: 30 % test, 10 % validation (calibration), 60 % train, seeded.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    raw = sklearn_digits()
    images = upsample_digits(raw.data)
    labels = torch.from_numpy(raw.target.astype(np.int64))
    test_idx, val_idx, train_idx = stratified_split(raw.target, (0.3, 0.1), seed)
    full = ImageSet(images, labels)
    train = full.subset(torch.from_numpy(train_idx))
    mean, std = channel_stats(train.images)
    return DataBundle(
        name="digits",
        train=train,
        val=full.subset(torch.from_numpy(val_idx)),
        test=full.subset(torch.from_numpy(test_idx)),
        num_classes=10,
        mean=mean,
        std=std,
    )



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
        from bench.io import atomic_write_text

        val, _ = stratified_split(labels, (val_fraction,), seed)
        atomic_write_text(path, json.dumps({"n": len(labels), "seed": seed, "val": val.tolist()}))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def load_cifar10(seed: int, per_class: int | None = None, image_size: int | None = None) -> DataBundle:
    """torchvision's CIFAR-10 (python pickle batches, md5-checked by torchvision) from the data root.

    45k/5k train/validation split, stratified and seeded, saved under `<root>/splits/`; the
    official 10k test set. Downloaded only with `--download`.
    """
    from torchvision.datasets import CIFAR10

    root = data_root()
    try:
        parts = [CIFAR10(str(root), train=train, download=download_allowed()) for train in (True, False)]
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise DataMissing.not_found(
            "CIFAR-10 (or its md5 differs)", root / "cifar-10-batches-py", "rerun with --download, or extract "
            f"cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html into {root}",
        ) from exc
    train_full, test = (
        ImageSet(torch.from_numpy(p.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(p.targets, dtype=torch.int64))
        for p in parts
    )
    train_idx, val_idx = saved_split(root / "splits" / f"cifar10-seed{seed}.json", train_full.labels.numpy(), 0.1, seed)
    return DataBundle(
        name="cifar10",
        train=train_full.subset(torch.from_numpy(train_idx)),
        val=train_full.subset(torch.from_numpy(val_idx)),
        test=test,
        num_classes=10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )


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


def resize_center_crop(image: torch.Tensor, resize: int = 256, crop: int = 224) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(image, [resize], antialias=True), [crop, crop])


def load_imagenet(seed: int, per_class: int | None = None, image_size: int | None = None) -> DataBundle:
    """ImageNet in ImageFolder layout `<root>/imagenet/{train,val}/<wnid>/*.JPEG`.

    Images are decoded once and kept as uint8 at Resize(256) + CenterCrop(224) (the standard test
    view, also the ImageNet-C view), so the full training set needs ~180 GB: use `--per-class K`
    for a class-balanced subset. 10 % of the train images form the validation (calibration) split.
    """
    folder = data_root() / "imagenet"
    if not folder.is_dir():
        raise DataMissing.not_found(
            "ImageNet", folder, f"place the ILSVRC2012 train and val images as {folder}/train/<wnid>/*.JPEG and "
            f"{folder}/val/<wnid>/*.JPEG (val sorted into class folders)",
        )

    def decoded(split: str, classes: list[str] | None) -> tuple[ImageSet, list[str]]:
        paths, targets, classes = folder_images(folder / split, per_class, classes)
        images = torch.stack([resize_center_crop(decode_image(p)) for p in paths])
        return ImageSet(images, torch.tensor(targets, dtype=torch.int64)), classes

    train_full, classes = decoded("train", None)
    test, _ = decoded("val", classes)
    train_idx, val_idx = saved_split(folder / f"prunebench-split-seed{seed}-k{per_class}.json",
                                     train_full.labels.numpy(), 0.1, seed)
    return DataBundle(
        name="imagenet",
        train=train_full.subset(torch.from_numpy(train_idx)),
        val=train_full.subset(torch.from_numpy(val_idx)),
        test=test,
        num_classes=len(classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


VOC_SIZE = 513  # the paper's crop: short side resized to 513, centre crop 513 x 513


def segmentation_data(name: str, source: str, root: Path, seed: int, image_size: int | None) -> DataBundle:
    """A segmentation data set (bench.segmentation.data readers), 21 VOC classes.

    Every image and mask is stored once at the evaluation view (short side S, centre crop S x S,
    S = `--image-size`, default 513; masks nearest, 255 = ignore), so corruptions run on exactly
    what the network sees and nothing is JPEG re-encoded. Train: the `train` split minus 10 % held
    out as the validation (calibration) split; test: the `val` split. Training augments these crops
    (random scale, flip, crop; bench.segmentation.augment_train_batch).
    """
    from bench.segmentation import data as segmentation

    size = image_size or VOC_SIZE
    try:
        train_set, test_set = (
            ImageSet(*segmentation.load_segmentation_set(source, root, split, size, download=download_allowed()))
            for split in ("train", "val")
        )
    except FileNotFoundError as exc:
        raise DataMissing(f"{exc} (rerun with --download to fetch it)") from exc
    train_idx, val_idx = saved_split(data_root() / "splits" / f"{name}-seed{seed}.json",
                                     np.zeros(len(train_set), dtype=np.int64), 0.1, seed)
    return DataBundle(
        name=name,
        train=train_set.subset(torch.from_numpy(train_idx)),
        val=train_set.subset(torch.from_numpy(val_idx)),
        test=test_set,
        num_classes=segmentation.NUM_CLASSES,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        task="segmentation",
    )


def load_voc(seed: int, per_class: int | None = None, image_size: int | None = None) -> DataBundle:
    """Pascal VOC 2012 segmentation, torchvision layout `<root>/VOCdevkit/VOC2012`."""
    return segmentation_data("voc", "voc2012", data_root(), seed, image_size)


def load_sbd(seed: int, per_class: int | None = None, image_size: int | None = None) -> DataBundle:
    """SBD (Hariharan et al.; the paper's "VOC2011": 8,498 train / 2,857 val), `<root>/SBD/{img,cls}`."""
    return segmentation_data("sbd", "sbd", data_root() / "SBD", seed, image_size)


def _digits(seed: int, per_class: int | None = None, image_size: int | None = None) -> DataBundle:
    return load_digits(seed)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything prunebench knows about one dataset, in one place: its loader (which fixes the
    split, the task and the input normalisation) and the defaults of a run on it."""

    load: Callable[[int, int | None, int | None], DataBundle]  # (seed, per_class, image_size)
    default_model: str
    default_suites: tuple[str, ...]
    train: Recipe  # the parent's recipe
    retrain: Recipe  # every retraining step's recipe (its own epochs)
    mix_table: str  # corruption constants of Mix (re)training (--train-corruptions)
    # the most examples one of its test sets holds, clean or shifted (the clean test split; every
    # suite transforms or subsets it, or has fewer images): bounds n_examples of its result files
    max_test_examples: int


# Adding a dataset is one entry here (plus its loader above).
DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(_digits, "digits_cnn", ("noise", "digits-c"), DIGITS_TRAIN, DIGITS_RETRAIN, "cifar10-c",
                          539),  # 30 % of 1797, stratified
    "cifar10": DatasetSpec(load_cifar10, "resnet20_cifar", ("cifar10.1", "cifar10c"), CIFAR_RESNET, CIFAR_RESNET,
                           "cifar10-c", 10_000),
    "imagenet": DatasetSpec(load_imagenet, "resnet18", ("imagenetc",), IMAGENET_RESNET, IMAGENET_RESNET, "imagenet-c",
                            50_000),
    "voc": DatasetSpec(load_voc, "deeplabv3_resnet50", ("voc-c",), DEEPLAB_VOC, DEEPLAB_VOC, "imagenet-c",
                       1_449),  # VOC 2012 segmentation val
    "sbd": DatasetSpec(load_sbd, "deeplabv3_resnet50", ("voc-c",), DEEPLAB_VOC, DEEPLAB_VOC, "imagenet-c",
                       2_857),  # SBD val
}


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load_dataset(name: str, seed: int, per_class: int | None = None, image_size: int | None = None) -> DataBundle:
    """A registered dataset, loaded once per process for each (arguments, data root): every job of a
    worker shares it instead of decoding the files again."""
    dataset_spec(name)  # a clear error for unknown names
    return _load_once(name, seed, per_class, image_size, str(data_root()))


@lru_cache(maxsize=2)
def _load_once(name: str, seed: int, per_class: int | None, image_size: int | None, _root: str) -> DataBundle:
    return DATASETS[name].load(seed, per_class, image_size)

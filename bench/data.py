"""Datasets as uint8 image tensors with seeded, stratified splits and content checksums.

Images are kept as uint8 NCHW, the format of the official corruption files; networks see
`DataBundle.normalize(images)` (float, standardised with train-split statistics).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")

    def __len__(self) -> int:
        return self.images.shape[0]

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

    @cached_property
    def checksum(self) -> str:
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            digest.update(split.checksum.encode())
        return digest.hexdigest()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 standardised with the train split's channel statistics."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (images.float().div_(255.0) - mean) / std


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


DATASETS: dict[str, Callable[[int], DataBundle]] = {"digits": load_digits}


def load_dataset(name: str, seed: int) -> DataBundle:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](seed)

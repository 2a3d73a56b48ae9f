"""Tiny data sets written in the official on-disk formats, with learnable content.

Each class c gets its own colour and a bright square at its own position, plus noise, so a small
network learns it in an epoch or two.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_BATCHES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]


def class_images(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """uint8 (N, size, size, 3) images whose content depends on the label."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.normal(90, 25, size=(n, size, size, 3))
    palette = np.random.default_rng(1234).uniform(40, 215, size=(int(labels.max()) + 1, 3))
    images += palette[labels][:, None, None, :] - 90
    square = max(2, size // 4)
    for i, label in enumerate(labels):
        row = (label * 7) % (size - square)
        col = (label * 13) % (size - square)
        images[i, row : row + square, col : col + square, :] = 250
    return images.clip(0, 255).astype(np.uint8)


def balanced_labels(per_class: int, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), per_class))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def write_cifar10(root: Path, train_per_class: int = 30, test_per_class: int = 10) -> dict[str, str]:
    """`<root>/cifar-10-batches-py/` as torchvision reads it (python pickles, latin1, uint8 rows
    in CHW order); returns the md5 of every file (torchvision pins the official ones)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = balanced_labels(train_per_class, seed=1)
    test_labels = balanced_labels(test_per_class, seed=2)
    train = class_images(train_labels, 32, seed=3)
    test = class_images(test_labels, 32, seed=4)

    def dump(name: str, images: np.ndarray, labels: np.ndarray) -> None:
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
        payload = {"batch_label": name, "labels": labels.tolist(), "data": rows, "filenames": [f"{i}.png" for i in range(len(labels))]}
        with open(folder / name, "wb") as handle:
            pickle.dump(payload, handle)

    for index, chunk in enumerate(np.array_split(np.arange(len(train_labels)), len(CIFAR_BATCHES))):
        dump(CIFAR_BATCHES[index], train[chunk], train_labels[chunk])
    dump("test_batch", test, test_labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 10000}, handle)
    return {name: _md5(folder / name) for name in [*CIFAR_BATCHES, "test_batch", "batches.meta"]}


def patch_cifar10_md5(monkeypatch, md5: dict[str, str]) -> None:
    """Make torchvision accept the fixture (it checks the official batches' md5)."""
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "train_list", [[name, md5[name]] for name in CIFAR_BATCHES])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})


def write_cifar10_1(root: Path, per_class: int = 5) -> None:
    """`<root>/cifar10.1/cifar10.1_v6_{data,labels}.npy` (uint8 NHWC images, int64 labels)."""
    folder = root / "cifar10.1"
    folder.mkdir(parents=True, exist_ok=True)
    labels = balanced_labels(per_class, seed=5)
    np.save(folder / "cifar10.1_v6_data.npy", class_images(labels, 32, seed=6))
    np.save(folder / "cifar10.1_v6_labels.npy", labels.astype(np.int64))


def write_cifar10c(folder: Path, test_images: np.ndarray, test_labels: np.ndarray, corruptions: list[str]) -> None:
    """The CIFAR-10-C layout: `<corruption>.npy` uint8 (5N, 32, 32, 3), severity s in rows
    [(s-1)N, sN), and `labels.npy` uint8 (5N,). Content: noise growing with severity."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for corruption in corruptions:
        blocks = [
            (test_images.astype(np.float64) + rng.normal(0, 12 * s, test_images.shape)).clip(0, 255).astype(np.uint8)
            for s in range(1, 6)
        ]
        np.save(folder / f"{corruption}.npy", np.concatenate(blocks))
    np.save(folder / "labels.npy", np.tile(test_labels.astype(np.uint8), 5))


def save_jpeg(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=90)


def write_image_folder(folder: Path, wnids: list[str], per_class: int, size: int, seed: int) -> None:
    """ImageFolder layout `<folder>/<wnid>/<name>.JPEG`."""
    labels = np.repeat(np.arange(len(wnids)), per_class)
    for index, (label, image) in enumerate(zip(labels, class_images(labels, size, seed))):
        save_jpeg(image, folder / wnids[label] / f"ILSVRC2012_val_{index:08d}.JPEG")


def write_imagenet(root: Path, wnids: list[str], train_per_class: int, val_per_class: int) -> None:
    write_image_folder(root / "imagenet" / "train", wnids, train_per_class, 64, seed=8)
    write_image_folder(root / "imagenet" / "val", wnids, val_per_class, 64, seed=9)


def write_imagenet_c(root: Path, wnids: list[str], corruptions: list[str], severities: list[int], per_class: int) -> None:
    """`<root>/imagenet-c/<corruption>/<severity>/<wnid>/*.JPEG`, 224 x 224 like the official files."""
    for corruption in corruptions:
        for severity in severities:
            write_image_folder(root / "imagenet-c" / corruption / str(severity), wnids, per_class, 224, seed=10 + severity)

"""Segmentation data: Pascal VOC / SBD readers, the evaluation view and training augmentation.

Conventions (shared by the whole ``bench.data.segmentation`` package): images are uint8 ``(3, H, W)`` /
``(N, 3, H, W)``; masks are ``(H, W)`` / ``(N, H, W)`` class indices (uint8 on disk and as read
here), 21 VOC classes, ``IGNORE_INDEX = 255`` (VOC object borders and crop padding). Everything
stays a uint8 tensor, so corruptions run on the evaluation crops and nothing is JPEG re-encoded.

Readers of the official on-disk layouts download nothing unless ``download=True``; a missing
folder raises ``FileNotFoundError`` saying how to get the data. :func:`load_segmentation_set`
returns plain ``(images, masks)`` tensors; ``bench.data`` wraps them in its test-set container
(``bench.data.ImageSet``, masks as per-pixel labels). This module imports nothing from
``bench.data``, which imports it lazily.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
NUM_CLASSES = len(VOC_CLASSES)  # 21
IGNORE_INDEX = 255

VOC_URLS: dict[str, str] = {
    "2012": "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    "2011": "https://thor.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar",
}
SBD_URL = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"

Pair = tuple[torch.Tensor, torch.Tensor]


def voc_palette() -> list[int]:
    """The 256-entry VOC colour map as a flat [r0, g0, b0, r1, ...] list (PIL ``putpalette`` format)."""
    palette: list[int] = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


# ----------------------------------------------------------------------------------------------
# Reading the official layouts
# ----------------------------------------------------------------------------------------------


def _voc_base_dir(year: str) -> str:
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    if year not in DATASET_YEAR_DICT:
        raise ValueError(f"unknown VOC year {year!r}; torchvision supports {', '.join(sorted(DATASET_YEAR_DICT))}")
    return str(DATASET_YEAR_DICT[year]["base_dir"])


def open_voc(root: str | os.PathLike[str], split: str = "val", year: str = "2012", download: bool = False) -> Any:
    """torchvision ``VOCSegmentation`` over ``root/VOCdevkit/VOC<year>`` (palette PNG masks, 255 borders).

    ``split`` is one of train, val, trainval (the files in ImageSets/Segmentation). Nothing is
    downloaded unless ``download=True``.
    """
    from torchvision.datasets import VOCSegmentation
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    voc_root = Path(root) / _voc_base_dir(year)
    split_file = voc_root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not download and not split_file.is_file():
        url = VOC_URLS.get(year, str(DATASET_YEAR_DICT[year]["url"]))
        raise FileNotFoundError(
            f"Pascal VOC {year} segmentation data not found: expected {split_file} (and JPEGImages/, "
            f"SegmentationClass/ next to ImageSets/ in {voc_root}). Get it with download=True (torchvision "
            f"downloads and extracts {url} into {root}, about 2 GB), or download that tar yourself and "
            f"extract it into {root}."
        )
    return VOCSegmentation(str(root), year=year, image_set=split, download=download)


def open_sbd(root: str | os.PathLike[str], split: str = "val", download: bool = False) -> Any:
    """torchvision ``SBDataset(mode="segmentation")`` over ``root/{img, cls, <split>.txt}`` (needs scipy).

    ``split`` is train (8498 images), val (2857) or train_noval. Nothing is downloaded unless
    ``download=True``. SBD masks have no 255 borders.
    """
    from torchvision.datasets import SBDataset

    split_file = Path(root) / f"{split}.txt"
    if not download and not (split_file.is_file() and (Path(root) / "cls").is_dir() and (Path(root) / "img").is_dir()):
        raise FileNotFoundError(
            f"SBD (semantic boundaries dataset) not found: expected {Path(root) / 'img'}, {Path(root) / 'cls'} and "
            f"{split_file}. Get it with download=True (torchvision downloads {SBD_URL}, about 1.4 GB, and moves "
            f"benchmark_RELEASE/dataset/{{img,cls,inst,train.txt,val.txt}} into {root}), or do the same by hand."
        )
    return SBDataset(str(root), image_set=split, mode="segmentation", download=download)


SEGMENTATION_DATASETS: dict[str, Callable[..., Any]] = {
    "voc2012": lambda root, split, download=False: open_voc(root, split, "2012", download),
    "voc2011": lambda root, split, download=False: open_voc(root, split, "2011", download),
    "sbd": open_sbd,
}


def open_segmentation_dataset(name: str, root: str | os.PathLike[str], split: str, download: bool = False) -> Any:
    if name not in SEGMENTATION_DATASETS:
        raise ValueError(f"unknown segmentation dataset {name!r}; available: {', '.join(sorted(SEGMENTATION_DATASETS))}")
    return SEGMENTATION_DATASETS[name](root, split, download=download)


def _image_tensor(image: Any) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _mask_tensor(mask: Any, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Index mask (PIL 'P'/'L' image or array) -> uint8 (H, W); values must be < num_classes or 255."""
    mode = getattr(mask, "mode", None)
    if mode is not None and mode not in ("P", "L"):
        raise ValueError(f"masks must be index images (PIL mode 'P' or 'L'), got mode {mode!r}")
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"masks must be 2-D index arrays, got shape {array.shape}")
    tensor = torch.from_numpy(array.astype(np.uint8, copy=True))
    bad = (tensor >= num_classes) & (tensor != IGNORE_INDEX)
    if bool(bad.any()):
        raise ValueError(f"mask values must be in 0..{num_classes - 1} or {IGNORE_INDEX}, got {sorted(set(tensor[bad].tolist()))}")
    return tensor


def iter_pairs(dataset: Any, limit: int | None = None) -> Iterator[Pair]:
    """(image uint8 (3, H, W), mask uint8 (H, W)) for each item of a VOCSegmentation / SBDataset."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        image, mask = dataset[index]
        image_t, mask_t = _image_tensor(image), _mask_tensor(mask)
        if image_t.shape[1:] != mask_t.shape:
            raise ValueError(f"item {index}: image {tuple(image_t.shape)} and mask {tuple(mask_t.shape)} differ in size")
        yield image_t, mask_t


def load_segmentation_set(
    name: str,
    root: str | os.PathLike[str],
    split: str,
    size: int,
    download: bool = False,
    limit: int | None = None,
) -> Pair:
    """Read a split and apply :func:`preprocess_eval` image by image into preallocated tensors.

    Returns (images uint8 (N, 3, S, S), masks uint8 (N, S, S)); ``bench.data.ImageSet(images, masks)``
    is the test-set container with its checksum.
    """
    dataset = open_segmentation_dataset(name, root, split, download)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    images = torch.empty((count, 3, size, size), dtype=torch.uint8)
    masks = torch.empty((count, size, size), dtype=torch.uint8)
    for index, (image, mask) in enumerate(iter_pairs(dataset, count)):
        images[index], masks[index] = preprocess_eval(image, mask, size)
    return images, masks


# ----------------------------------------------------------------------------------------------
# Preprocessing and augmentation
# ----------------------------------------------------------------------------------------------


def _check_pair(image: torch.Tensor, mask: torch.Tensor) -> None:
    if image.dtype != torch.uint8 or image.ndim != 3:
        raise ValueError(f"image must be uint8 (C, H, W), got {image.dtype} {tuple(image.shape)}")
    if mask.ndim != 2 or mask.shape != image.shape[1:]:
        raise ValueError(f"mask must be (H, W) = {tuple(image.shape[1:])}, got {tuple(mask.shape)}")
    if mask.is_floating_point():
        raise ValueError(f"mask must have an integer dtype, got {mask.dtype}")


def _resize_pair(image: torch.Tensor, mask: torch.Tensor, height: int, width: int) -> Pair:
    """Image: bilinear with antialias on uint8 (rounded, within 1 of PIL); mask: nearest (PIL's rule)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    if (height, width) == tuple(image.shape[1:]):
        return image, mask
    image = TF.resize(image, [height, width], interpolation=InterpolationMode.BILINEAR, antialias=True)
    # nearest-exact samples at pixel centres like PIL NEAREST; it never creates new values
    if mask.dtype != torch.uint8 and mask.numel() and (int(mask.min()) < 0 or int(mask.max()) > 255):
        raise ValueError("mask values must be in 0..255")
    small = mask.to(torch.uint8) if mask.dtype != torch.uint8 else mask
    resized = TF.resize(small[None], [height, width], interpolation=InterpolationMode.NEAREST_EXACT)[0]
    return image, resized.to(mask.dtype)


def resize_short_side(image: torch.Tensor, mask: torch.Tensor, short: int) -> Pair:
    """Resize so that the short side is ``short`` (long side truncated, as torchvision ``Resize(int)``)."""
    _check_pair(image, mask)
    h, w = image.shape[1:]
    if h <= w:
        height, width = short, int(short * w / h)
    else:
        height, width = int(short * h / w), short
    return _resize_pair(image, mask, height, width)


def preprocess_eval(image: torch.Tensor, mask: torch.Tensor, size: int) -> Pair:
    """Test-time view: resize the short side to ``size``, then center-crop ``size`` x ``size``.

    Image uint8 (3, H, W) -> uint8 (3, S, S) (bilinear, antialiased, rounded); mask (H, W) ->
    (S, S) in the mask's dtype (nearest, so its values stay a subset of the input's). The crop
    offset is round((H - S) / 2) as torchvision's ``center_crop``.
    """
    image, mask = resize_short_side(image, mask, size)
    h, w = image.shape[1:]
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return (
        image[:, top : top + size, left : left + size].contiguous(),
        mask[top : top + size, left : left + size].contiguous(),
    )


def augment_train(
    image: torch.Tensor,
    mask: torch.Tensor,
    size: int,
    generator: torch.Generator,
    scale_range: tuple[float, float] = (0.5, 2.0),
    flip_p: float = 0.5,
) -> Pair:
    """Training view: random short side, horizontal flip, random ``size`` crop with padding.

    The short side becomes round(U(scale_range) * size) (the paper: U[256, 1024] for S = 513,
    i.e. about (0.5, 2.0)); images smaller than the crop are padded bottom/right with image 0 and
    mask 255 (ignored by the loss). Randomness comes only from ``generator``: one scale, one flip
    and two crop-offset draws per call, always in that order.
    """
    _check_pair(image, mask)
    low, high = scale_range
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    image, mask = resize_short_side(image, mask, max(1, round((low + (high - low) * u) * size)))
    if float(torch.rand((), generator=generator, dtype=torch.float64)) < flip_p:
        image, mask = image.flip(-1), mask.flip(-1)
    h, w = image.shape[1:]
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0)
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        h, w = image.shape[1:]
    top = int(torch.randint(0, h - size + 1, (), generator=generator))
    left = int(torch.randint(0, w - size + 1, (), generator=generator))
    return (
        image[:, top : top + size, left : left + size].contiguous(),
        mask[top : top + size, left : left + size].contiguous(),
    )


def augment_train_batch(
    images: torch.Tensor | Sequence[torch.Tensor],
    masks: torch.Tensor | Sequence[torch.Tensor],
    size: int,
    generator: torch.Generator,
    scale_range: tuple[float, float] = (0.5, 2.0),
    flip_p: float = 0.5,
) -> Pair:
    """:func:`augment_train` on each pair (any sizes) -> stacked uint8 (N, 3, S, S) and (N, S, S)."""
    pairs = [augment_train(i, m, size, generator, scale_range, flip_p) for i, m in zip(images, masks)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


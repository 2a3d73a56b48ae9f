"""Semantic segmentation building blocks: Pascal VOC / SBD readers, preprocessing, mIoU, DeepLabV3.

Standalone pieces for the VOC robustness benchmark (torchprune notes §2.5, §4, §5), improved over
the reference in two ways: corrupted images are never JPEG re-encoded (everything stays a uint8
tensor), and mIoU is computed at dataset level from ONE confusion matrix accumulated over every
image (the reference averages per-batch mIoUs).

Conventions: images are uint8 ``(3, H, W)`` / ``(N, 3, H, W)``; masks are ``(H, W)`` / ``(N, H, W)``
class indices (uint8 on disk and in :class:`SegmentationSet`; any integer dtype is accepted by the
metrics), 21 classes, ``IGNORE_INDEX = 255`` (VOC object borders and crop padding).

API
---
Reading the official on-disk layouts (nothing is downloaded unless ``download=True``; a missing
folder raises ``FileNotFoundError`` saying how to get the data)::

    open_voc(root, split="val", year="2012", download=False) -> torchvision VOCSegmentation
        # root/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/<split>.txt}
    open_sbd(root, split="val", download=False) -> torchvision SBDataset (mode="segmentation")
        # root/{img/*.jpg, cls/*.mat, <split>.txt}
    open_segmentation_dataset(name, root, split, download=False)   # name in SEGMENTATION_DATASETS
    iter_pairs(dataset, limit=None) -> Iterator[(image uint8 (3,H,W), mask uint8 (H,W))]
    load_segmentation_set(name, root, split, size, download=False, limit=None) -> SegmentationSet

Preprocessing and augmentation (per image; every output is uint8, so corruptions run on crops)::

    resize_short_side(image, mask, short) -> (image, mask)       # bilinear+antialias / nearest
    preprocess_eval(image, mask, size) -> (image (3,S,S), mask (S,S))   # short side S, center crop S
    augment_train(image, mask, size, generator, scale_range=(0.5, 2.0), flip_p=0.5) -> (image, mask)
    augment_train_batch(images, masks, size, generator, ...) -> (N,3,S,S), (N,S,S)

Test sets::

    SegmentationSet(images uint8 (N,3,H,W), masks uint8 (N,H,W))
        .checksum (sha256), .subset(indices), .with_images(images), len()

Metrics and evaluation::

    confusion_matrix(pred, target, num_classes, ignore_index=255) -> int64 (K, K)  # rows: target
    iou_per_class(confusion) -> float64 (K,), NaN where union == 0
    mean_iou(confusion) -> float          # mean over classes with union > 0
    pixel_accuracy(confusion) -> float
    accumulate_confusion(model, batches, normalize_fn, num_classes=None) -> int64 (K, K)  # any batch stream
    evaluate_segmentation(model, images, masks, normalize_fn, batch_size=8, num_classes=None,
                          ignore_index=255) -> int64 (K, K)   # streamed, inference_mode
    normalize_imagenet(images uint8) -> float32            # torchvision segmentation statistics

Models and loss::

    create_segmentation_model(name="deeplabv3_resnet50", num_classes=21, pretrained=False,
                              pretrained_backbone=False, aux_loss=True) -> SegmentationModel
        # names: SEGMENTATION_MODELS; eval mode returns the "out" logits (N, K, H, W);
        # train mode returns {"out": ..., "aux": ...} (aux only with an aux head)
    segmentation_loss(outputs, target, aux_weight=0.5, ignore_index=255) -> scalar tensor
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.normalization import IMAGENET_MEAN, IMAGENET_STD, standardize

__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUM_CLASSES",
    "SEGMENTATION_DATASETS",
    "SEGMENTATION_MODELS",
    "VOC_CLASSES",
    "SegmentationModel",
    "SegmentationSet",
    "accumulate_confusion",
    "augment_train",
    "augment_train_batch",
    "confusion_matrix",
    "create_segmentation_model",
    "evaluate_segmentation",
    "iou_per_class",
    "iter_pairs",
    "load_segmentation_set",
    "mean_iou",
    "normalize_imagenet",
    "open_sbd",
    "open_segmentation_dataset",
    "open_voc",
    "pixel_accuracy",
    "preprocess_eval",
    "resize_short_side",
    "segmentation_loss",
    "voc_palette",
]

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
NUM_CLASSES = len(VOC_CLASSES)  # 21
IGNORE_INDEX = 255
# IMAGENET_MEAN / IMAGENET_STD (bench.normalization): the statistics of torchvision's segmentation weights.

VOC_URLS: dict[str, str] = {
    "2012": "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    "2011": "https://thor.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar",
}
SBD_URL = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"

NormalizeFn = Callable[[torch.Tensor], torch.Tensor]
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
) -> SegmentationSet:
    """Read a split and apply :func:`preprocess_eval` image by image into one preallocated set."""
    dataset = open_segmentation_dataset(name, root, split, download)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    images = torch.empty((count, 3, size, size), dtype=torch.uint8)
    masks = torch.empty((count, size, size), dtype=torch.uint8)
    for index, (image, mask) in enumerate(iter_pairs(dataset, count)):
        images[index], masks[index] = preprocess_eval(image, mask, size)
    return SegmentationSet(images, masks)


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


# ----------------------------------------------------------------------------------------------
# Test-set container
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentationSet:
    """Equal-size preprocessed test images and their masks (cf. ``bench.data.ImageSet``)."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    masks: torch.Tensor  # uint8 (N, H, W): class index or IGNORE_INDEX

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        expected = (self.images.shape[0], *self.images.shape[2:])
        if self.masks.dtype != torch.uint8 or tuple(self.masks.shape) != expected:
            raise ValueError(f"masks must be uint8 {expected}, got {self.masks.dtype} {tuple(self.masks.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices: torch.Tensor) -> SegmentationSet:
        return SegmentationSet(self.images[indices].contiguous(), self.masks[indices].contiguous())

    def with_images(self, images: torch.Tensor) -> SegmentationSet:
        """Same masks, other images (a corrupted copy: corruptions change the image only)."""
        return SegmentationSet(images, self.masks)

    @cached_property
    def checksum(self) -> str:
        digest = hashlib.sha256()
        digest.update(f"segmentation{tuple(self.images.shape)}".encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.masks.contiguous().numpy().tobytes())
        return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Metrics and evaluation
# ----------------------------------------------------------------------------------------------


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """int64 (K, K) counts, row = target class, column = predicted class; ignored pixels dropped.

    ``pred`` and ``target`` are integer tensors of the same shape (e.g. (N, H, W)). Targets other
    than 0..K-1 and ``ignore_index`` are an error, as are predictions outside 0..K-1 at counted pixels.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("pred and target must be integer class indices (take argmax of the logits first)")
    target = target.reshape(-1).to(torch.int64)
    pred = pred.reshape(-1).to(torch.int64)
    valid = target != ignore_index
    target, pred = target[valid], pred[valid]
    if target.numel():
        if int(target.min()) < 0 or int(target.max()) >= num_classes:
            raise ValueError(f"target values must be in 0..{num_classes - 1} or {ignore_index}")
        if int(pred.min()) < 0 or int(pred.max()) >= num_classes:
            raise ValueError(f"pred values must be in 0..{num_classes - 1}")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """float64 (K,) intersection over union; NaN for classes with union 0 (never seen nor predicted)."""
    confusion = confusion.to(torch.float64)
    intersection = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.full_like(union, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes with union > 0 (NaN if there is none)."""
    iou = iou_per_class(confusion)
    present = ~torch.isnan(iou)
    return float(iou[present].mean()) if bool(present.any()) else float("nan")


def pixel_accuracy(confusion: torch.Tensor) -> float:
    total = int(confusion.sum())
    return float(confusion.diagonal().sum()) / total if total else float("nan")


def normalize_imagenet(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 standardised with ImageNet statistics (torchvision's weights)."""
    return standardize(images, IMAGENET_MEAN, IMAGENET_STD)


def _logits(outputs: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    return outputs["out"] if isinstance(outputs, Mapping) else outputs


def accumulate_confusion(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    normalize_fn: NormalizeFn,
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """One int64 (K, K) confusion matrix accumulated over (uint8 images, masks) batches.

    ``model`` maps ``normalize_fn(uint8 batch)`` to logits (N, K, h, w) or a dict with "out"
    (raw torchvision models work too); logits at another resolution than the masks are
    upsampled bilinearly. K defaults to the logits' channel count. Call :func:`mean_iou` on the
    result for dataset-level mIoU. The caller sets eval mode, inference mode and precision.
    """
    confusion: torch.Tensor | None = None
    for batch, target in batches:
        logits = _logits(model(normalize_fn(batch)))
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
        k = num_classes if num_classes is not None else logits.shape[1]
        part = confusion_matrix(logits.argmax(1), target, k, ignore_index)
        confusion = part if confusion is None else confusion + part
    if confusion is None:  # no images
        k = num_classes if num_classes is not None else NUM_CLASSES
        confusion = torch.zeros((k, k), dtype=torch.int64)
    return confusion


@torch.inference_mode()
def evaluate_segmentation(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    normalize_fn: NormalizeFn,
    batch_size: int = 8,
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """:func:`accumulate_confusion` over image and mask tensors, streamed in batches, in eval mode."""
    if images.shape[0] != masks.shape[0] or tuple(images.shape[2:]) != tuple(masks.shape[1:]):
        raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} do not match")
    model.eval()
    batches = zip(images.split(batch_size), masks.split(batch_size))
    return accumulate_confusion(model, batches, normalize_fn, num_classes, ignore_index)


# ----------------------------------------------------------------------------------------------
# Models and loss
# ----------------------------------------------------------------------------------------------


class SegmentationModel(nn.Module):
    """backbone -> classifier (+ aux_classifier), upsampled to the input size.

    Same submodule names as torchvision's segmentation models (``backbone``, ``classifier``,
    ``aux_classifier``), so their state dicts load unchanged. In eval mode ``forward`` returns the
    "out" logits tensor (N, K, H, W) and skips the aux head; in train mode it returns a dict with
    "out" and, when there is an aux head, "aux". ``get_classifier()`` is the final 1x1 conv of the
    main head (timm convention, used by ``bench.pruning.classifier_name``).
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Module, aux_classifier: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def get_classifier(self) -> nn.Module:
        head = self.classifier
        return head[-1] if isinstance(head, nn.Sequential) else head

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        out = F.interpolate(self.classifier(features["out"]), size=size, mode="bilinear", align_corners=False)
        if not self.training:
            return out
        result = {"out": out}
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features["aux"])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


def _tiny_backbone(width: int = 16) -> nn.Module:
    """Output stride 4 toy backbone for tests: 'aux' after stride 4, 'out' after a dilated stage."""
    from torchvision.models._utils import IntermediateLayerGetter

    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())

    body = nn.Sequential(
        OrderedDict(
            stem=block(3, width, stride=2),
            layer1=block(width, 2 * width, stride=2),
            layer2=nn.Sequential(block(2 * width, 4 * width, dilation=2), block(4 * width, 4 * width, dilation=2)),
        )
    )
    return IntermediateLayerGetter(body, return_layers={"layer1": "aux", "layer2": "out"})


def _fcn_tiny(num_classes: int, aux_loss: bool, **_: Any) -> nn.Module:
    from torchvision.models.segmentation.fcn import FCNHead

    width = 16
    aux = FCNHead(2 * width, num_classes) if aux_loss else None
    return SegmentationModel(_tiny_backbone(width), FCNHead(4 * width, num_classes), aux)


def _torchvision_builder(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, aux_loss: bool, pretrained: bool, pretrained_backbone: bool) -> nn.Module:
        from torchvision.models import segmentation

        builder = getattr(segmentation, name)
        weights = "DEFAULT" if pretrained else None
        weights_backbone = "DEFAULT" if pretrained_backbone and not pretrained else None
        try:
            net = builder(weights=weights, weights_backbone=weights_backbone, num_classes=num_classes, aux_loss=aux_loss)
        except OSError as error:  # URLError and friends: no network and nothing in the torch hub cache
            import torch.hub

            raise RuntimeError(
                f"could not fetch pretrained weights for {name} ({error}); without network access place the "
                f"checkpoint files in {Path(torch.hub.get_dir()) / 'checkpoints'} or use pretrained=False"
            ) from error
        return SegmentationModel(net.backbone, net.classifier, net.aux_classifier)

    return build


SEGMENTATION_MODELS: dict[str, Callable[..., nn.Module]] = {
    "deeplabv3_resnet50": _torchvision_builder("deeplabv3_resnet50"),
    "deeplabv3_resnet101": _torchvision_builder("deeplabv3_resnet101"),
    "deeplabv3_mobilenet_v3_large": _torchvision_builder("deeplabv3_mobilenet_v3_large"),
    "fcn_resnet50": _torchvision_builder("fcn_resnet50"),
    "fcn_tiny": _fcn_tiny,  # ~40k parameters, for tests and smoke runs
}


def create_segmentation_model(
    name: str = "deeplabv3_resnet50",
    num_classes: int = NUM_CLASSES,
    pretrained: bool = False,
    pretrained_backbone: bool = False,
    aux_loss: bool = True,
) -> SegmentationModel:
    """A :class:`SegmentationModel`; random init (no network access) unless weights are asked for.

    ``pretrained`` loads torchvision's COCO-with-VOC-labels weights (num_classes must be 21);
    ``pretrained_backbone`` loads ImageNet backbone weights only. Both come from the torch hub
    cache or the network. Every ReLU is made non-inplace (pruners hook activations).
    """
    if name not in SEGMENTATION_MODELS:
        raise ValueError(f"unknown segmentation model {name!r}; available: {', '.join(sorted(SEGMENTATION_MODELS))}")
    if name == "fcn_tiny" and (pretrained or pretrained_backbone):
        raise ValueError("fcn_tiny has no pretrained weights")
    model = SEGMENTATION_MODELS[name](
        num_classes=num_classes, aux_loss=aux_loss, pretrained=pretrained, pretrained_backbone=pretrained_backbone
    )
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    assert isinstance(model, SegmentationModel)
    return model


def segmentation_loss(
    outputs: torch.Tensor | Mapping[str, torch.Tensor],
    target: torch.Tensor,
    aux_weight: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Cross-entropy over non-ignored pixels of "out", plus ``aux_weight`` x that of "aux" if present.

    ``outputs`` is a logits tensor (N, K, H, W) or a dict as returned in train mode; ``target`` is
    (N, H, W) of any integer dtype. Each term is the mean over counted pixels (0, not NaN, when a
    batch has none).
    """

    def term(logits: torch.Tensor) -> torch.Tensor:
        labels = target.to(torch.int64)
        total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
        return total / (labels != ignore_index).sum().clamp_min(1)

    if not isinstance(outputs, Mapping):
        return term(outputs)
    loss = term(outputs["out"])
    if "aux" in outputs and aux_weight:
        loss = loss + aux_weight * term(outputs["aux"])
    return loss

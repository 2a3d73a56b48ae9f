"""Semantic segmentation building blocks: Pascal VOC / SBD readers, preprocessing, mIoU, DeepLabV3.

Standalone pieces for the VOC robustness benchmark (torchprune notes §2.5, §4, §5), improved over
the reference in two ways: corrupted images are never JPEG re-encoded (everything stays a uint8
tensor), and mIoU is computed at dataset level from ONE confusion matrix accumulated over every
image (the reference averages per-batch mIoUs).

Conventions: images are uint8 ``(3, H, W)`` / ``(N, 3, H, W)``; masks are ``(H, W)`` / ``(N, H, W)``
class indices (uint8 on disk and as read; any integer dtype is accepted by the metrics), 21
classes, ``IGNORE_INDEX = 255`` (VOC object borders and crop padding). Test sets are
``bench.data.ImageSet(images, masks)`` (masks as per-pixel labels), the container of every task.
Input statistics live in ``bench.data.normalization``.

Modules: :mod:`~bench.data.segmentation.data` (readers, evaluation view, augmentation) and
:mod:`~bench.data.segmentation.evaluation` (metrics, loss), re-exported here; the networks are in the
models layer, :mod:`~bench.models.segmentation`.

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
    load_segmentation_set(name, root, split, size, download=False, limit=None)
        -> (images uint8 (N,3,S,S), masks uint8 (N,S,S))     # wrap in bench.data.ImageSet

Preprocessing and augmentation (per image; every output is uint8, so corruptions run on crops)::

    resize_short_side(image, mask, short) -> (image, mask)       # bilinear+antialias / nearest
    preprocess_eval(image, mask, size) -> (image (3,S,S), mask (S,S))   # short side S, center crop S
    augment_train(image, mask, size, generator, scale_range=(0.5, 2.0), flip_p=0.5) -> (image, mask)
    augment_train_batch(images, masks, size, generator, ...) -> (N,3,S,S), (N,S,S)

Metrics and evaluation::

    confusion_matrix(pred, target, num_classes, ignore_index=255) -> int64 (K, K)  # rows: target
    iou_per_class(confusion) -> float64 (K,), NaN where union == 0
    mean_iou(confusion) -> float          # mean over classes with union > 0
    pixel_accuracy(confusion) -> float
    accumulate_confusion(model, batches, normalize_fn, num_classes=None) -> int64 (K, K)  # any batch stream
    evaluate_segmentation(model, images, masks, normalize_fn, batch_size=8, num_classes=None,
                          ignore_index=255) -> int64 (K, K)   # streamed, inference_mode
    normalize_imagenet(images uint8) -> float32            # torchvision segmentation statistics

Loss (the networks, ``bench.models.segmentation.create_segmentation_model``, return the "out"
logits (N, K, H, W) in eval mode and {"out": ..., "aux": ...} in train mode; the loss takes either)::

    segmentation_loss(outputs, target, aux_weight=0.5, ignore_index=255) -> scalar tensor
"""

from __future__ import annotations

from bench.data.segmentation.data import (
    IGNORE_INDEX,
    NUM_CLASSES,
    SEGMENTATION_DATASETS,
    VOC_CLASSES,
    augment_train,
    augment_train_batch,
    iter_pairs,
    load_segmentation_set,
    open_sbd,
    open_segmentation_dataset,
    open_voc,
    preprocess_eval,
    resize_short_side,
    voc_palette,
)
from bench.data.segmentation.evaluation import (
    accumulate_confusion,
    confusion_matrix,
    evaluate_segmentation,
    iou_per_class,
    mean_iou,
    normalize_imagenet,
    pixel_accuracy,
    segmentation_loss,
)

__all__ = [
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "SEGMENTATION_DATASETS",
    "VOC_CLASSES",
    "accumulate_confusion",
    "augment_train",
    "augment_train_batch",
    "confusion_matrix",
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

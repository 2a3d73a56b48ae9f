"""Segmentation metrics and loss: confusion matrix, IoU / mIoU, streamed evaluation, cross-entropy.

mIoU is computed at dataset level from ONE confusion matrix accumulated over every image (the
reference averages per-batch mIoUs): :func:`accumulate_confusion` over any stream of (uint8
images, masks) batches, or :func:`evaluate_segmentation` over two tensors, then :func:`mean_iou`.
Pixels labelled ``IGNORE_INDEX`` (255) count nowhere, neither in the metrics nor in the loss.
Networks see :func:`normalize_imagenet` (torchvision's segmentation statistics, from
``bench.data.normalization``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from bench.data.normalization import IMAGENET_MEAN, IMAGENET_STD, standardize
from bench.data.segmentation.data import IGNORE_INDEX, NUM_CLASSES

NormalizeFn = Callable[[torch.Tensor], torch.Tensor]


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

"""Seeded training with fixed masks, and streaming evaluation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.data import DataBundle, TestSource
from bench.pruning import ParameterMasks, enforce_parameter_masks
from bench.schema import Recipe


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def lr_factor(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimizer step `step` (per-iteration schedule, linear warmup)."""
    epoch = step / steps_per_epoch
    warmup = recipe.warmup_epochs * steps_per_epoch
    factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if recipe.schedule == "cosine":
        factor *= 0.5 * (1.0 + math.cos(math.pi * min(epoch / max(recipe.epochs, 1), 1.0)))
    elif recipe.schedule == "multistep":
        factor *= recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    elif recipe.schedule == "poly":
        factor *= max(0.0, 1.0 - epoch / max(recipe.epochs, 1)) ** 0.9
    return factor


def augment(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Batched uint8 augmentation: 'crop-flip' (pad 4, random 32 crop, h-flip) or 'shift' (+-3 px)."""
    if kind == "none":
        return images
    n, _, h, w = images.shape
    pad = 4 if kind == "crop-flip" else 3
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, images.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, images.shape[1], h, w)
    out = out.gather(3, cols)
    if kind == "crop-flip":
        flip = torch.rand(n, generator=generator) < 0.5
        out[flip] = out[flip].flip(-1)
    return out


def corruption_mix(images: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """The paper's Mix training: each image stays clean with probability 1/6, else gets one of
    `recipe.corruption_mix` (uniform) at a uniform severity 1-5, with the test files' constants."""
    if not recipe.corruption_mix:
        return images
    from bench.corruptions import corrupt
    from bench.corruptions.tables import table_named

    table = table_named(recipe.corruption_table)
    n = images.shape[0]
    severity = torch.randint(0, 6, (n,), generator=generator)  # 0 = clean
    which = torch.randint(0, len(recipe.corruption_mix), (n,), generator=generator)
    seeds = torch.randint(0, 2**62, (len(recipe.corruption_mix), 6), generator=generator)
    out = images.clone()
    for c, name in enumerate(recipe.corruption_mix):
        for s in range(1, 6):
            chosen = torch.nonzero((which == c) & (severity == s)).flatten()
            if len(chosen):
                out[chosen] = corrupt(images[chosen], name, table[name][s - 1], int(seeds[c, s]))
    return out


def train(
    model: nn.Module,
    data: DataBundle,
    recipe: Recipe,
    seed: int,
    masks: ParameterMasks | None = None,
    desc: str = "train",
    progress: bool = True,
) -> None:
    """Train in place; pruned parameter entries (mask False: weights, biases, norm affine) are
    re-zeroed after every optimizer step, so they stay exactly zero."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = make_optimizer(model, recipe)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    train_set = data.train
    steps_per_epoch = math.ceil(len(train_set) / recipe.batch_size)
    segmentation = data.task == "segmentation"
    model.train()
    step = 0
    for _ in tqdm(range(recipe.epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        order = torch.randperm(len(train_set), generator=generator)
        for batch in order.split(recipe.batch_size):
            if segmentation and len(batch) < 2:
                continue  # BatchNorm after global pooling (ASPP) needs two images
            factor = lr_factor(recipe, step, steps_per_epoch)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            images = corruption_mix(train_set.images[batch], recipe, generator)
            if segmentation:
                from bench.segmentation import augment_train_batch, segmentation_loss

                images, targets = augment_train_batch(images, train_set.labels[batch], images.shape[-1], generator)
                loss = segmentation_loss(model(data.normalize(images)), targets)
            else:
                images = augment(images, recipe.augment, generator)
                loss = F.cross_entropy(model(data.normalize(images)), train_set.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if masks is not None:
                enforce_parameter_masks(model, masks)
            step += 1
    model.eval()


def precision_context(model: nn.Module, precision: str) -> torch.autocast:
    """Autocast to bfloat16 on the model's device for `precision="bf16"`; a no-op for fp32."""
    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.inference_mode()
def correct_predictions(model: nn.Module, data: DataBundle, test: TestSource, batch_size: int = 256,
                        precision: str = "fp32") -> torch.Tensor:
    """Bool per image: top-1 prediction equals the label. Batches stream; no per-image Python work."""
    model.eval()
    with precision_context(model, precision):
        hits = [model(data.normalize(images)).argmax(1) == labels for images, labels in test.batches(batch_size)]
    return torch.cat(hits)


@torch.inference_mode()
def segmentation_confusion(model: nn.Module, data: DataBundle, test: TestSource, batch_size: int = 8,
                           precision: str = "fp32") -> torch.Tensor:
    """One (K, K) confusion matrix over every pixel of the test set (dataset-level mIoU)."""
    from bench.segmentation import accumulate_confusion

    model.eval()
    with precision_context(model, precision):
        return accumulate_confusion(model, test.batches(batch_size), data.normalize, data.num_classes)


def evaluate(model: nn.Module, data: DataBundle, test: TestSource, precision: str = "fp32") -> dict[str, object]:
    """The evaluation artifact of one network on one test set.

    Classification: top-1 accuracy and the per-example hits behind it. Segmentation: mIoU of the
    dataset-level confusion matrix (stored too); no per-example hits.
    """
    from bench.schema import pack_hits

    if data.task == "segmentation":
        from bench.segmentation import mean_iou

        confusion = segmentation_confusion(model, data, test, precision=precision)
        return {"accuracy": mean_iou(confusion), "confusion": confusion.tolist(), "n_examples": len(test)}
    hits = correct_predictions(model, data, test, precision=precision).numpy()
    return {"hits": pack_hits(hits), "accuracy": float(hits.mean()), "n_examples": int(hits.size)}


def accuracy(model: nn.Module, data: DataBundle, test: TestSource, batch_size: int = 256) -> float:
    return float(correct_predictions(model, data, test, batch_size).float().mean())

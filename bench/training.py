"""Seeded training with fixed masks, and streaming evaluation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.data import DataBundle, ImageSet
from bench.pruning import Masks, apply_masks
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


def train(
    model: nn.Module,
    data: DataBundle,
    recipe: Recipe,
    seed: int,
    masks: Masks | None = None,
    desc: str = "train",
    progress: bool = True,
) -> None:
    """Train in place; pruned weights (mask False) are re-zeroed after every optimizer step."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = make_optimizer(model, recipe)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    train_set = data.train
    steps_per_epoch = math.ceil(len(train_set) / recipe.batch_size)
    model.train()
    step = 0
    for _ in tqdm(range(recipe.epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        order = torch.randperm(len(train_set), generator=generator)
        for batch in order.split(recipe.batch_size):
            factor = lr_factor(recipe, step, steps_per_epoch)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            images = augment(train_set.images[batch], recipe.augment, generator)
            loss = F.cross_entropy(model(data.normalize(images)), train_set.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if masks is not None:
                apply_masks(model, masks)
            step += 1
    model.eval()


@torch.inference_mode()
def correct_predictions(model: nn.Module, data: DataBundle, test: ImageSet, batch_size: int = 256) -> torch.Tensor:
    """Bool per image: top-1 prediction equals the label. Batches stream; no per-image Python work."""
    model.eval()
    hits = [
        model(data.normalize(images)).argmax(1) == labels
        for images, labels in zip(test.images.split(batch_size), test.labels.split(batch_size))
    ]
    return torch.cat(hits)


def accuracy(model: nn.Module, data: DataBundle, test: ImageSet, batch_size: int = 256) -> float:
    return float(correct_predictions(model, data, test, batch_size).float().mean())

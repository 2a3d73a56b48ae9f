"""Seeded training with fixed masks, and streaming evaluation."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.core.devices import fits_on_device, module_device
from bench.data import DataBundle, ImageSet, TestSource
from bench.data.readers import ImageFiles, NpyRows, loader_batches
from bench.pruning import ParameterMasks, enforce_parameter_masks
from bench.results.schema import Recipe


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
    """Batched uint8 augmentation: 'crop-flip' (pad 4, random 32 crop, h-flip) or 'shift' (+-3 px).

    Runs on the images' device; the random offsets and flips come from the CPU `generator`."""
    if kind == "none":
        return images
    n, _, h, w = images.shape
    device = images.device
    pad = 4 if kind == "crop-flip" else 3
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
    rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None].expand(n, images.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :].expand(n, images.shape[1], h, w)
    out = out.gather(3, cols)
    if kind == "crop-flip":
        flip = (torch.rand(n, generator=generator) < 0.5).to(device)
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


def corruption_mix(images: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """The paper's Mix training: each image stays clean with probability 1/6, else gets one of
    `recipe.corruption_mix` (uniform) at a uniform severity 1-5, with the test files' constants.

    The corruptions run on the images' device; every draw comes from the CPU `generator`."""
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
                index = chosen.to(images.device)
                out[index] = corrupt(images[index], name, table[name][s - 1], int(seeds[c, s]))
    return out


def resident(images: ImageSet, device: torch.device) -> ImageSet:
    """`images` moved to `device` once, for a whole training run or evaluation, when the set fits
    there (bench.core.devices.fits_on_device); else (always on the CPU) `images` itself, and batches are
    copied one by one."""
    if images.images.device == device or not fits_on_device(images.images.nbytes + images.labels.nbytes, device):
        return images
    return ImageSet(images.images.to(device), images.labels.to(device))


_FRESH_OUTPUT = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)  # modules whose output is always a new tensor


def _relus_after_batchnorm(model: nn.Module) -> Iterator[nn.ReLU]:
    """The out-of-place ReLUs of `model` that directly follow a BatchNorm in an `nn.Sequential`,
    registered there alone (a ReLU shared with another place would run in place there too), where
    no forward hook could keep the BatchNorm's output (none on either module, none global)."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return
    registrations = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    for sequential in (m for m in model.modules() if type(m) is nn.Sequential):
        children = list(sequential.children())
        for before, relu in zip(children, children[1:]):
            if (type(relu) is nn.ReLU and not relu.inplace and type(before) in _FRESH_OUTPUT and registrations[id(relu)] == 1
                    and not (before._forward_hooks or relu._forward_pre_hooks or relu._forward_hooks)):
                yield relu


@contextmanager
def inplace_relus(model: nn.Module) -> Iterator[None]:
    """Run the ReLUs that directly follow a BatchNorm in an `nn.Sequential` in place while this
    holds (a context manager; restored after).

    Bitwise the same outputs: the BatchNorm's output is a new tensor that the Sequential hands to
    the ReLU alone, so overwriting it changes nothing else (`_relus_after_batchnorm` says which
    qualify; ReLUs of any other shape, residual sums or custom forwards, stay as built). It saves
    writing a second activation tensor per layer: ~10 % of `bench verify`'s CPU on a digits file,
    ~1 % of a default run (benchmarks/RESULTS.md). The models build their ReLUs out of place
    because pruners record BatchNorm outputs through hooks."""
    flipped = list(_relus_after_batchnorm(model))
    for relu in flipped:
        relu.inplace = True
    try:
        yield
    finally:
        for relu in flipped:
            relu.inplace = False


def compiled_forward(model: nn.Module, compile_model: bool) -> nn.Module:
    """`model`, or with `compile_model` a torch.compile'd wrapper that shares its parameters (so
    training it trains `model`)."""
    return torch.compile(model) if compile_model else model  # type: ignore[return-value]


def train(
    model: nn.Module,
    data: DataBundle,
    recipe: Recipe,
    seed: int,
    masks: ParameterMasks | None = None,
    desc: str = "train",
    progress: bool = True,
    precision: str = "fp32",
    compile_model: bool = False,
) -> None:
    """Train in place on the model's device; pruned parameter entries (mask False: weights, biases,
    norm affine) are re-zeroed after every optimizer step, so they stay exactly zero.

    `precision="bf16"`: forward and loss under bfloat16 autocast, fp32 master weights (another
    numeric result than fp32). `compile_model`: forward and backward through torch.compile. Data
    order and augmentation draw from a CPU generator, so a seed means the same batches on every
    device. Off the CPU the training images are uploaded once (`resident`); batches are indexed,
    augmented and normalised there."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    device = module_device(model)
    data = replace(data, train=resident(data.train, device))
    forward = compiled_forward(model, compile_model)
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
            images, targets = training_batch(data, recipe, batch, generator, device)
            training_step(model, optimizer, data, images, targets, masks, precision, forward)
            step += 1
    model.eval()


def training_batch(data: DataBundle, recipe: Recipe, indices: torch.Tensor, generator: torch.Generator,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented uint8 images and targets of one training batch, on `device` (indexed where the
    training set lives, then moved, so Mix corruptions and augmentation run on the device; draws
    from the CPU `generator`)."""
    train_set = data.train
    indices = indices.to(train_set.images.device)
    images = corruption_mix(train_set.images[indices].to(device), recipe, generator)
    targets = train_set.labels[indices].to(device)
    if data.task == "segmentation":
        from bench.data.segmentation import augment_train_batch

        return augment_train_batch(images, targets, images.shape[-1], generator)
    return augment(images, recipe.augment, generator), targets


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: DataBundle, images: torch.Tensor,
                  targets: torch.Tensor, masks: ParameterMasks | None = None, precision: str = "fp32",
                  forward: Callable[[torch.Tensor], Any] | None = None) -> torch.Tensor:
    """One optimizer step on a batch already on the model's device; returns the (detached) loss.

    Forward and loss run under `precision_context` (bf16 autocast or nothing); the parameters and
    their gradients stay fp32. `forward`: the model's compiled forward (`compiled_forward`), if
    any. Masked-out entries are re-zeroed after the step. No tensor leaves the device and nothing
    is read back (no host synchronisation)."""
    with precision_context(images.device, precision):
        outputs = (forward or model)(data.normalize(images))
        if data.task == "segmentation":
            from bench.data.segmentation import segmentation_loss

            loss = segmentation_loss(outputs, targets)
        else:
            loss = F.cross_entropy(outputs, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if masks is not None:
        enforce_parameter_masks(model, masks)
    return loss.detach()


def precision_context(where: nn.Module | torch.device, precision: str) -> AbstractContextManager[Any]:
    """Autocast to bfloat16 on the device of `where` (a model or a device) for `precision="bf16"`;
    nothing for fp32."""
    if precision != "bf16":
        return nullcontext()
    device = where if isinstance(where, torch.device) else module_device(where)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def batch_hits(model: nn.Module, data: DataBundle, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bool per image of one batch (on the model's device): top-1 prediction equals the label."""
    return model(data.normalize(images)).argmax(1) == labels


LOADER_WORKERS = 4  # DataLoader processes that read and decode a file-backed test set for a GPU


def device_batches(test: TestSource, batch_size: int, device: torch.device,
                   loader_workers: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (images, labels) batches of `test`, on `device`.

    An in-memory set (ImageSet), and off the CPU the rows of a `.npy` (one CIFAR-10-C severity,
    CIFAR-10.1), are uploaded once when they fit (`resident`) and split there. Other file-backed
    sets (ImageFiles: decoded images) are read by `loader_workers` DataLoader processes (default:
    LOADER_WORKERS on CUDA, none elsewhere) into pinned memory on CUDA, and copied asynchronously.
    Everything on the CPU streams batch by batch as read, as before."""
    if isinstance(test, NpyRows) and fits_on_device(test.nbytes, device):
        test = ImageSet(*test.batch(0, len(test)))  # all its rows, read once
    if isinstance(test, ImageSet):
        test = resident(test, device)
    elif isinstance(test, NpyRows | ImageFiles):
        if loader_workers is None:
            loader_workers = min(LOADER_WORKERS, os.cpu_count() or 1) if device.type == "cuda" else 0
        if loader_workers > 0:
            pinned = device.type == "cuda"
            for images, labels in loader_batches(test, batch_size, loader_workers, pinned):
                yield images.to(device, non_blocking=pinned), labels.to(device, non_blocking=pinned)
            return
    for images, labels in test.batches(batch_size):
        yield images.to(device), labels.to(device)


@torch.inference_mode()
def correct_predictions(model: nn.Module, data: DataBundle, test: TestSource, batch_size: int = 256,
                        precision: str = "fp32", compile_model: bool = False) -> torch.Tensor:
    """Bool per image (on the CPU): top-1 prediction equals the label. Batches stream to the model's
    device (`device_batches`); no per-image Python work. `compile_model`: through torch.compile."""
    model.eval()
    device = module_device(model)
    forward = compiled_forward(model, compile_model)
    with precision_context(device, precision), inplace_relus(model):
        hits = [batch_hits(forward, data, images, labels) for images, labels in device_batches(test, batch_size, device)]
    return torch.cat(hits).cpu()


@torch.inference_mode()
def segmentation_confusion(model: nn.Module, data: DataBundle, test: TestSource, batch_size: int = 8,
                           precision: str = "fp32", compile_model: bool = False) -> torch.Tensor:
    """One (K, K) confusion matrix (on the CPU) over every pixel of the test set (dataset-level mIoU)."""
    from bench.data.segmentation import accumulate_confusion

    model.eval()
    device = module_device(model)
    forward = compiled_forward(model, compile_model)
    with precision_context(device, precision):
        return accumulate_confusion(forward, device_batches(test, batch_size, device), data.normalize,
                                    data.num_classes).cpu()


def evaluate(model: nn.Module, data: DataBundle, test: TestSource, precision: str = "fp32",
             compile_model: bool = False) -> dict[str, object]:
    """The evaluation artifact of one network on one test set (through torch.compile with
    `compile_model`).

    Classification: top-1 accuracy and the per-example hits behind it. Segmentation: mIoU of the
    dataset-level confusion matrix (stored too); no per-example hits.
    """
    from bench.results.schema import pack_hits

    if data.task == "segmentation":
        from bench.data.segmentation import mean_iou

        confusion = segmentation_confusion(model, data, test, precision=precision, compile_model=compile_model)
        return {"accuracy": mean_iou(confusion), "confusion": confusion.tolist(), "n_examples": len(test)}
    hits = correct_predictions(model, data, test, precision=precision, compile_model=compile_model).numpy()
    return {"hits": pack_hits(hits), "accuracy": float(hits.mean()), "n_examples": int(hits.size)}


def accuracy(model: nn.Module, data: DataBundle, test: TestSource, batch_size: int = 256) -> float:
    return float(correct_predictions(model, data, test, batch_size).float().mean())

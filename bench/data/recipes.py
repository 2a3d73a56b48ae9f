"""The training recipes (parent schedule and retrain budget) that the built-in dataset specs (bench.data.builtin) use."""

from __future__ import annotations

from bench.results.schema import Recipe

DIGITS_TRAIN = Recipe(epochs=30, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=5e-4, schedule="cosine")
DIGITS_RETRAIN = DIGITS_TRAIN.model_copy(update={"epochs": 8, "lr": 1e-3})

# Fashion-MNIST (55k train images, fashion_cnn): the digits recipe at batch 128, 24 epochs, so that the whole
# protocol (parent, 4 pruners x 8 ratios, every test set) fits 40 minutes per seed on 2 CPU cores
# (docs/datasets.md, "Fashion-MNIST"; benchmarks/RESULTS.md)
FASHION_TRAIN = Recipe(epochs=24, batch_size=128, optimizer="adam", lr=3e-3, weight_decay=5e-4, schedule="cosine")
FASHION_RETRAIN = FASHION_TRAIN.model_copy(update={"epochs": 2, "lr": 1e-3})

# The paper's CIFAR ResNet schedule (torchprune training/cifar/resnet.yaml), also used for retraining.
CIFAR_RESNET = Recipe(
    epochs=182, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
    schedule="multistep", milestones=(91, 136), gamma=0.1, warmup_epochs=5, augment="crop-flip",
)

# torchprune training/imagenet/resnet.yaml (90 epochs, lr 0.1 at batch 256, steps 30/60/80, 5 warmup);
# with --pretrained, pass --epochs 0 to keep timm's weights as the parent.
IMAGENET_RESNET = Recipe(
    epochs=90, batch_size=256, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
    schedule="multistep", milestones=(30, 60, 80), gamma=0.1, warmup_epochs=5, augment="crop-flip",
)

# torchprune training/voc/deeplab.yaml: SGD lr 0.02, wd 1e-4, batch 16, 45 epochs, poly(0.9)
DEEPLAB_VOC = Recipe(epochs=45, batch_size=16, optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4,
                     schedule="poly")

"""cifar10: the nominal CIFAR-10 test set only (the runner always evaluates the clean test set).

Selecting it pins the dataset: `bench run --suite cifar10` trains on torchvision's CIFAR-10 with
the paper's 45k/5k split, augmentation and normalisation (bench.data.load_cifar10).
"""

from __future__ import annotations

from bench.api import EVERYTHING, DataBundle, Selection, Suite, TestDistribution


class Cifar10(Suite):
    name = "cifar10"
    description = "the clean CIFAR-10 test set (nominal only)"
    datasets = ("cifar10",)

    def distributions(self, data: DataBundle, seed: int, selection: Selection = EVERYTHING) -> list[TestDistribution]:
        return []

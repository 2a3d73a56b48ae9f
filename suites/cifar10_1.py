"""cifar10.1: CIFAR-10.1 v6 (Recht et al. 2018), 2,000 new test images drawn like CIFAR-10's.

Files `<data root>/cifar10.1/cifar10.1_v6_data.npy` (uint8 (2000, 32, 32, 3)) and
`cifar10.1_v6_labels.npy`, from github.com/modestyachts/CIFAR-10.1 (`--download` fetches them).
Upstream publishes no checksums: the first use records their sha256 in the folder's manifest and
later runs refuse files that differ. Before that, the images are checked against the clean CIFAR-10
test set (uint8, its H x W x C) and the labels for one class in [0, 10) per image. Same
normalisation as CIFAR-10 (the network's).
"""

from __future__ import annotations

from bench.api import (
    EVERYTHING,
    DataBundle,
    DataMissing,
    NpyRows,
    Selection,
    Suite,
    TestDistribution,
    check_npy_images,
    check_npy_labels,
    data_root,
    download_allowed,
    local_manifest,
    verify_files,
)

URL = "https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/"
FILES = ("cifar10.1_v6_data.npy", "cifar10.1_v6_labels.npy")


class Cifar10_1(Suite):
    name = "cifar10.1"
    description = "CIFAR-10.1 v6: 2,000 re-collected CIFAR-10 test images"
    datasets = ("cifar10",)

    def distributions(self, data: DataBundle, seed: int, selection: Selection = EVERYTHING) -> list[TestDistribution]:
        folder = data_root() / "cifar10.1"
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing and download_allowed():
            from torchvision.datasets.utils import download_url

            for name in missing:
                download_url(URL + name, str(folder), filename=name)
        elif missing:
            raise DataMissing.not_found(
                f"CIFAR-10.1 v6 ({', '.join(missing)})", folder,
                f"rerun with --download, or fetch {', '.join(URL + n for n in FILES)} into that folder",
            )
        _, c, h, w = data.test.images.shape
        rows = check_npy_images(folder / FILES[0], (h, w, c), data.name)  # before the first use records them
        check_npy_labels(folder / FILES[1], rows, data.num_classes)
        hashes = verify_files(folder, local_manifest(folder, FILES), FILES)
        images = NpyRows(str(folder / FILES[0]), str(folder / FILES[1]), 0, rows, (hashes[FILES[0]], hashes[FILES[1]]))
        return [TestDistribution(name=f"{self.name}/v6", suite=self.name, images=images)]

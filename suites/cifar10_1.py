"""cifar10.1: CIFAR-10.1 v6 (Recht et al. 2018), 2,000 new test images drawn like CIFAR-10's.

Files `<data root>/cifar10.1/cifar10.1_v6_data.npy` (uint8 (2000, 32, 32, 3)) and
`cifar10.1_v6_labels.npy`, from github.com/modestyachts/CIFAR-10.1 (`--download` fetches them).
Upstream publishes no checksums: the first use records their sha256 in the folder's manifest and
later runs refuse files that differ. Same normalisation as CIFAR-10 (the network's).
"""

from __future__ import annotations

from bench.api import EVERYTHING, DataBundle, Selection, Suite, TestDistribution
from bench.files import (
    DataMissing,
    NpyRows,
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
        hashes = verify_files(folder, local_manifest(folder, FILES), FILES)
        images = NpyRows(str(folder / FILES[0]), str(folder / FILES[1]), 0, _rows(folder / FILES[0]),
                         (hashes[FILES[0]], hashes[FILES[1]]))
        return [TestDistribution(name=f"{self.name}/v6", suite=self.name, images=images)]


def _rows(path) -> int:
    import numpy as np

    return int(np.load(path, mmap_mode="r").shape[0])

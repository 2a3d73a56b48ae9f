"""cifar100c: the official CIFAR-100-C files, 19 corruptions x 5 severities (layout: suites.cifar_c).

`<data root>/CIFAR-100-C/` (or `$PRUNEBENCH_CIFAR100C`): the CIFAR-10-C layout over the 10k
CIFAR-100 test images, labels the fine labels. `--download` fetches CIFAR-100-C.tar from Zenodo and
checks it against the md5 Zenodo lists (no sha256 is published; the folder's manifest records the
extracted files' on first use).
"""

from __future__ import annotations

from bench.api import Archive
from suites.cifar_c import CifarCFiles


class Cifar100C(CifarCFiles):
    name = "cifar100c"
    description = "official CIFAR-100-C .npy files, 19 corruptions x 5 severities (memory-mapped)"
    datasets = ("cifar100",)
    folder_name = "CIFAR-100-C"
    folder_env = "PRUNEBENCH_CIFAR100C"
    archive = Archive(
        url="https://zenodo.org/records/3555552/files/CIFAR-100-C.tar?download=1",
        filename="CIFAR-100-C.tar",
        md5="11f0ed0f1191edbf9fa23466ae6021d3",  # as listed on Zenodo
    )

"""cifar10c: the official CIFAR-10-C files, 19 corruptions x 5 severities (layout: suites.cifar_c).

`<data root>/CIFAR-10-C/` (or `$PRUNEBENCH_CIFAR10C`); `--download` fetches CIFAR-10-C.tar from
Zenodo and checks it against the pinned md5 and sha256 below.
"""

from __future__ import annotations

from bench.api import Archive
from suites.cifar_c import CifarCFiles


class Cifar10C(CifarCFiles):
    name = "cifar10c"
    description = "official CIFAR-10-C .npy files, 19 corruptions x 5 severities (memory-mapped)"
    datasets = ("cifar10",)
    folder_name = "CIFAR-10-C"
    folder_env = "PRUNEBENCH_CIFAR10C"
    archive = Archive(
        url="https://zenodo.org/records/2535967/files/CIFAR-10-C.tar?download=1",
        filename="CIFAR-10-C.tar",
        md5="56bf5dcef84df0e2308c6dcbcbbd8499",  # as listed on Zenodo
        sha256="c72763e101c723b7c507b96205f7e938912a5d587376173b825850cf3cb876a7",  # as listed by TFDS
        size=2_918_471_680,
    )

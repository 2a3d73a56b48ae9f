"""imagenetc: the official ImageNet-C images (Hendrycks & Dietterich 2019), 19 corruptions x 5 severities.

Layout `<data root>/imagenet-c/<corruption>/<severity>/<wnid>/*.JPEG` (the Zenodo tars noise, blur,
weather, digital, extra, extracted side by side). The images are already Resize(256) +
CenterCrop(224) views of the validation set, so they are evaluated with ToTensor + Normalize only
(no second resize). `--per-class K` evaluates a fixed class-balanced subset: the first K files
of each class, the same images in every folder. Class indices are the sorted wnids, as for the
`imagenet` dataset and timm's pretrained ImageNet models.
"""

from __future__ import annotations

from bench.api import EVERYTHING, DataBundle, Selection, Suite, TestDistribution
from bench.corruptions.tables import IMAGENET_C
from bench.data import folder_images
from bench.files import DataMissing, ImageFiles, data_root


class ImagenetC(Suite):
    name = "imagenetc"
    description = "official ImageNet-C JPEG folders, 19 corruptions x 5 severities"
    datasets = ("imagenet",)

    def distributions(self, data: DataBundle, seed: int, selection: Selection = EVERYTHING) -> list[TestDistribution]:
        folder = data_root() / "imagenet-c"
        if not folder.is_dir():
            raise DataMissing.not_found(
                "ImageNet-C", folder, "download the tars noise, blur, weather, digital and extra from "
                "https://zenodo.org/records/2235448 and extract them into that folder (<corruption>/<severity>/<wnid>/*.JPEG)",
            )
        out = []
        for corruption in IMAGENET_C:
            for severity in range(1, 6):
                if not selection.wants(corruption, severity):
                    continue
                paths, targets, classes = folder_images(folder / corruption / str(severity), selection.per_class)
                if len(classes) != data.num_classes:
                    raise ValueError(f"{folder / corruption / str(severity)} has {len(classes)} classes, "
                                     f"the imagenet data {data.num_classes}")
                out.append(TestDistribution(name=f"{self.name}/{corruption}/{severity}", suite=self.name,
                                            images=ImageFiles(tuple(paths), tuple(targets)),
                                            corruption=corruption, severity=severity))
        return out

"""imagenetc: the official ImageNet-C images (Hendrycks & Dietterich 2019), 19 corruptions x 5 severities.

Layout `<data root>/imagenet-c/<corruption>/<severity>/<wnid>/*.JPEG` (the Zenodo tars noise, blur,
weather, digital, extra, extracted side by side). The images are already Resize(256) +
CenterCrop(224) views of the validation set, so they are evaluated with ToTensor + Normalize only
(no second resize). `--per-class K` evaluates a fixed class-balanced subset: the first K files
of each class, the same images in every folder. Class indices are the sorted wnids, as for the
`imagenet` dataset and timm's pretrained ImageNet models: each folder's wnids must be those of
`<data root>/imagenet/train`. Images must have the clean test set's size (224 x 224): the first file
of each class is checked when the test sets are built, every file when it is decoded.
"""

from __future__ import annotations

from bench.api import (
    EVERYTHING,
    IMAGENET_C,
    DataBundle,
    DataInvalid,
    DataMissing,
    ImageFiles,
    Selection,
    Suite,
    TestDistribution,
    data_root,
    folder_images,
)


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
        _, c, h, w = data.test.images.shape
        train = data_root() / "imagenet" / "train"
        wnids = sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else None
        out = []
        for corruption in IMAGENET_C:
            for severity in range(1, 6):
                if not selection.wants(corruption, severity):
                    continue
                where = folder / corruption / str(severity)
                paths, targets, classes = folder_images(where, selection.per_class)
                if len(classes) != data.num_classes:
                    raise DataInvalid(f"{where} has {len(classes)} classes, the imagenet data {data.num_classes}")
                if wnids is not None and classes != wnids:
                    odd = sorted(set(classes) ^ set(wnids))[:3]
                    raise DataInvalid(f"{where}: its class folders differ from those of {train} (e.g. {', '.join(odd)}); "
                                      "labels would not match")
                images = ImageFiles(tuple(paths), tuple(targets), (h, w, c))
                images.check_sample(data.name)
                out.append(TestDistribution(name=f"{self.name}/{corruption}/{severity}", suite=self.name,
                                            images=images, corruption=corruption, severity=severity))
        return out

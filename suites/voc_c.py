"""voc-c: Pascal VOC (or SBD) segmentation under the 19 ImageNet-C corruptions x 5 severities.

The corruptions change the image only (masks unchanged) and run on the uint8 evaluation crops
(short side 513, centre crop; `--image-size`) with the ImageNet-C constants, as the paper's VOC-C
did, with two fixes: nothing is JPEG re-encoded (the reference saved every corrupted image as JPEG,
adding JPEG artifacts to all 19 corruptions), and each (corruption, severity) is seeded, so every
network sees the same images. Prune potential uses the mIoU error, 1 - mIoU from one
dataset-level confusion matrix.
"""

from __future__ import annotations

from bench.api import IMAGENET_C, CorruptionSuite


class VocC(CorruptionSuite):
    name = "voc-c"
    description = "Pascal VOC val under 19 ImageNet-C corruptions x 5 severities (mIoU)"
    datasets = ("voc", "sbd")
    table = IMAGENET_C

"""prunebench's built-in datasets: their loaders and one `DatasetSpec` each.

They are registered in prunebench's own pyproject under the `prunebench.datasets` entry points,
exactly as a third-party package registers its own (`digits = "bench.data.builtin:DIGITS"`); the core
reaches them only through bench.data.dataset_spec.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.data import DatasetSpec, DataSplits, ImageSet, folder_images, saved_split, stratified_split
from bench.data.files import DataInvalid, DataMissing, data_root, download_allowed, file_digest
from bench.data.normalization import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from bench.data.readers import decode_image
from bench.data.recipes import (
    CIFAR_RESNET,
    DEEPLAB_VOC,
    DIGITS_RETRAIN,
    DIGITS_TRAIN,
    FASHION_RETRAIN,
    FASHION_TRAIN,
    IMAGENET_RESNET,
)

if TYPE_CHECKING:  # torch is imported where it is used: the specs and board stay torch-free
    import torch

# CIFAR-100's train-set channel statistics (the values in common use)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
VOC_SIZE = 513  # the paper's crop: short side resized to 513, centre crop 513 x 513


def split_off_validation(train_full: ImageSet, test: ImageSet, num_classes: int, split_file: Path,
                         seed: int) -> DataSplits:
    """10 % of the train images, stratified and seeded, held out as the validation split (saved in
    `split_file` on first use), and the official test set."""
    import torch

    train_idx, val_idx = saved_split(split_file, train_full.labels.numpy(), 0.1, seed)
    return DataSplits(train=train_full.subset(torch.from_numpy(train_idx)),
                      val=train_full.subset(torch.from_numpy(val_idx)), test=test, num_classes=num_classes)


def upsample_digits(raw: np.ndarray, size: int = 32, channels: int = 3) -> torch.Tensor:
    """sklearn digits (N, 64) with values 0..16 -> uint8 (N, channels, size, size), bilinear."""
    import torch
    import torch.nn.functional as F

    small = torch.from_numpy(raw.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0)
    large = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return large.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).expand(-1, channels, -1, -1).contiguous()


def load_digits(seed: int, per_class: int | None = None, image_size: int | None = None) -> DataSplits:
    """scikit-learn's digits (shipped inside the package, no download), upsampled to 3x32x32.

    Stratified split: 30 % test, 10 % validation (calibration), 60 % train, seeded.
    """
    import torch
    from sklearn.datasets import load_digits as sklearn_digits

    raw = sklearn_digits()
    full = ImageSet(upsample_digits(raw.data), torch.from_numpy(raw.target.astype(np.int64)))
    test_idx, val_idx, train_idx = stratified_split(raw.target, (0.3, 0.1), seed)
    return DataSplits(train=full.subset(torch.from_numpy(train_idx)), val=full.subset(torch.from_numpy(val_idx)),
                      test=full.subset(torch.from_numpy(test_idx)), num_classes=10)


@dataclass(frozen=True)
class TorchvisionCifar:
    """The loader of CIFAR-10 or CIFAR-100 in torchvision's python-pickle layout under the data root
    (md5-checked by torchvision, downloaded through it only with `--download`): a 45k/5k
    train/validation split, stratified and seeded, saved under `<root>/splits/`, and the official 10k
    test set. CIFAR-100 uses its 100 fine labels."""

    name: str  # cifar10 or cifar100
    title: str  # for messages
    dataset_class: str  # torchvision.datasets.CIFAR10 or CIFAR100
    archive: str  # the python archive of CIFAR_PAGE
    num_classes: int

    def __call__(self, seed: int, per_class: int | None = None, image_size: int | None = None) -> DataSplits:
        import torch
        import torchvision.datasets

        source = getattr(torchvision.datasets, self.dataset_class)
        root = data_root()
        try:
            parts = [source(str(root), train=train, download=download_allowed()) for train in (True, False)]
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
            raise DataMissing.not_found(
                f"{self.title} (or its md5 differs)", root / source.base_folder,
                f"rerun with --download, or extract {self.archive} from {CIFAR_PAGE} into {root}",
            ) from exc
        train_full, test = (
            ImageSet(torch.from_numpy(p.data).permute(0, 3, 1, 2).contiguous(),
                     torch.tensor(p.targets, dtype=torch.int64))
            for p in parts
        )
        return split_off_validation(train_full, test, self.num_classes,
                                    root / "splits" / f"{self.name}-seed{seed}.json", seed)


# The four official Fashion-MNIST files: the md5 of each .gz as published (torchvision.datasets.FashionMNIST
# lists them), and the sha256 of its decompressed IDX bytes, which also holds for the same data gzipped
# again (Debian's package re-gzips the files without their name: other .gz bytes, the same content)
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe",
                                   "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79",
                                  "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310",
                                  "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # Debian's package dataset-fashion-mnist
FASHION_MNIST_VALIDATION = 5_000  # of the 60k train images: a 55k / 5k train / validation split
_IDX_MAGIC = {3: 2051, 1: 2049}  # dimensions -> the magic number of unsigned-byte IDX files
_IDX_MAX_BYTES = 64 * 2**20  # decompressed: the train images are 47 MB


def read_idx(path: Path, dims: int, sha256: str | None = None) -> np.ndarray:
    """An unsigned-byte IDX array (the MNIST format) from a ``.gz`` file: big-endian magic number
    (2051 for images, 2049 for labels), the dimensions, the bytes. With ``sha256``, the decompressed
    bytes must have it. DataInvalid names the file."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read(_IDX_MAX_BYTES + 1)
    except (OSError, EOFError) as exc:
        raise DataInvalid(f"{path}: not a readable gzip file ({exc})") from exc
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise DataInvalid(f"{path}: its content differs from the official file's (sha256 {sha256[:12]}...); refusing it")
    header = 4 * (dims + 1)
    if len(raw) < header or len(raw) > _IDX_MAX_BYTES:
        raise DataInvalid(f"{path}: {len(raw)} bytes decompressed, not an IDX file of {dims} dimension(s)")
    magic, *shape = (int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(dims + 1))
    if magic != _IDX_MAGIC[dims]:
        raise DataInvalid(f"{path}: IDX magic number {magic}, expected {_IDX_MAGIC[dims]} (unsigned bytes, {dims}-D)")
    if len(raw) - header != int(np.prod(shape)):
        raise DataInvalid(f"{path}: {len(raw) - header} data bytes, its header promises {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _fashion_mnist_folder() -> Path:
    """The first folder holding all four files: the data root's ``fashion-mnist/``, torchvision's
    ``FashionMNIST/raw/`` there, Debian's package folder; else torchvision downloads them with
    ``--download``."""
    root = data_root()
    candidates = (root / "fashion-mnist", root / "FashionMNIST" / "raw", FASHION_MNIST_DEBIAN)
    for folder in candidates:
        if all((folder / name).is_file() for name in FASHION_MNIST_FILES):
            return folder
    if download_allowed():
        import torchvision.datasets

        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)  # md5-checked, into FashionMNIST/raw
        return candidates[1]
    raise DataMissing.not_found(
        "Fashion-MNIST", root / "fashion-mnist",
        f"apt-get install dataset-fashion-mnist (Debian: {FASHION_MNIST_DEBIAN}), or rerun with --download",
    )


def load_fashion_mnist(seed: int, per_class: int | None = None, image_size: int | None = None) -> DataSplits:
    """Fashion-MNIST (Xiao et al. 2017): the official IDX files, each checked against its published
    md5, or, re-gzipped (Debian's package), its content against the official content's sha256.

    28x28 grayscale, one channel (models are built with ``in_chans=1``); the published 60k/10k
    split, the 60k divided 55k/5k into train and validation (stratified, seeded, saved under
    ``<root>/splits/``)."""
    import torch

    folder = _fashion_mnist_folder()

    def checked(split: str, kind: str, dims: int) -> np.ndarray:
        name = f"{split}-{kind}-idx{dims}-ubyte.gz"
        md5, content = FASHION_MNIST_FILES[name]
        official = file_digest(folder / name, "md5") == md5  # else the same content gzipped again
        return read_idx(folder / name, dims, None if official else content)

    images, labels = ({split: checked(split, kind, dims) for split in ("train", "t10k")}
                      for kind, dims in (("images", 3), ("labels", 1)))
    sets = {}
    for split in ("train", "t10k"):
        if images[split].shape[0] != labels[split].shape[0] or images[split].shape[1:] != (28, 28):
            raise DataInvalid(f"{folder}: {split} has images {images[split].shape} and labels {labels[split].shape}")
        if labels[split].max(initial=0) >= 10:
            raise DataInvalid(f"{folder / f'{split}-labels-idx1-ubyte.gz'}: labels outside 0-9")
        sets[split] = ImageSet(torch.from_numpy(images[split].copy()).unsqueeze(1),
                               torch.from_numpy(labels[split].astype(np.int64)))
    train_full = sets["train"]
    fraction = FASHION_MNIST_VALIDATION / len(train_full) if len(train_full) > FASHION_MNIST_VALIDATION else 0.1
    train_idx, val_idx = saved_split(data_root() / "splits" / f"fashion-mnist-seed{seed}.json",
                                     train_full.labels.numpy(), fraction, seed)
    return DataSplits(train=train_full.subset(torch.from_numpy(train_idx)),
                      val=train_full.subset(torch.from_numpy(val_idx)), test=sets["t10k"], num_classes=10)


def resize_center_crop(image: torch.Tensor, resize: int = 256, crop: int = 224) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(image, [resize], antialias=True), [crop, crop])


def load_imagenet(seed: int, per_class: int | None = None, image_size: int | None = None) -> DataSplits:
    """ImageNet in ImageFolder layout `<root>/imagenet/{train,val}/<wnid>/*.JPEG`.

    Images are decoded once and kept as uint8 at Resize(256) + CenterCrop(224) (the standard test
    view, also the ImageNet-C view), so the full training set needs ~180 GB: use `--per-class K`
    for a class-balanced subset. 10 % of the train images form the validation (calibration) split.
    """
    import torch

    folder = data_root() / "imagenet"
    if not folder.is_dir():
        raise DataMissing.not_found(
            "ImageNet", folder, f"place the ILSVRC2012 train and val images as {folder}/train/<wnid>/*.JPEG and "
            f"{folder}/val/<wnid>/*.JPEG (val sorted into class folders)",
        )

    def decoded(split: str, classes: list[str] | None) -> tuple[ImageSet, list[str]]:
        paths, targets, classes = folder_images(folder / split, per_class, classes)
        images = torch.stack([resize_center_crop(decode_image(p)) for p in paths])
        return ImageSet(images, torch.tensor(targets, dtype=torch.int64)), classes

    train_full, classes = decoded("train", None)
    test, _ = decoded("val", classes)
    return split_off_validation(train_full, test, len(classes),
                                folder / f"prunebench-split-seed{seed}-k{per_class}.json", seed)


@dataclass(frozen=True)
class SegmentationFolder:
    """The loader of a segmentation data set (bench.data.segmentation.data readers), 21 VOC classes.

    Every image and mask is stored once at the evaluation view (short side S, centre crop S x S,
    S = `--image-size`, default 513; masks nearest, 255 = ignore), so corruptions run on exactly
    what the network sees and nothing is JPEG re-encoded. Train: the `train` split minus 10 % held
    out as the validation (calibration) split; test: the `val` split. Training augments these crops
    (random scale, flip, crop; bench.data.segmentation.augment_train_batch).
    """

    name: str  # voc or sbd: names the saved split
    source: str  # the bench.data.segmentation.data reader
    subfolder: str  # under the data root ("" for the root itself)

    def __call__(self, seed: int, per_class: int | None = None, image_size: int | None = None) -> DataSplits:
        import torch

        from bench.data.segmentation import data as segmentation

        root, size = data_root() / self.subfolder, image_size or VOC_SIZE
        try:
            train_set, test_set = (
                ImageSet(*segmentation.load_segmentation_set(self.source, root, split, size,
                                                             download=download_allowed()))
                for split in ("train", "val")
            )
        except FileNotFoundError as exc:
            raise DataMissing(f"{exc} (rerun with --download to fetch it)") from exc
        train_idx, val_idx = saved_split(data_root() / "splits" / f"{self.name}-seed{seed}.json",
                                         np.zeros(len(train_set), dtype=np.int64), 0.1, seed)
        return DataSplits(train=train_set.subset(torch.from_numpy(train_idx)),
                          val=train_set.subset(torch.from_numpy(val_idx)), test=test_set,
                          num_classes=segmentation.NUM_CLASSES)


DIGITS = DatasetSpec(
    name="digits", loader=load_digits, default_model="digits_cnn", default_suites=("noise", "digits-c"),
    train=DIGITS_TRAIN, retrain=DIGITS_RETRAIN, max_test_examples=539,  # 30 % of 1797, stratified
)
CIFAR10 = DatasetSpec(
    name="cifar10", loader=TorchvisionCifar("cifar10", "CIFAR-10", "CIFAR10", "cifar-10-python.tar.gz", 10),
    normalization=(CIFAR10_MEAN, CIFAR10_STD), default_model="resnet20_cifar",
    default_suites=("cifar10.1", "cifar10c"), train=CIFAR_RESNET, retrain=CIFAR_RESNET, max_test_examples=10_000,
)
CIFAR100 = DatasetSpec(
    name="cifar100", loader=TorchvisionCifar("cifar100", "CIFAR-100", "CIFAR100", "cifar-100-python.tar.gz", 100),
    normalization=(CIFAR100_MEAN, CIFAR100_STD), default_model="resnet20_cifar", default_suites=("cifar100c",),
    train=CIFAR_RESNET, retrain=CIFAR_RESNET, max_test_examples=10_000,
)
IMAGENET = DatasetSpec(
    name="imagenet", loader=load_imagenet, normalization=(IMAGENET_MEAN, IMAGENET_STD), default_model="resnet18",
    default_suites=("imagenetc",), train=IMAGENET_RESNET, retrain=IMAGENET_RESNET, mix_table="imagenet-c",
    max_test_examples=50_000,
)
VOC = DatasetSpec(
    name="voc", loader=SegmentationFolder("voc", "voc2012", ""), task="segmentation",
    normalization=(IMAGENET_MEAN, IMAGENET_STD), default_model="deeplabv3_resnet50", default_suites=("voc-c",),
    train=DEEPLAB_VOC, retrain=DEEPLAB_VOC, mix_table="imagenet-c", max_test_examples=1_449,  # VOC 2012 val
)
FASHION_MNIST = DatasetSpec(
    name="fashion-mnist", loader=load_fashion_mnist, default_model="fashion_cnn",
    default_suites=("noise", "fashion-mnist-c"), train=FASHION_TRAIN, retrain=FASHION_RETRAIN,
    max_test_examples=10_000, ratio_grid=("geom", 0.3, 0.97, 8),
)
SBD = DatasetSpec(
    name="sbd", loader=SegmentationFolder("sbd", "sbd", "SBD"), task="segmentation",
    normalization=(IMAGENET_MEAN, IMAGENET_STD), default_model="deeplabv3_resnet50", default_suites=("voc-c",),
    train=DEEPLAB_VOC, retrain=DEEPLAB_VOC, mix_table="imagenet-c", max_test_examples=2_857,  # SBD val
)

"""Tiny Pascal VOC 2012 / SBD folders in the official on-disk formats, for offline tests.

VOC2012: ``root/VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png,
ImageSets/Segmentation/{train,val,trainval}.txt}`` with palette ("P") PNG masks using the VOC
colour map and 255 object borders. SBD: ``root/{img/<id>.jpg, cls/<id>.mat, train.txt, val.txt}``
with ``GTcls.Segmentation`` uint8 masks (no borders), as torchvision's ``SBDataset`` reads them.

Content is learnable: a noisy dark background (class 0) with a few filled rectangles, each
painted in the VOC palette colour of its class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.segmentation import IGNORE_INDEX, voc_palette

FIXTURE_CLASSES = (1, 2, 3, 7, 15)  # aeroplane, bicycle, bird, car, person: distinct palette colours
BORDER = 1  # VOC draws a ~5 px 255 band around objects; 1 px keeps tiny fixtures mostly labelled


def _sample(rng: np.random.Generator, size: tuple[int, int], border: bool) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (H, W, 3), mask uint8 (H, W))."""
    h, w = size
    palette = np.array(voc_palette(), dtype=np.int16).reshape(256, 3)
    image = np.full((h, w, 3), 40, dtype=np.int16)
    mask = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.choice(FIXTURE_CLASSES))
        rh, rw = int(rng.integers(h // 4, h // 2 + 1)), int(rng.integers(w // 4, w // 2 + 1))
        top, left = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        image[top : top + rh, left : left + rw] = palette[cls]
        mask[top : top + rh, left : left + rw] = cls
        if border:  # the 255 band straddles the object outline, as in VOC
            b = BORDER
            for rows, cols in (
                (slice(max(top - b, 0), top + b), slice(max(left - b, 0), left + rw + b)),
                (slice(top + rh - b, top + rh + b), slice(max(left - b, 0), left + rw + b)),
                (slice(max(top - b, 0), top + rh + b), slice(max(left - b, 0), left + b)),
                (slice(max(top - b, 0), top + rh + b), slice(left + rw - b, left + rw + b)),
            ):
                mask[rows, cols] = IGNORE_INDEX
    image += rng.integers(-8, 9, size=image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_voc_fixture(
    root: str | Path, n_train: int, n_val: int, size: tuple[int, int] = (40, 56), seed: int = 0
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Write a VOC2012 segmentation folder under ``root``; returns the written (image, mask) arrays per split.

    Images are JPEG (quality 95, so they read back close but not equal); masks are lossless.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "VOCdevkit" / "VOC2012"
    jpeg, seg, sets = base / "JPEGImages", base / "SegmentationClass", base / "ImageSets" / "Segmentation"
    for folder in (jpeg, seg, sets):
        folder.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    written: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    ids: dict[str, list[str]] = {}
    counter = 0
    for split, count in (("train", n_train), ("val", n_val)):
        written[split], ids[split] = [], []
        for _ in range(count):
            name = f"2012_{counter:06d}"
            counter += 1
            image, mask = _sample(rng, size, border=True)
            Image.fromarray(image).save(jpeg / f"{name}.jpg", quality=95)
            png = Image.fromarray(mask)  # mode "L"; putpalette turns it into "P" with the same indices
            png.putpalette(palette)
            png.save(seg / f"{name}.png")
            written[split].append((image, mask))
            ids[split].append(name)
    for split, names in (*ids.items(), ("trainval", ids["train"] + ids["val"])):
        (sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return written


def write_sbd_fixture(
    root: str | Path, n_train: int, n_val: int, size: tuple[int, int] = (40, 56), seed: int = 0
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Write an SBD folder (``benchmark_RELEASE/dataset`` contents) under ``root``; needs scipy."""
    from scipy.io import savemat
    from scipy.sparse import csc_matrix

    rng = np.random.default_rng(seed)
    base = Path(root)
    (base / "img").mkdir(parents=True, exist_ok=True)
    (base / "cls").mkdir(parents=True, exist_ok=True)
    written: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    counter = 0
    for split, count in (("train", n_train), ("val", n_val)):
        written[split], names = [], []
        for _ in range(count):
            name = f"2008_{counter:06d}"
            counter += 1
            image, mask = _sample(rng, size, border=False)
            Image.fromarray(image).save(base / "img" / f"{name}.jpg", quality=95)
            present = np.unique(mask[mask > 0]).astype(np.uint8).reshape(-1, 1)
            boundaries = np.empty((20, 1), dtype=object)  # a cell of 20 sparse per-class edge maps
            for c in range(20):
                boundaries[c, 0] = csc_matrix(size, dtype=np.uint8)
            gtcls = {"Segmentation": mask, "Boundaries": boundaries, "CategoriesPresent": present}
            savemat(base / "cls" / f"{name}.mat", {"GTcls": gtcls})
            written[split].append((image, mask))
            names.append(name)
        (base / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return written

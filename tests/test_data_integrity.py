"""Data integrity: nothing wrong on disk is used silently; every failure is one line naming the file.

Small files in the official formats (tests/formats.py); nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from formats import (
    balanced_labels,
    class_images,
    patch_cifar10_md5,
    save_jpeg,
    write_cifar10,
    write_cifar10_1,
    write_cifar10c,
    write_image_folder,
    write_imagenet,
    write_imagenet_c,
)

import bench.data.files
from bench.cli import main
from bench.data import load_cifar10, load_dataset
from bench.data.files import (
    DATA_ENV,
    LOCAL_MANIFEST,
    RUN_ENV,
    VERIFIED,
    VERIFY_ENV,
    ChecksumMismatch,
    DataInvalid,
    data_environment,
)
from bench.data.make_c import PARAMETERS
from bench.data.readers import ImageFiles, source_from_reference
from bench.data.suite import Selection
from bench.pipeline.runner import load_suite

FAST = ["--corruptions", "fog,contrast", "--pruner", "wt", "--ratios", "0.5", "--epochs", "1", "--retrain-epochs", "1", "--quiet"]
CORRUPTIONS = ["fog", "contrast"]
FILES = ["contrast.npy", "fog.npy", "labels.npy"]


@pytest.fixture
def cifar_root(tmp_path_factory, monkeypatch) -> Path:
    """CIFAR-10 (100 test images) and CIFAR-10.1 in their official formats, as the data root."""
    root = tmp_path_factory.mktemp("data")
    patch_cifar10_md5(monkeypatch, write_cifar10(root))
    write_cifar10_1(root)
    monkeypatch.setenv(DATA_ENV, str(root))
    return root


def clean_test(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The fixture's clean CIFAR-10 test images (N, 32, 32, 3) and labels, in order."""
    from torchvision.datasets import CIFAR10

    test = CIFAR10(str(root), train=False)
    return test.data, np.array(test.targets)


def cifar10c(root: Path, images: np.ndarray | None = None, labels: np.ndarray | None = None) -> Path:
    """A CIFAR-10-C folder of the clean test set (or of the given images / labels)."""
    clean_images, clean_labels = clean_test(root)
    folder = root / "CIFAR-10-C"
    write_cifar10c(folder, clean_images if images is None else images, clean_labels if labels is None else labels,
                   CORRUPTIONS)
    return folder


def cifar10c_sets(suite: str = "cifar10c") -> list:
    return load_suite(suite).distributions(load_cifar10(0), seed=0, selection=Selection(tuple(CORRUPTIONS)))


@pytest.fixture
def hashed(monkeypatch) -> Counter:
    """Counts the files bench.data.files hashes (by path)."""
    calls: Counter = Counter()
    real = bench.data.files.sha256_file

    def counting(path):
        calls[Path(path).name] += 1
        return real(path)

    monkeypatch.setattr(bench.data.files, "sha256_file", counting)
    return calls


def run_error(args: list[str], capsys) -> str:
    """The one stderr line of a `bench run` that must stop with exit code 2."""
    capsys.readouterr()
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bench run: error: ")
    return line


# ---- re-hashing ------------------------------------------------------------------------------------


def test_file_zeroed_in_place_with_size_and_mtime_restored_is_refused(cifar_root, capsys):
    folder = cifar10c(cifar_root)
    cifar10c_sets()  # records the manifest and the verified hashes
    record = json.loads((folder / VERIFIED).read_text())
    assert all(len(entry) == 5 for entry in record.values())  # sha256, size, mtime_ns, inode, ctime_ns
    target = folder / "fog.npy"
    before = target.stat()
    offset = np.load(target, mmap_mode="r").offset
    with open(target, "r+b") as handle:  # zero the images, keep the .npy header
        handle.seek(offset)
        handle.write(bytes(before.st_size - offset))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    for _ in range(300):  # on a coarse clock, restore the mtime again until the ctime has moved on
        if target.stat().st_ctime_ns != before.st_ctime_ns:
            break
        time.sleep(0.01)
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns
    with pytest.raises(ChecksumMismatch, match=f"{target}: sha256"):
        cifar10c_sets()
    line = run_error(["run", "--suite", "cifar10c", "--out", str(cifar_root / "out"), *FAST], capsys)
    assert str(target) in line and "differs from the manifest" in line


def test_verify_data_hashes_every_file_once_per_run(cifar_root, hashed):
    cifar10c(cifar_root)
    cifar10c_sets()
    assert hashed == Counter({name: 1 for name in FILES})
    hashed.clear()
    cifar10c_sets()
    assert not hashed  # unchanged files are trusted from the record
    with data_environment(None, False):  # also in a new run
        cifar10c_sets()
    assert not hashed
    with data_environment(None, False, verify_data=True):
        cifar10c_sets()
        cifar10c_sets()  # the same run: hashed once, not twice
    assert hashed == Counter({name: 1 for name in FILES})
    with data_environment(None, False, verify_data=True):  # the next run hashes again
        cifar10c_sets()
    assert hashed == Counter({name: 2 for name in FILES})
    assert VERIFY_ENV not in os.environ and RUN_ENV not in os.environ  # nothing leaks into the next run


@pytest.mark.slow
def test_bench_run_verify_data_rehashes_every_data_file(cifar_root, hashed, tmp_path):
    cifar10c(cifar_root)
    args = ["run", "--suite", "cifar10.1,cifar10c", "--severities", "2", "--out", str(tmp_path / "out"), *FAST]
    assert main(args) == 0
    files = ["cifar10.1_v6_data.npy", "cifar10.1_v6_labels.npy", *FILES]
    assert hashed == Counter({name: 1 for name in files})
    hashed.clear()
    assert main(args) == 0
    assert not hashed
    assert main([*args, "--verify-data"]) == 0
    assert hashed == Counter({name: 1 for name in files})


def test_old_records_count_as_changed(cifar_root, hashed):
    folder = cifar10c(cifar_root)
    cifar10c_sets()
    record = json.loads((folder / VERIFIED).read_text())
    (folder / VERIFIED).write_text(json.dumps({name: entry[:3] for name, entry in record.items()}))  # [sha, size, mtime]
    hashed.clear()
    with data_environment(None, False):  # a new run
        cifar10c_sets()
    assert hashed == Counter({name: 1 for name in FILES})
    assert json.loads((folder / VERIFIED).read_text()) == record


def test_corrupt_verified_record_is_ignored_with_a_warning_and_rebuilt(cifar_root, hashed, caplog):
    folder = cifar10c(cifar_root)
    cifar10c_sets()
    record = json.loads((folder / VERIFIED).read_text())
    (folder / VERIFIED).write_text('{"fog.npy": ["ab')  # truncated
    hashed.clear()
    with caplog.at_level(logging.WARNING, logger="bench.data.files"), data_environment(None, False):
        cifar10c_sets()
    assert any(str(folder / VERIFIED) in message for message in caplog.messages)
    assert hashed == Counter({name: 1 for name in FILES})
    assert json.loads((folder / VERIFIED).read_text()) == record


# ---- malformed files ---------------------------------------------------------------------------------


def test_truncated_npy_without_manifest_is_refused_naming_it(cifar_root, capsys):
    folder = cifar10c(cifar_root)
    target = folder / "fog.npy"
    with open(target, "r+b") as handle:
        handle.truncate(target.stat().st_size // 2)
    with pytest.raises(DataInvalid, match=f"{target}: .*truncated"):
        cifar10c_sets()
    assert not (folder / LOCAL_MANIFEST).exists()  # a truncated file is not trusted on first use
    line = run_error(["run", "--suite", "cifar10c", "--out", str(cifar_root / "out"), *FAST], capsys)
    assert str(target) in line


def test_npy_longer_than_its_header_is_refused(cifar_root):
    folder = cifar10c(cifar_root)
    with open(folder / "labels.npy", "ab") as handle:
        handle.write(b"\0" * 16)
    with pytest.raises(DataInvalid, match=f"{folder / 'labels.npy'}: .* bytes, but its header promises"):
        cifar10c_sets()


@pytest.mark.parametrize("content", ['{"fog.npy": "0123', '["fog.npy"]', '{"fog.npy": "not a sha256"}'])
def test_bad_manifest_is_refused_naming_it(cifar_root, content, capsys):
    folder = cifar10c(cifar_root)
    (folder / LOCAL_MANIFEST).write_text(content)
    with pytest.raises(DataInvalid, match=str(folder / LOCAL_MANIFEST)):
        cifar10c_sets()
    line = run_error(["run", "--suite", "cifar10c", "--out", str(cifar_root / "out"), *FAST], capsys)
    assert str(folder / LOCAL_MANIFEST) in line


def test_truncated_saved_split_is_refused_naming_it(cifar_root):
    load_cifar10(0)
    split = cifar_root / "splits" / "cifar10-seed0.json"
    split.write_text(split.read_text()[:20])
    with pytest.raises(DataInvalid, match=f"{split}: not valid JSON"):
        load_cifar10(0)


def test_truncated_make_c_parameters_are_refused_naming_them(cifar_root):
    folder = cifar10c(cifar_root)
    (folder / PARAMETERS).write_text('{"severities": [2, ')
    with pytest.raises(DataInvalid, match=f"{folder / PARAMETERS}: not valid JSON"):
        cifar10c_sets()


def test_truncated_file_behind_a_cached_reference_is_refused_naming_it(cifar_root):
    cifar10c(cifar_root)
    reference = cifar10c_sets()[0].images.reference()
    with open(reference["images_path"], "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(DataInvalid, match=f"{reference['images_path']}: not a readable .npy file"):
        source_from_reference(reference)


# ---- test sets against the clean test set ------------------------------------------------------------------


def _images_64(root: Path) -> None:
    cifar10c(root, images=class_images(clean_test(root)[1], 64, seed=4))


def _float_images(root: Path) -> None:
    folder = cifar10c(root)
    np.save(folder / "fog.npy", np.load(folder / "fog.npy").astype(np.float32))


def _four_severities(root: Path) -> None:
    folder = cifar10c(root)
    np.save(folder / "fog.npy", np.load(folder / "fog.npy")[:400])


def _labels_out_of_range(root: Path) -> None:
    labels = clean_test(root)[1].copy()
    labels[labels == 9] = 10
    cifar10c(root, labels=labels)


def _labels_shuffled(root: Path) -> None:
    cifar10c(root, labels=np.random.default_rng(0).permutation(clean_test(root)[1]))


def _labels_float(root: Path) -> None:
    folder = cifar10c(root)
    np.save(folder / "labels.npy", np.load(folder / "labels.npy").astype(np.float32))


CIFAR10C_CASES = {
    "64x64 images": (_images_64, "contrast.npy", "images are 64x64x3, the clean cifar10 test set is 32x32x3"),
    "float images": (_float_images, "fog.npy", "images are float32, the clean cifar10 test set is uint8"),
    "rows of 4 severities": (_four_severities, "fog.npy", "400 images, expected 5 severities x 100 clean cifar10"),
    "labels out of range": (_labels_out_of_range, "labels.npy", r"50 labels outside \[0, 10\)"),
    "shuffled labels": (_labels_shuffled, "labels.npy", "labels differ from the clean cifar10 test labels repeated"),
    "float labels": (_labels_float, "labels.npy", "labels must be integers"),
}


@pytest.mark.parametrize("case", list(CIFAR10C_CASES))
def test_cifar10c_files_unlike_the_clean_test_set_are_refused(cifar_root, case, capsys):
    write_broken, name, message = CIFAR10C_CASES[case]
    write_broken(cifar_root)
    path = cifar_root / "CIFAR-10-C" / name
    with pytest.raises(DataInvalid, match=f"{path}: .*{message}"):
        cifar10c_sets()
    line = run_error(["run", "--suite", "cifar10c", "--out", str(cifar_root / "out"), *FAST], capsys)
    assert str(path) in line
    assert not (cifar_root / "CIFAR-10-C" / LOCAL_MANIFEST).exists()  # nothing was trusted on first use


def test_cifar10_1_images_and_labels_are_checked(cifar_root):
    folder = cifar_root / "cifar10.1"
    labels = balanced_labels(5, seed=5)
    np.save(folder / "cifar10.1_v6_data.npy", class_images(labels, 64, seed=6))
    with pytest.raises(DataInvalid, match=f"{folder / 'cifar10.1_v6_data.npy'}: images are 64x64x3, the clean "
                                          "cifar10 test set is 32x32x3"):
        cifar10c_sets("cifar10.1")
    write_cifar10_1(cifar_root)
    np.save(folder / "cifar10.1_v6_labels.npy", np.where(labels == 3, -1, labels))
    with pytest.raises(DataInvalid, match=rf"{folder / 'cifar10.1_v6_labels.npy'}: 5 labels outside \[0, 10\)"):
        cifar10c_sets("cifar10.1")
    np.save(folder / "cifar10.1_v6_labels.npy", labels[:40])
    with pytest.raises(DataInvalid, match="40 labels for 50 images"):
        cifar10c_sets("cifar10.1")


WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture
def imagenet_root(tmp_path, monkeypatch) -> Path:
    write_imagenet(tmp_path, WNIDS, train_per_class=4, val_per_class=2)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    return tmp_path


def imagenet_c_sets() -> list:
    return load_suite("imagenetc").distributions(load_dataset("imagenet", 0), seed=0,
                                                 selection=Selection(("fog",), (3,)))


def test_imagenet_c_images_of_another_size_are_refused(imagenet_root):
    write_image_folder(imagenet_root / "imagenet-c" / "fog" / "3", WNIDS, 2, 256, seed=10)
    first = sorted((imagenet_root / "imagenet-c" / "fog" / "3" / WNIDS[0]).glob("*.JPEG"))[0]
    with pytest.raises(DataInvalid, match=f"{first}: images are 256x256x3, the clean imagenet test set is 224x224x3"):
        imagenet_c_sets()


def test_imagenet_c_class_folders_must_be_the_imagenet_classes(imagenet_root):
    write_imagenet_c(imagenet_root, ["n01440764", "n01443537", "n09999999"], ["fog"], [3], per_class=2)
    with pytest.raises(DataInvalid, match="class folders differ from those of .*n01484850"):
        imagenet_c_sets()


def test_image_files_check_every_decoded_image(tmp_path):
    images = class_images(np.arange(3), 224, seed=0)
    paths = [tmp_path / f"{i}.JPEG" for i in range(3)]
    for image, path in zip(images, paths):
        save_jpeg(image, path)
    save_jpeg(class_images(np.arange(1), 200, seed=0)[0], paths[2])  # not the first file of its class
    source = ImageFiles(tuple(map(str, paths)), (0, 0, 0), (224, 224, 3))
    source.check_sample("imagenet")
    with pytest.raises(DataInvalid, match=f"{paths[2]}: images are 200x200x3, the clean test set is 224x224x3"):
        list(source.batches(2))
    paths[1].write_bytes(paths[1].read_bytes()[:300])  # a truncated JPEG
    with pytest.raises(DataInvalid, match=f"{paths[1]}: not a readable image"):
        list(source.batches(2))
    assert source_from_reference(source.reference()) == source

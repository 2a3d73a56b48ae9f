"""The built-in `fashion-mnist` dataset on tiny IDX fixtures (the official format: gzip, big-endian
magic numbers 2051 / 2049, 28x28 unsigned bytes): never the real data."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.data import builtin as datasets
from bench.data import dataset_spec, load_dataset
from bench.data.files import DATA_ENV, DataInvalid, DataMissing
from bench.results import load_result
from bench.results.checkpoints import read_state

TRAIN_PER_CLASS, TEST_PER_CLASS = 12, 3


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 2051 if array.ndim == 3 else 2049
    header = b"".join(v.to_bytes(4, "big") for v in (magic, *array.shape))
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(folder: Path, rng: np.random.Generator, regzip: bool = False) -> dict[str, tuple[str, str]]:
    """The four files, images a little class-dependent so that training learns something; returns the
    pinned digests to patch in: (md5 of the .gz, sha256 of its content)."""
    folder.mkdir(parents=True, exist_ok=True)
    pins = {}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("t10k", TEST_PER_CLASS)):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(len(labels), 28, 28))
        for i, label in enumerate(labels):  # a bright bar whose row tells the class
            images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        for kind, array, dims in (("images", images, 3), ("labels", labels, 1)):
            name = f"{split}-{kind}-idx{dims}-ubyte.gz"
            content = idx_bytes(array)
            (folder / name).write_bytes(gzip.compress(content, mtime=0))
            official = gzip.compress(content, mtime=1) if regzip else (folder / name).read_bytes()
            pins[name] = (hashlib.md5(official).hexdigest(), hashlib.sha256(content).hexdigest())
    return pins


@pytest.fixture
def fashion_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv(DATA_ENV, str(root))
    monkeypatch.setattr(datasets, "FASHION_MNIST_DEBIAN", tmp_path / "no-debian-package")
    pins = write_fashion_mnist(root / "fashion-mnist", np.random.default_rng(0))
    monkeypatch.setattr(datasets, "FASHION_MNIST_FILES", pins)
    return root


def test_reads_the_official_split_one_channel_with_a_saved_seeded_validation_split(fashion_root: Path) -> None:
    spec = dataset_spec("fashion-mnist")
    data = spec.loader(seed=3)
    assert data.test.images.shape == (10 * TEST_PER_CLASS, 1, 28, 28) and data.test.images.dtype == torch.uint8
    assert len(data.train) + len(data.val) == 10 * TRAIN_PER_CLASS
    assert sorted(np.bincount(data.val.labels.numpy(), minlength=10)) == [1] * 10  # stratified, 10 % here
    assert (fashion_root / "splits" / "fashion-mnist-seed3.json").is_file()
    again = spec.loader(seed=3)
    assert torch.equal(again.val.labels, data.val.labels) and torch.equal(again.train.images, data.train.images)
    assert not torch.equal(spec.loader(seed=4).val.images, data.val.images)


def test_the_real_split_is_55k_5k_10k() -> None:
    assert datasets.FASHION_MNIST_VALIDATION / 60_000 * 60_000 == 5_000
    assert dataset_spec("fashion-mnist").max_test_examples == 10_000


def test_the_same_content_gzipped_again_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's package re-gzips the official files: other .gz bytes (md5), the same IDX content."""
    root = tmp_path / "data"
    monkeypatch.setenv(DATA_ENV, str(root))
    monkeypatch.setattr(datasets, "FASHION_MNIST_DEBIAN", root / "debian")
    pins = write_fashion_mnist(root / "debian", np.random.default_rng(1), regzip=True)
    monkeypatch.setattr(datasets, "FASHION_MNIST_FILES", pins)
    assert all(hashlib.md5((root / "debian" / name).read_bytes()).hexdigest() != md5 for name, (md5, _) in pins.items())
    assert len(dataset_spec("fashion-mnist").loader(seed=0).test) == 10 * TEST_PER_CLASS


@pytest.mark.parametrize("name", ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"])
def test_a_file_with_another_md5_and_content_is_refused_naming_it(name: str, fashion_root: Path) -> None:
    path = fashion_root / "fashion-mnist" / name
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] ^= 1
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataInvalid, match=name.replace(".", r"\.")) as error:
        dataset_spec("fashion-mnist").loader(seed=0)
    assert "\n" not in str(error.value)


def test_a_missing_dataset_says_how_to_get_it_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(datasets, "FASHION_MNIST_DEBIAN", tmp_path / "no-debian-package")
    with pytest.raises(DataMissing, match="apt-get install dataset-fashion-mnist.*--download"):
        dataset_spec("fashion-mnist").loader(seed=0)
    assert main(["run", "--dataset", "fashion-mnist", "--out", str(tmp_path / "out"), "--quiet"]) != 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "Fashion-MNIST not found" in line and "dataset-fashion-mnist" in line and "--download" in line


@pytest.mark.parametrize("header, message", [
    ((2049, 3, 28, 28), "magic number 2049"),
    ((2051, 4, 28, 28), "header promises"),
])
def test_malformed_idx_files_are_refused(header: tuple[int, ...], message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"".join(v.to_bytes(4, "big") for v in header) + bytes(3 * 28 * 28)))
    with pytest.raises(DataInvalid, match=message):
        datasets.read_idx(path, 3)


@pytest.mark.slow
def test_bench_run_on_fashion_mnist_end_to_end(fashion_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    args = ["run", "--dataset", "fashion-mnist", "--pruner", "wt", "--ratios", "0.5", "--epochs", "1",
            "--retrain-epochs", "1", "--workers", "1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    (path,) = out.glob("*.json")
    result = load_result(path)
    assert result.config.dataset == "fashion-mnist" and result.config.model == "fashion_cnn"
    assert [d.n_examples for d in result.distributions] == [10 * TEST_PER_CLASS] * len(result.distributions)
    suites = [d.name.split("/")[0] for d in result.distributions]
    assert (suites.count("fashion-mnist"), suites.count("noise"), suites.count("fashion-mnist-c")) == (1, 8, 75)
    parent = read_state(path.with_suffix(".networks") / "parent-0.safetensors")
    first_conv = next(t for t in parent.values() if t.ndim == 4)
    assert first_conv.shape[1] == 1  # grayscale stays one channel: no fake RGB


def test_make_c_writes_exactly_the_sets_a_run_of_the_same_seed_evaluates(fashion_root: Path, tmp_path: Path) -> None:
    from bench.core.registry import SUITE_GROUP, load_class
    from bench.data.suite import Suite

    out = tmp_path / "Fashion-MNIST-C"
    assert main(["data", "make-c", "--dataset", "fashion-mnist", "--out", str(out), "--seed", "2", "--quiet",
                 "--corruptions", "shot_noise,rotate,zigzag,canny_edges"]) == 0
    parameters = json.loads((out / "prunebench-make-c.json").read_text())
    assert parameters["table"] == "fashion-mnist-c" and parameters["image_shape"] == [28, 28, 1]
    data = load_dataset("fashion-mnist", 2)
    suite = load_class(SUITE_GROUP, "fashion-mnist-c", Suite)()
    for dist in suite.distributions(data, seed=2):
        if dist.corruption in parameters["corruptions"]:
            rows = np.load(out / f"{dist.corruption}.npy", mmap_mode="r")
            block = rows[(dist.severity - 1) * len(data.test): dist.severity * len(data.test)]
            assert np.array_equal(block, dist.images.images.permute(0, 2, 3, 1).numpy()), dist.name
    labels = np.load(out / "labels.npy")
    assert np.array_equal(labels, np.tile(data.test.labels.numpy(), 5))

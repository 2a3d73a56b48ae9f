"""Datasets as plugins: `prunebench.datasets` entry points, the built-in CIFAR-100 / CIFAR-100-C in
their official formats, and a dataset from an out-of-tree package run end to end by `bench run`."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch
from formats import _md5, balanced_labels, class_images, write_cifar10c
from test_plugin import bench_executable, install_package

from bench.cli import main
from bench.core import registry
from bench.data import DATASETS, DatasetSpec, DataSplits, ImageSet, dataset_spec, load_dataset
from bench.data.files import DATA_ENV, DOWNLOAD_ENV, ChecksumMismatch, DataInvalid, DataMissing
from bench.data.recipes import DIGITS_TRAIN
from bench.pipeline.config import default_config
from bench.results import load_result

BUILT_INS = ("digits", "cifar10", "cifar100", "imagenet", "voc", "sbd")
TINY = ["--pruner", "wt", "--ratios", "0.5", "--epochs", "1", "--retrain-epochs", "1", "--workers", "1", "--quiet"]


def write_cifar100(root: Path, train_per_class: int = 6, test_per_class: int = 1) -> dict[str, str]:
    """`<root>/cifar-100-python/{train,test,meta}` as torchvision reads them (python pickles, uint8
    rows in CHW order, 100 fine and 20 coarse labels); returns the md5 of every file."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, per_class, seed in (("train", train_per_class, 11), ("test", test_per_class, 12)):
        labels = balanced_labels(per_class, classes=100, seed=seed)
        rows = class_images(labels, 32, seed=seed + 10).transpose(0, 3, 1, 2).reshape(len(labels), -1)
        payload = {"filenames": [f"{i}.png" for i in range(len(labels))], "batch_label": name,
                   "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(), "data": rows}
        (folder / name).write_bytes(pickle.dumps(payload))
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return {name: _md5(folder / name) for name in ("train", "test", "meta")}


@pytest.fixture
def cifar100_root(tmp_path_factory, monkeypatch):
    from torchvision.datasets import CIFAR100

    root = tmp_path_factory.mktemp("data")
    md5 = write_cifar100(root)
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5["train"]]])  # torchvision pins the official md5
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5["meta"]})
    monkeypatch.setenv(DATA_ENV, str(root))
    return root


def cifar100c_fixture(root: Path, corruptions: list[str]) -> None:
    from torchvision.datasets import CIFAR100

    test = CIFAR100(str(root), train=False)
    write_cifar10c(root / "CIFAR-100-C", test.data, np.array(test.targets), corruptions)


def test_built_in_datasets_come_from_prunebench_entry_points():
    assert set(BUILT_INS) <= set(DATASETS)
    for name in BUILT_INS:
        assert registry.distribution_of(registry.DATASET_GROUP, name)[0] == "prunebench"
        assert dataset_spec(name).name == name and DATASETS[name] is dataset_spec(name)
    assert (dataset_spec("voc").task, dataset_spec("cifar10").task) == ("segmentation", "classification")
    config = default_config(dataset="cifar100")  # the Python API reads the same specs as the CLI
    assert (config.model, config.suites, config.train) == ("resnet20_cifar", ("cifar100c",), dataset_spec("cifar100").train)
    assert default_config(suites=("cifar100c",)).dataset == "cifar100"  # the suite implies its dataset


def test_unknown_dataset_is_one_line_with_close_matches(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar1000'\. Did you mean cifar100, cifar10\?"):
        default_config(dataset="cifar1000")
    assert "cifar1000" not in DATASETS and DATASETS.get("cifar1000") is None  # a mapping, like a dict
    assert main(["run", "--dataset", "cifra10", "--out", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bench run: error: unknown dataset 'cifra10'. Did you mean cifar10")


def test_an_entry_point_must_name_a_spec_of_its_own_name(monkeypatch):
    group = registry.DATASET_GROUP
    points = {
        "tiny": EntryPoint(name="tiny", value="bench.data.builtin:DIGITS", group=group),
        "recipe": EntryPoint(name="recipe", value="bench.data.recipes:CIFAR_RESNET", group=group),
    }
    monkeypatch.setattr(registry, "_entry_points", lambda group: points)
    with pytest.raises(registry.RegistryError, match="names a DatasetSpec whose name is 'digits'"):
        dataset_spec("tiny")
    with pytest.raises(registry.RegistryError, match="is not a bench.data.DatasetSpec instance but Recipe"):
        dataset_spec("recipe")


def test_a_spec_checks_its_fields_and_its_loader_output():
    def loader(seed: int, per_class: int | None, image_size: int | None) -> DataSplits:
        images = torch.arange(6 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(6, 3, 4, 4)
        split = ImageSet(images, torch.tensor([0, 1, 0, 1, 0, 1]))
        return DataSplits(train=split, val=split, test=split, num_classes=2)

    fields = dict(name="six", loader=loader, default_model="digits_cnn", default_suites=("noise",),
                  train=DIGITS_TRAIN, retrain=DIGITS_TRAIN, max_test_examples=6)
    bundle = DatasetSpec(**fields).load(0)
    assert (bundle.name, bundle.task, bundle.num_classes) == ("six", "classification", 2)
    assert len(bundle.mean) == 3 and bundle.mean[0] != bundle.mean[1]  # no normalization: the train split's statistics
    with pytest.raises(ValueError, match="more than its spec's max_test_examples"):
        DatasetSpec(**{**fields, "max_test_examples": 5}).load(0)
    with pytest.raises(ValueError, match="task 'detection'"):
        DatasetSpec(**{**fields, "task": "detection"})
    with pytest.raises(ValueError, match="mix_table 'mnist-c'"):
        DatasetSpec(**{**fields, "mix_table": "mnist-c"})


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.update(test=ImageSet(s["test"].images[:, :1].contiguous(), s["test"].labels)),
     "the test split's images are (1, 4, 4), the train split's (3, 4, 4)"),
    (lambda s: s.update(val=ImageSet(s["val"].images, torch.tensor([0, 1, 0, 1, 0, 7]))),
     "the val split has labels in [0, 7], outside [0, 1]"),
    (lambda s: s.update(num_classes=1), "num_classes must be an integer >= 2, got 1"),
    (lambda s: s.update(train=ImageSet(s["train"].images, torch.tensor([0.0, 1, 0, 1, 0, 1]))),
     "the train split's labels are torch.float32, not integers"),
])
def test_a_plugins_splits_are_checked_like_the_built_ins(change, message):
    def loader(seed: int, per_class: int | None, image_size: int | None) -> DataSplits:
        images = torch.arange(6 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(6, 3, 4, 4)
        split = ImageSet(images, torch.tensor([0, 1, 0, 1, 0, 1]))
        splits = {"train": split, "val": split, "test": split, "num_classes": 2}
        change(splits)
        return DataSplits(**splits)

    spec = DatasetSpec(name="six", loader=loader, default_model="digits_cnn", default_suites=("noise",),
                       train=DIGITS_TRAIN, retrain=DIGITS_TRAIN, max_test_examples=6)
    with pytest.raises(ValueError) as raised:
        spec.load(0)
    assert str(raised.value) == f"dataset 'six' (its loader): {message}"


def test_a_suites_test_sets_are_checked_like_the_built_ins(digits):
    from bench.data.suite import TestDistribution
    from bench.pipeline.runner import checked_sets

    class Crooked:
        name = "crooked"

    wrong = TestDistribution(name="crooked/half", suite="crooked",
                             images=ImageSet(digits.test.images[:, :, :16].contiguous(), digits.test.labels))
    with pytest.raises(ValueError, match=r"suite 'crooked', test set 'crooked/half': torch.uint8 images of \(3, 16, 32\)"):
        checked_sets(Crooked(), [wrong], digits)  # type: ignore[arg-type]
    labels = digits.test.labels.clone()
    labels[0] = 10
    bad = TestDistribution(name="crooked/labels", suite="crooked", images=ImageSet(digits.test.images, labels))
    with pytest.raises(ValueError, match="labels outside the dataset's 10 classes"):
        checked_sets(Crooked(), [bad], digits)  # type: ignore[arg-type]


def test_cifar100_reads_fine_labels_with_a_saved_seeded_split(cifar100_root):
    data = load_dataset("cifar100", 0)
    assert (data.num_classes, len(data.train), len(data.val), len(data.test)) == (100, 500, 100, 100)
    assert torch.bincount(data.val.labels, minlength=100).tolist() == [1] * 100  # stratified over fine labels
    saved = json.loads((cifar100_root / "splits" / "cifar100-seed0.json").read_text())
    assert saved["n"] == 600 and len(saved["val"]) == 100
    assert data.mean == (0.5071, 0.4865, 0.4409)
    test_file = pickle.loads((cifar100_root / "cifar-100-python" / "test").read_bytes())
    assert data.test.labels.tolist() == test_file["fine_labels"]
    expected = np.asarray(test_file["data"]).reshape(-1, 3, 32, 32)
    assert torch.equal(data.test.images, torch.from_numpy(expected))


def test_cifar100_with_wrong_md5_says_how_to_get_it(tmp_path, monkeypatch):
    write_cifar100(tmp_path)  # not patched: torchvision pins the official files' md5
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(DataMissing, match=r"CIFAR-100 \(or its md5 differs\) not found in .*cifar-100-python: rerun "
                                          r"with --download, or extract cifar-100-python.tar.gz"):
        dataset_spec("cifar100").load(0)


@pytest.mark.slow
def test_cifar100c_suite_end_to_end(cifar100_root, tmp_path):
    cifar100c_fixture(cifar100_root, ["fog", "contrast"])
    out = tmp_path / "results"
    args = ["run", "--suite", "cifar100c", "--model", "digits_cnn", "--corruptions", "fog,contrast", "--severities", "1,5",
            "--out", str(out), *TINY]
    assert main(args) == 0
    (path,) = out.glob("*.json")
    result = load_result(path)
    assert result.config.dataset == "cifar100"
    assert [(d.name, d.n_examples) for d in result.distributions] == [
        ("cifar100/clean", 100), ("cifar100c/fog/1", 100), ("cifar100c/fog/5", 100),
        ("cifar100c/contrast/1", 100), ("cifar100c/contrast/5", 100)]
    manifest = json.loads((cifar100_root / "CIFAR-100-C" / "prunebench-manifest.json").read_text())
    assert sorted(manifest) == ["contrast.npy", "fog.npy", "labels.npy"]  # recorded on first use


def test_cifar100c_checks_its_download_and_its_files_against_the_clean_set(cifar100_root, monkeypatch):
    from bench.data.suite import Selection
    from bench.pipeline.runner import load_suite

    data = load_dataset("cifar100", 0)
    suite = load_suite("cifar100c")
    with pytest.raises(DataMissing, match=r"CIFAR-100-C not found in .*CIFAR-100-C: rerun with --download \(fetches "
                                          r"CIFAR-100-C.tar.*bench data make-c --dataset cifar100"):
        suite.distributions(data, seed=0)
    (cifar100_root / "CIFAR-100-C.tar").write_bytes(b"a partial download")
    monkeypatch.setenv(DOWNLOAD_ENV, "1")
    with pytest.raises(ChecksumMismatch, match="CIFAR-100-C.tar: md5 .* differs from the pinned 11f0ed0f"):
        suite.distributions(data, seed=0)
    monkeypatch.delenv(DOWNLOAD_ENV)
    shuffled = data.test.labels.numpy()[::-1]
    write_cifar10c(cifar100_root / "CIFAR-100-C", np.zeros((100, 32, 32, 3), np.uint8), shuffled, ["fog"])
    with pytest.raises(DataInvalid, match="labels.npy: .* differ from the clean cifar100 test labels"):
        suite.distributions(data, seed=0, selection=Selection(corruptions=("fog",)))


PLUGIN_SOURCE = '''
"""Stripes: three classes of 32x32 stripe images (horizontal, vertical, diagonal), made with numpy."""
import numpy as np
import torch

from bench.data import DatasetSpec, DataSplits, ImageSet
from bench.results.schema import Recipe


def stripes(count, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    rows, cols = np.mgrid[0:32, 0:32]
    patterns = np.stack([rows % 8 < 4, cols % 8 < 4, (rows + cols) % 8 < 4]).astype(np.float64) * 160
    images = patterns[labels] + rng.normal(50, 25, (count, 32, 32))
    pixels = torch.from_numpy(images.clip(0, 255).astype(np.uint8))[:, None].expand(-1, 3, -1, -1).contiguous()
    return ImageSet(pixels, torch.from_numpy(labels))


def load(seed, per_class, image_size):
    return DataSplits(train=stripes(150, seed), val=stripes(30, seed + 1), test=stripes(60, 1000), num_classes=3)


RECIPE = Recipe(epochs=3, batch_size=32, optimizer="adam", lr=3e-3)
SPEC = DatasetSpec(name="stripes", loader=load, default_model="digits_cnn", default_suites=("noise",),
                   train=RECIPE, retrain=RECIPE, max_test_examples=60)
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "prunebench-stripes-demo"
version = "0.0.2"

[project.entry-points."prunebench.datasets"]
stripes = "stripes_demo:SPEC"

[tool.setuptools]
py-modules = ["stripes_demo"]
"""


@pytest.mark.slow
def test_a_dataset_from_an_installed_package_runs_through_bench_run(tmp_path, monkeypatch, capsys):
    site, env = install_package(tmp_path, PYPROJECT, {"stripes_demo": PLUGIN_SOURCE})
    out = tmp_path / "results"
    run = subprocess.run([bench_executable(), "run", "--dataset", "stripes", "--pruner", "wt", "--ratios", "0.5",
                          "--retrain-epochs", "1", "--workers", "1", "--out", str(out), "--quiet"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    (path,) = out.glob("stripes-digits_cnn-s0-*.json")
    result = load_result(path)
    config = result.config  # the spec's defaults: model, suites and the parent's 3 epochs
    assert (config.dataset, config.model, config.suites, config.train.epochs) == ("stripes", "digits_cnn", ("noise",), 3)
    sizes = {d.name: d.n_examples for d in result.distributions}
    assert sizes["stripes/clean"] == 60 and len(sizes) > 1
    assert result.parent.accuracy["stripes/clean"] > 0.6  # learned: chance is 1/3
    assert "stripes" in run.stdout  # the leaderboard printed at the end ranks it

    # in this process, once the package is importable: `bench list` and the Python API see the same spec
    # sys.path directly: monkeypatch.syspath_prepend calls into pkg_resources, which the reference
    # corruption tests replace with a stub (bench/corruptions/_reference.py)
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    registry.refresh()
    try:
        assert main(["list"]) == 0
        assert "  stripes (classification, prunebench-stripes-demo 0.0.2): model digits_cnn, suites noise" in (
            capsys.readouterr().out)
        api = default_config(dataset="stripes", epochs=2)
        assert (api.model, api.train.epochs, api.retrain.epochs) == ("digits_cnn", 2, 3)
    finally:
        monkeypatch.undo()
        registry.refresh()

"""The paper's suites end to end through `bench run`, on tiny fixtures in the official formats.

Nothing is downloaded: CIFAR-10 pickle batches, CIFAR-10.1 and CIFAR-10-C `.npy` files and
ImageNet / ImageNet-C JPEG folders are written by tests/formats.py.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from formats import (
    patch_cifar10_md5,
    write_cifar10,
    write_cifar10_1,
    write_cifar10c,
    write_imagenet,
    write_imagenet_c,
)

from bench.cli import main
from bench.data import load_cifar10
from bench.data.files import DATA_ENV, DOWNLOAD_ENV, DataMissing, sha256_file
from bench.data.readers import NpyRows
from bench.results import load_result

FAST = ["--pruner", "wt", "--ratios", "0.5", "--epochs", "2", "--retrain-epochs", "1", "--quiet"]


@pytest.fixture
def cifar_root(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("data")
    patch_cifar10_md5(monkeypatch, write_cifar10(root))
    write_cifar10_1(root)
    monkeypatch.setenv(DATA_ENV, str(root))
    return root


def cifar10c_fixture(root, corruptions):
    from torchvision.datasets import CIFAR10

    test = CIFAR10(str(root), train=False)
    write_cifar10c(root / "CIFAR-10-C", test.data, np.array(test.targets), corruptions)


def test_cifar10_split_is_45k_5k_like_seeded_and_saved(cifar_root):
    first, again = load_cifar10(0), load_cifar10(0)
    assert first.checksum == again.checksum
    assert (len(first.train), len(first.val), len(first.test)) == (270, 30, 100)  # 90 % / 10 % of 300
    assert torch.bincount(first.val.labels, minlength=10).tolist() == [3] * 10
    saved = json.loads((cifar_root / "splits" / "cifar10-seed0.json").read_text())
    assert sorted(saved["val"]) == saved["val"] and len(saved["val"]) == 30
    assert load_cifar10(1).checksum != first.checksum
    assert first.mean == (0.4914, 0.4822, 0.4465)


def test_cifar10_with_wrong_md5_is_refused(tmp_path, monkeypatch):
    write_cifar10(tmp_path)  # not patched: torchvision's pinned md5 of the official batches differ
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(DataMissing, match="--download"):
        load_cifar10(0)


@pytest.mark.slow
def test_cifar10_suites_end_to_end(cifar_root, tmp_path, capsys):
    cifar10c_fixture(cifar_root, ["gaussian_noise", "contrast", "fog"])
    out = tmp_path / "results"
    args = ["run", "--suite", "cifar10,cifar10.1,cifar10c", "--corruptions", "gaussian_noise,contrast",
            "--severities", "1,3", "--out", str(out), *FAST, "--epochs", "24"]
    assert main(args) == 0
    (path,) = out.glob("*.json")
    result = load_result(path)
    assert result.config.dataset == "cifar10" and result.config.model == "resnet20_cifar"
    names = [d.name for d in result.distributions]
    assert names == ["cifar10/clean", "cifar10.1/v6", "cifar10c/gaussian_noise/1", "cifar10c/gaussian_noise/3",
                     "cifar10c/contrast/1", "cifar10c/contrast/3"]
    sizes = {d.name: d.n_examples for d in result.distributions}
    assert sizes["cifar10.1/v6"] == 50 and sizes["cifar10c/contrast/3"] == 100
    assert result.parent.accuracy["cifar10/clean"] > 0.18  # learned: chance is 0.1 on 100 images (72 SGD steps)
    # the file-backed test sets are referenced in the cache, not copied; only the clean set is
    testsets = out / ".cache" / "testsets"
    assert len(list(testsets.glob("*.json"))) == 5 and len(list(testsets.glob("*.npz"))) == 1

    # severity 3 of the official layout is rows [20000, 30000) of the file: here [200, 300)
    rows = NpyRows(str(cifar_root / "CIFAR-10-C" / "contrast.npy"), str(cifar_root / "CIFAR-10-C" / "labels.npy"),
                   200, 300, ("a", "b"))
    full = np.load(cifar_root / "CIFAR-10-C" / "contrast.npy")[200:300]
    batches = list(rows.batches(64))
    assert [len(b) for b, _ in batches] == [64, 36]
    assert torch.equal(torch.cat([b for b, _ in batches]), torch.from_numpy(full).permute(0, 3, 1, 2))

    # a changed file is refused, naming it
    target = cifar_root / "CIFAR-10-C" / "contrast.npy"
    data = np.load(target)
    data[0, 0, 0, 0] ^= 1
    np.save(target, data)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "contrast.npy" in err and "sha256" in err

    # unknown selections are refused with what is available
    assert main([*args[:3], "--corruptions", "gaussian_noize", "--out", str(out), *FAST]) == 2
    assert "gaussian_noize" in capsys.readouterr().err


MISSING = re.compile(r"bench run: error: (.+) not found in (\S+): .+ \(--data-dir or \$PRUNEBENCH_DATA choose the data root\)")


@pytest.mark.parametrize("suite, what", [("cifar10c", "CIFAR-10 (or its md5 differs)"), ("imagenetc", "ImageNet")])
def test_missing_data_says_how_to_get_it(suite, what, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nothing"))
    assert main(["run", "--suite", suite, "--out", str(tmp_path), *FAST]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()  # one line, in the one wording
    match = MISSING.fullmatch(line)
    assert match and match[1] == what and match[2].startswith(str(tmp_path / "nothing")), line


def test_a_missing_suite_folder_has_the_same_wording(cifar_root, tmp_path, capsys):
    assert main(["run", "--suite", "cifar10c", "--out", str(tmp_path), *FAST]) == 2
    match = MISSING.fullmatch(capsys.readouterr().err.strip())
    assert match and match[1] == "CIFAR-10-C" and match[2] == str(cifar_root / "CIFAR-10-C")


def test_cifar10c_download_needs_permission_and_checks_md5(cifar_root, tmp_path, capsys):
    from bench.cli import main as cli

    assert cli(["run", "--suite", "cifar10c", "--out", str(tmp_path), *FAST]) == 2
    assert "zenodo.org/records/2535967" in capsys.readouterr().err
    (cifar_root / "CIFAR-10-C.tar").write_bytes(b"not the archive")  # a partial or wrong download
    assert cli(["run", "--suite", "cifar10c", "--download", "--out", str(tmp_path), *FAST]) == 2
    err = capsys.readouterr().err
    assert "CIFAR-10-C.tar" in err and "md5" in err
    assert DOWNLOAD_ENV not in os.environ  # one run's --download does not leak into the next


def test_cifar10_1_records_checksums_on_first_use(cifar_root):
    from bench.pipeline.runner import load_suite

    suite = load_suite("cifar10.1")
    (dist,) = suite.distributions(load_cifar10(0), seed=0)
    manifest = json.loads((cifar_root / "cifar10.1" / "prunebench-manifest.json").read_text())
    assert manifest["cifar10.1_v6_data.npy"] == sha256_file(cifar_root / "cifar10.1" / "cifar10.1_v6_data.npy")
    assert len(dist.images) == 50 and dist.images.labels.dtype == torch.int64


@pytest.mark.slow
def test_imagenet_c_end_to_end_with_class_balanced_subset(tmp_path, monkeypatch):
    wnids = ["n01440764", "n01443537", "n01484850"]
    write_imagenet(tmp_path, wnids, train_per_class=6, val_per_class=3)
    write_imagenet_c(tmp_path, wnids, ["gaussian_noise", "fog"], [2, 4], per_class=3)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    out = tmp_path / "results"
    # --per-class 6: 10 % of 6 training images per class leaves a validation (S) image per class
    args = ["run", "--suite", "imagenetc", "--model", "resnet18", "--per-class", "6", "--corruptions",
            "gaussian_noise,fog", "--severities", "2", "--out", str(out), "--pruner", "wt", "--ratios", "0.5",
            "--epochs", "1", "--retrain-epochs", "1", "--quiet"]
    assert main(args) == 0
    result = load_result(next(out.glob("*.json")))
    assert result.config.dataset == "imagenet"
    assert {d.name: d.n_examples for d in result.distributions} == {
        "imagenet/clean": 9, "imagenetc/gaussian_noise/2": 9, "imagenetc/fog/2": 9}
    # the subset is the first 2 files per class, the same names in every folder
    refs = [json.loads(p.read_text())["payload"] for p in (out / ".cache" / "testsets").glob("*.json")]
    names = {tuple(sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in r["paths"])) for r in refs}
    assert len(names) == 1


def test_mix_training_corrupts_five_sixths_of_the_images_reproducibly(digits):
    from bench.data.recipes import DIGITS_TRAIN
    from bench.pipeline.training import corruption_mix

    recipe = DIGITS_TRAIN.model_copy(update={"corruption_mix": ("gaussian_noise", "contrast")})
    images = digits.train.images[:600]
    first = corruption_mix(images, recipe, torch.Generator().manual_seed(0))
    again = corruption_mix(images, recipe, torch.Generator().manual_seed(0))
    assert torch.equal(first, again)
    changed = (first != images).flatten(1).any(1).float().mean()
    assert abs(float(changed) - 5 / 6) < 0.06
    assert torch.equal(corruption_mix(images, DIGITS_TRAIN, torch.Generator()), images)


@pytest.mark.slow
def test_mix1_training_tested_on_held_out_mix2(cifar_root, tmp_path):
    from bench.corruptions.tables import MIX1, MIX2

    cifar10c_fixture(cifar_root, list(MIX2))
    out = tmp_path / "results"
    args = ["run", "--suite", "cifar10c", "--train-corruptions", "mix1", "--corruptions", "mix2", "--severities", "3",
            "--out", str(out), *FAST]
    assert main(args) == 0
    result = load_result(next(out.glob("*.json")))
    assert result.config.train.corruption_mix == MIX1 == result.config.retrain.corruption_mix
    tested = {d.corruption for d in result.distributions if d.corruption}
    assert tested == set(MIX2) and not tested & set(MIX1)


def test_voc_c_segmentation_end_to_end_with_dataset_level_miou(tmp_path, monkeypatch):
    from voc_format import write_voc_fixture

    from bench.data import load_dataset
    from bench.data.segmentation import mean_iou
    from bench.pipeline.jobs import Store
    from bench.pipeline.specs import eval_spec, run_networks, spec_key

    write_voc_fixture(tmp_path, n_train=24, n_val=6, size=(40, 56), seed=0)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    out = tmp_path / "results"
    args = ["run", "--suite", "voc-c", "--model", "fcn_tiny", "--image-size", "32", "--corruptions",
            "gaussian_noise,defocus_blur", "--severities", "2", "--pruner", "wt,ft", "--ratios", "0.5",
            "--epochs", "6", "--retrain-epochs", "1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    result = load_result(next(out.glob("*.json")))
    assert result.config.dataset == "voc" and result.metric == "miou"
    assert [d.name for d in result.distributions] == ["voc/clean", "voc-c/gaussian_noise/2", "voc-c/defocus_blur/2"]
    assert all(not net.hits for net in result.networks)  # mIoU is not a mean over images
    # each stored score is the mIoU of the one dataset-level confusion matrix of its evaluation
    store = Store(out / ".cache")
    data = load_dataset("voc", 0, image_size=32)
    assert data.test.labels.shape == (6, 32, 32)
    refs = run_networks(result.config, result.provenance.data_checksum)
    for ref, net in zip(refs, result.networks):
        for name, checksum in result.provenance.distribution_checksums.items():
            stored = store.read_json("evals", spec_key(eval_spec(ref.key, checksum, result.config)))
            confusion = torch.tensor(stored["confusion"])
            assert confusion.shape == (21, 21) and int(confusion.sum()) <= 6 * 32 * 32
            assert net.accuracy[name] == mean_iou(confusion)
    # corruptions change images only: the masks of every test set are the clean ones
    for checksum in result.provenance.distribution_checksums.values():
        assert torch.equal(store.load_testset(checksum).labels, data.test.labels)


@pytest.mark.slow
def test_make_c_output_is_read_by_the_cifar10c_suite(cifar_root, tmp_path, capsys):
    folder = cifar_root / "CIFAR-10-C"
    assert main(["data", "make-c", "--dataset", "cifar10", "--out", str(folder), "--corruptions", "fog,pixelate",
                 "--severities", "2,4", "--quiet"]) == 0
    out = tmp_path / "results"
    args = ["run", "--suite", "cifar10c", "--corruptions", "fog,pixelate", "--severities", "4", "--out", str(out), *FAST]
    assert main(args) == 0
    result = load_result(next(out.glob("*.json")))
    assert [d.name for d in result.distributions] == ["cifar10/clean", "cifar10c/fog/4", "cifar10c/pixelate/4"]
    # severity 4 is the second block of a folder made for severities 2 and 4
    from bench.pipeline.jobs import Store

    rows = Store(out / ".cache").load_testset(result.provenance.distribution_checksums["cifar10c/fog/4"])
    assert (rows.start, rows.stop) == (100, 200)
    capsys.readouterr()
    assert main([*args[:5], "--severities", "3", "--out", str(out), *FAST]) == 2
    assert "severities [2, 4] only" in capsys.readouterr().err


def test_sbd_is_read_in_its_official_layout(tmp_path, monkeypatch):
    from voc_format import write_sbd_fixture

    from bench.data import load_dataset

    write_sbd_fixture(tmp_path / "SBD", n_train=10, n_val=4, size=(40, 56), seed=1)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    data = load_dataset("sbd", 0, image_size=32)
    assert (len(data.train), len(data.val), len(data.test)) == (9, 1, 4)
    assert data.test.labels.shape == (4, 32, 32) and data.task == "segmentation"
    assert set(data.test.labels.unique().tolist()) <= set(range(21)) | {255}
    assert json.loads((tmp_path / "splits" / "sbd-seed0.json").read_text())["n"] == 10

"""Tests for bench.data.make_c: the official CIFAR-10-C file layout, reproducibility, atomic writes, CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.corruptions
from bench.cli import main
from bench.corruptions import corrupt, seed_for
from bench.corruptions.tables import CIFAR10_C, IMAGENET_C
from bench.data.files import LOCAL_MANIFEST as MANIFEST
from bench.data.make_c import PARAMETERS, make_c

NAMES = ["gaussian_noise", "frost", "contrast", "glass_blur"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(7, 3, 5, 5, generator=gen), size=(32, 32), mode="bilinear")
    images = (smooth * 255).round().to(torch.uint8)
    return images, torch.tensor([3, 1, 4, 1, 5, 9, 2])


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, data: tuple[torch.Tensor, torch.Tensor]) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("made")
    return out, make_c(*data, out, corruptions=NAMES, seed=3, progress=False, chunk_size=7)


def test_official_layout(made: tuple[Path, dict[str, str]], data: tuple[torch.Tensor, torch.Tensor]) -> None:
    out, written = made
    images, labels = data
    n = len(images)
    assert sorted(written) == sorted([f"{name}.npy" for name in NAMES] + ["labels.npy"])
    for name in NAMES:
        array = np.load(out / f"{name}.npy")
        assert array.dtype == np.uint8 and array.shape == (5 * n, 32, 32, 3)
    stored = np.load(out / "labels.npy")
    assert stored.dtype == np.uint8 and np.array_equal(stored, np.tile(labels.numpy(), 5))
    parameters = json.loads((out / PARAMETERS).read_text())
    assert parameters["severities"] == [1, 2, 3, 4, 5] and parameters["table"] == "cifar10-c"
    assert parameters["corruptions"] == NAMES and parameters["seed"] == 3


def test_severity_rows(made: tuple[Path, dict[str, str]], data: tuple[torch.Tensor, torch.Tensor]) -> None:
    out, _ = made
    images, _ = data
    n = len(images)
    for name in ("gaussian_noise", "contrast"):
        array = np.load(out / f"{name}.npy")
        for severity in range(1, 6):
            seeds = [seed_for(3, "make-c", name, severity, i) for i in range(n)]
            expected = corrupt(images, name, CIFAR10_C[name][severity - 1], seeds).permute(0, 2, 3, 1).numpy()
            assert np.array_equal(array[(severity - 1) * n : severity * n], expected), (name, severity)
    # severities really differ, and the clean image is recognisable at severity 1
    contrast = np.load(out / "contrast.npy").astype(np.int16)
    clean = images.permute(0, 2, 3, 1).numpy().astype(np.int16)
    spread = [np.abs(contrast[(s - 1) * n : s * n] - clean).mean() for s in range(1, 6)]
    assert all(a < b for a, b in itertools.pairwise(spread))


def test_bytes_do_not_depend_on_run_or_chunk_size(
    tmp_path: Path, made: tuple[Path, dict[str, str]], data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    _, first = made
    again = make_c(*data, tmp_path / "again", corruptions=NAMES, seed=3, progress=False, chunk_size=7)
    chunked = make_c(*data, tmp_path / "chunked", corruptions=NAMES, seed=3, progress=False, chunk_size=3)
    assert first == again == chunked
    other_seed = make_c(*data, tmp_path / "other", corruptions=["gaussian_noise"], seed=4, progress=False)
    assert other_seed["gaussian_noise.npy"] != first["gaussian_noise.npy"]


def test_manifest_and_verification(tmp_path: Path, made: tuple[Path, dict[str, str]], data: tuple[torch.Tensor, torch.Tensor]) -> None:
    from bench.data.files import sha256_file, verify_files

    out, written = made
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest == written
    assert all(sha256_file(out / name) == digest for name, digest in manifest.items())
    assert verify_files(out, manifest, sorted(manifest)) == manifest
    # a later run into the same folder adds its files and keeps the others' entries
    folder = tmp_path / "merge"
    make_c(*data, folder, corruptions=["contrast"], progress=False)
    make_c(*data, folder, corruptions=["saturate"], progress=False)
    assert set(json.loads((folder / MANIFEST).read_text())) == {"contrast.npy", "saturate.npy", "labels.npy"}


def test_subset_of_severities(tmp_path: Path, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = data
    n = len(images)
    make_c(images, labels, tmp_path, table=IMAGENET_C, corruptions=["contrast"], severities=(5, 2), progress=False)
    array = np.load(tmp_path / "contrast.npy")
    assert array.shape == (2 * n, 32, 32, 3) and np.load(tmp_path / "labels.npy").shape == (2 * n,)
    for block, severity in enumerate((2, 5)):  # sorted, in severity order
        expected = corrupt(images, "contrast", IMAGENET_C["contrast"][severity - 1], 0).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(array[block * n : (block + 1) * n], expected)
    assert json.loads((tmp_path / PARAMETERS).read_text())["severities"] == [2, 5]
    with pytest.raises(ValueError, match="severities"):
        make_c(images, labels, tmp_path, severities=(0, 6), progress=False)
    with pytest.raises(ValueError, match="hail"):
        make_c(images, labels, tmp_path, corruptions=["hail"], progress=False)


def test_interrupted_run_leaves_no_partial_files(
    tmp_path: Path, data: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = bench.corruptions.corrupt

    def failing(images: torch.Tensor, name: str, level: object, seed: object) -> torch.Tensor:
        if name == "frost":
            raise RuntimeError("interrupted")
        return original(images, name, level, seed)  # type: ignore[arg-type]

    monkeypatch.setattr(bench.corruptions, "corrupt", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        make_c(*data, tmp_path, corruptions=["contrast", "frost"], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contrast.npy", "labels.npy"]  # no temporaries
    assert np.load(tmp_path / "contrast.npy").shape == (35, 32, 32, 3)


def test_cli_make_c_on_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.data import load_digits

    out = tmp_path / "digits-c"
    argv = ["data", "make-c", "--dataset", "digits", "--out", str(out), "--corruptions", "gaussian_noise,frost",
            "--severities", "1,3", "--seed", "1", "--quiet"]
    assert main(argv) == 0
    test = load_digits(1).test
    n = len(test)
    for name in ("gaussian_noise", "frost"):
        array = np.load(out / f"{name}.npy")
        assert array.shape == (2 * n, 32, 32, 3) and array.dtype == np.uint8
    assert np.array_equal(np.load(out / "labels.npy"), np.tile(test.labels.numpy(), 2))
    frost = np.load(out / "frost.npy")[:n].astype(np.int16)
    assert np.abs(frost - test.images.permute(0, 2, 3, 1).numpy()).mean() > 5  # frost is visible
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest) == {"gaussian_noise.npy", "frost.npy", "labels.npy"}
    assert main(["data", "make-c", "--dataset", "digits", "--out", str(out), "--corruptions", "hail", "--quiet"]) == 2
    assert "hail" in capsys.readouterr().err

"""Where jobs, data and analyses run off the CPU (`--device`, issue 13): the job's GPU and cuDNN
autotuning, device-resident data and DataLoader-fed files, `--compile`, MPS's float64 fallback, and
`bench analyze` / `bench compress` on a device. No GPU here: CUDA calls are simulated with
monkeypatch, device leaks are caught on the ``meta`` device (tests/test_devices.py's StrictDevice),
and every CPU path is checked to be the one it was (same tensors)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.analysis import AnalysisNetwork, backward_selection, functional_similarity, noisy_inputs
from bench.cli import build_parser, main, run_config
from bench.compress import compare
from bench.compress.measure import _synchronize
from bench.core.devices import RESIDENT_MARGIN, device_environment, fits_on_device, float64_device
from bench.data.files import file_hashes
from bench.data.readers import ImageFiles, NpyRows
from bench.data.recipes import DIGITS_TRAIN
from bench.models import create_model
from bench.pipeline.config import default_config
from bench.pipeline.executors import LocalExecutor
from bench.pipeline.jobs import job_environment, new_model
from bench.pipeline.specs import eval_spec, parent_spec, step_spec
from bench.pipeline.training import device_batches, evaluate, resident, train
from tests.test_devices import StrictDevice

pytestmark = pytest.mark.usefixtures("one_thread")

META = torch.device("meta")
CPU = torch.device("cpu")


@pytest.fixture
def strict() -> Iterator[None]:
    with StrictDevice():
        yield


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A machine whose current GPU is 0: records every torch.cuda.set_device."""
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    return calls


def same_batches(a: Iterator[tuple[torch.Tensor, torch.Tensor]], b: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    pairs = list(zip(list(a), list(b), strict=True))
    return bool(pairs) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in pairs)


# ---- the job's GPU, cuDNN autotuning ----------------------------------------------------------------

def test_a_cuda_n_job_runs_on_gpu_n_with_cudnn_autotuning_restored_after(fake_gpus):
    before = torch.backends.cudnn.benchmark
    config = default_config(pruners=("wt",), suites=("noise",))
    with job_environment(config, "cuda:1"):
        assert fake_gpus == [1] and torch.backends.cudnn.benchmark
    assert fake_gpus == [1, 0] and torch.backends.cudnn.benchmark == before
    with device_environment("cuda"):  # a pinned worker's job: its one GPU is the current one already
        assert fake_gpus == [1, 0] and torch.backends.cudnn.benchmark
    with device_environment("cuda", autotune=False):  # evaluations: hits that repeat (bench verify)
        assert not torch.backends.cudnn.benchmark
    with device_environment(CPU), device_environment("mps"):
        assert fake_gpus == [1, 0] and torch.backends.cudnn.benchmark == before


def test_in_process_jobs_get_the_gpu_index_pinned_workers_only_the_type():
    assert LocalExecutor().job_device("cuda:1") == "cuda:1"
    assert LocalExecutor().job_device("cpu") == "cpu"
    assert LocalExecutor(gpus=[0, 1]).job_device("cuda:1") == "cuda"
    config = default_config(pruners=("wt",), suites=("noise",))
    assert parent_spec(config, "data", "cuda:1") == parent_spec(config, "data", "cuda")  # keys: the type only


# ---- device-resident data ----------------------------------------------------------------------------

def test_data_stays_on_the_cpu_and_moves_to_a_gpu_only_with_room_to_spare(monkeypatch):
    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 16 * gib))
    assert not fits_on_device(1, CPU)
    assert fits_on_device(1, META) and fits_on_device(1, "mps")
    room = int(10 * gib - RESIDENT_MARGIN * 16 * gib)
    assert fits_on_device(room, "cuda:0") and not fits_on_device(room + 1, "cuda:0")


def test_resident_is_the_set_itself_on_the_cpu_and_a_copy_on_the_device(digits):
    assert resident(digits.test, CPU) is digits.test
    on_meta = resident(digits.test, META)
    assert on_meta.images.device == META and on_meta.labels.device == META and len(on_meta) == len(digits.test)


def test_a_whole_training_run_on_meta_indexes_and_augments_on_the_device(digits, strict):
    recipe = DIGITS_TRAIN.model_copy(update={"epochs": 1})
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_classes=10).to(META)
    train(model, digits, recipe, seed=0, progress=False)  # StrictDevice refuses CPU indices into meta images
    assert all(p.device == META for p in model.parameters())


def test_in_memory_test_sets_are_split_on_the_device(digits, strict):
    batches = list(device_batches(digits.test, 100, META))
    assert len(batches) == 6 and all(x.device == META and y.device == META for x, y in batches)


@pytest.fixture
def npy_rows(tmp_path: Path) -> NpyRows:
    generator = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", generator.integers(0, 256, (23, 8, 8, 3), dtype=np.uint8))
    np.save(tmp_path / "labels.npy", generator.integers(0, 10, 23))
    hashes = file_hashes(tmp_path, ["images.npy", "labels.npy"])
    return NpyRows(str(tmp_path / "images.npy"), str(tmp_path / "labels.npy"), 2, 23,
                   (hashes["images.npy"], hashes["labels.npy"]))


@pytest.fixture
def image_files(tmp_path: Path) -> ImageFiles:
    paths = []
    for index in range(5):
        path = tmp_path / f"{index}.png"
        Image.fromarray(np.full((6, 6, 3), 40 * index, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return ImageFiles(tuple(paths), (0, 1, 2, 1, 0), (6, 6, 3))


def test_file_backed_sets_through_dataloader_workers_give_the_same_batches(npy_rows, image_files):
    assert same_batches(device_batches(npy_rows, 7, CPU, loader_workers=1), npy_rows.batches(7))
    assert same_batches(device_batches(image_files, 2, CPU, loader_workers=2), image_files.batches(2))


def test_the_cpu_keeps_reading_files_in_process(npy_rows, digits, monkeypatch):
    def refuse(*_: object) -> None:
        raise AssertionError("no DataLoader on the CPU by default")

    monkeypatch.setattr("bench.pipeline.training.loader_batches", refuse)
    assert same_batches(device_batches(npy_rows, 7, CPU), npy_rows.batches(7))
    assert same_batches(device_batches(digits.test, 100, CPU), digits.test.batches(100))


def test_channels_last_is_honoured_off_the_cpu(digits):
    config = default_config(pruners=("wt",), suites=("noise",))
    for channels_last in (True, False):
        model = new_model(config.model_copy(update={"channels_last": channels_last}), digits, device=META)
        conv = next(p for p in model.parameters() if p.dim() == 4)
        assert conv.device == META and conv.is_contiguous(memory_format=torch.channels_last) == channels_last


# ---- --compile ------------------------------------------------------------------------------------------

def test_compile_is_in_the_config_and_the_keys_only_when_on():
    args = ["run", "--pruner", "wt", "--suite", "noise"]
    eager, compiled = (run_config(build_parser().parse_args(a)) for a in (args, [*args, "--compile"]))
    assert eager.compile is None and compiled.compile is True
    assert "compile" not in eager.model_dump(mode="json") and compiled.model_dump(mode="json")["compile"] is True
    assert eager.config_hash() != compiled.config_hash()
    for spec in (parent_spec, lambda c, _: step_spec(c, "wt", 1, "p", {}), lambda c, _: eval_spec("n", "t", c)):
        assert "compile" not in spec(eager, "data") and spec(compiled, "data")["compile"] is True


def test_compiled_evaluation_and_training_go_through_torch_compile(digits_cnn, digits, monkeypatch):
    """Wiring only: a real torch.compile takes about a minute on 2 busy cores (checked by hand: a
    compiled digits_cnn gives the eager logits to 3e-8), too slow for the suite."""
    compiled: list[torch.nn.Module] = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or copy.deepcopy(model))
    subset = digits.test.subset(torch.arange(64))
    assert evaluate(digits_cnn, digits, subset, compile_model=True) == evaluate(digits_cnn, digits, subset)
    assert compiled == [digits_cnn]
    model = copy.deepcopy(digits_cnn)
    train(model, digits, DIGITS_TRAIN.model_copy(update={"epochs": 1}), seed=0, progress=False, compile_model=True)
    # the deep copy trained instead of `model`: proof that the compiled module ran every step
    assert compiled[1:] == [model] and all(torch.equal(a, b) for a, b in zip(model.parameters(), digits_cnn.parameters()))


# ---- MPS: float64 work on the CPU ----------------------------------------------------------------------

def test_float64_work_leaves_only_mps():
    assert float64_device("mps") == CPU
    assert float64_device("cuda:1") == torch.device("cuda", 1)
    assert float64_device(CPU) == CPU and float64_device(META) == META


# ---- bench analyze and bench compress on a device ----------------------------------------------------------

def test_similarity_on_an_explicit_cpu_device_records_it(digits_cnn, digits):
    pruned = copy.deepcopy(digits_cnn)
    with torch.no_grad():
        next(pruned.parameters()).mul_(0.5)
    images = digits.test.subset(torch.arange(40))
    reports = [
        functional_similarity([AnalysisNetwork("parent", "parent", 0, 0.0, a), AnalysisNetwork("wt", "wt", 1, 0.5, b)],
                              digits, images, epsilons=(0.0, 0.1), draws=2)
        for a, b in ((digits_cnn, pruned), (digits_cnn.to(CPU), pruned.to(CPU)))
    ]
    assert reports[0] == reports[1] and reports[0].device == "cpu"


def test_noise_and_pixel_selection_on_meta(digits_cnn, digits, strict):
    generator = torch.Generator().manual_seed(0)
    inputs = noisy_inputs(digits.test.images[:4].to(META), 0.1, generator, digits)
    assert inputs.device == META and inputs.dtype == torch.float32
    kept = backward_selection(copy.deepcopy(digits_cnn).to(META), inputs, keep=100)
    assert kept.device == META and kept.shape == (4, 1, 32, 32)


def test_latency_is_timed_on_the_device_and_synchronised_on_cuda(digits_cnn, monkeypatch):
    measured = compare({"m": digits_cnn}, (3, 32, 32), batch=2, warmup=0, repeats=1, device=META)
    assert measured["m"].protocol["device"] == "meta" and measured["m"].params > 0
    synchronised: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "synchronize", synchronised.append)
    _synchronize(CPU)
    _synchronize(torch.device("cuda", 1))
    assert synchronised == [torch.device("cuda", 1)]


@pytest.mark.parametrize("command", [["analyze", "similarity"], ["analyze", "features"], ["compress"]])
def test_analyze_and_compress_on_an_unknown_device_are_one_line_errors(command, tmp_path, capsys):
    assert main([*command, str(tmp_path / "run.json"), "--device", "tpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--device tpu: unknown device" in error and "\n" not in error


def test_npy_rows_are_read_once_and_split_on_the_device(npy_rows, strict):
    batches = list(device_batches(npy_rows, 7, META))
    assert [len(x) for x, _ in batches] == [7, 7, 7] and all(x.device == y.device == META for x, y in batches)

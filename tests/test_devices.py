"""Device-generic stages (`--device`): the same numbers on an explicit CPU device, no device leaks.

Device leaks are caught on the ``meta`` device (shapes and dtypes, no values): torch refuses most
operations that mix a meta tensor with a CPU tensor ("Tensor on device cpu is not on the expected
device meta"), and ``StrictDevice`` below also refuses the few it lets through (indexing, gathers
with CPU indices), so each per-batch function run here on meta creates no tensor on the wrong
device. What cannot run on meta, and so is covered only by the CPU tests:

* reading values back: ``count_nonzero`` to a Python int (the size search's measured ratio and
  propagation's "until nothing changes" loop: ``propagation_pass`` is tested, the loop is not),
  ``.item()``-style decisions and data-dependent shapes (boolean indexing, ``torch.nonzero``);
* bfloat16 autocast: torch has no autocast for the meta device (bf16 is tested on the CPU);
* ``shot_noise`` (its Poisson counts are drawn by the CPU generator from the rates, which must be
  copied to the host) and ``jpeg_compression`` (a PIL round trip of the uint8 images);
* iterative refinements of spatter's Canny hysteresis and distance transform stop after one round
  on meta (``bench.corruptions._operators.settled``), since convergence needs values.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bench.cli import main
from bench.core.devices import cpu_name, device_description, module_device, resolve_device
from bench.corruptions import CORRUPTIONS, corrupt
from bench.corruptions.tables import CIFAR10_C, MNIST_C_GEOMETRIC, MNIST_C_STROKES
from bench.data.recipes import DIGITS_TRAIN
from bench.models import create_model
from bench.pipeline.config import default_config
from bench.pipeline.jobs import new_model, prune_context
from bench.pipeline.specs import eval_spec, parent_spec, spec_key, step_spec
from bench.pipeline.training import (
    batch_hits,
    correct_predictions,
    evaluate,
    train,
    training_batch,
    training_step,
)
from bench.pruning import PruneContext, compressible_layers, last_layer_name, propagation_pass, prune_to_ratio
from bench.pruning.sensitivity import layer_sensitivities, pfp_layer_scores, sipp_layer_scores
from bench.results import load_result
from pruners.pfp import PFP
from pruners.wt import WeightThresholding

pytestmark = pytest.mark.usefixtures("one_thread")

META = torch.device("meta")
CPU = torch.device("cpu")
HOST_ONLY = {"shot_noise", "jpeg_compression"}  # read the image values on the host: not on meta
LEVELS = {name: levels[2] for name, levels in {**CIFAR10_C, **MNIST_C_GEOMETRIC, **MNIST_C_STROKES}.items()} | {"uniform_noise": 0.1}
RUN = ["run", "--pruner", "wt", "--suite", "noise", "--corruptions", "gaussian_noise", "--ratios", "0.5",
       "--epochs", "1", "--retrain-epochs", "1", "--threads", "1", "--quiet"]
_COPIES = {"_to_copy", "copy_", "lift_fresh", "lift_fresh_copy", "detach", "alias"}


class StrictDevice(TorchDispatchMode):
    """Refuse every op that mixes tensors of two device types (0-dim CPU scalars and copies
    excepted): meta's own check lets indexing and gathers with CPU indices through, which CUDA
    refuses (gather) or pays for with a hidden host-to-device copy (indexing)."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func.overloadpacket.__name__ not in _COPIES:
            devices = {t.device.type for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
                       and not (t.device.type == "cpu" and t.dim() == 0)}
            assert len(devices) <= 1, f"{func} mixes devices {sorted(devices)}"
        return func(*args, **kwargs)


@pytest.fixture
def strict() -> Iterator[None]:
    with StrictDevice():
        yield


def on_meta(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).to(META)


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def context(data: Any, model: torch.nn.Module, images: int = 12) -> PruneContext:
    return PruneContext(calibration=data.normalize(data.val.images[:images]).to(module_device(model)),
                        labels=data.val.labels[:images].to(module_device(model)), seed=0,
                        last_layer=last_layer_name(model), batch_size=5)


# ---- resolve_device, device_description ----------------------------------------------------------

def test_auto_is_the_cpu_without_accelerators():
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("an accelerator is present")
    assert resolve_device("auto") == CPU
    assert resolve_device("CPU") == CPU


@pytest.mark.parametrize(("spec", "message"), [
    ("cuda", "--device cuda: no CUDA device is available"),
    ("cuda:1", "--device cuda:1: no CUDA device is available"),
    ("mps", "--device mps: no MPS device is available"),
    ("tpu", "--device tpu: unknown device; use auto"),
    ("cuda:x", "--device cuda:x: unknown device"),
])
def test_unusable_devices_are_one_line_errors(spec, message):
    if spec.startswith("cuda") and torch.cuda.is_available() or spec == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has the device")
    with pytest.raises(ValueError) as caught:
        resolve_device(spec)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_device_description_of_the_cpu_names_its_code_path_and_kernel_settings(monkeypatch):
    capability = torch.backends.cpu.get_cpu_capability()
    described = device_description(CPU)
    assert described == {"device": "cpu", "device_name": cpu_name(), "cuda_version": None, "cudnn_version": None}
    assert described["device_name"].endswith(f"(ATen {capability})") and "MKL_CBWR" not in cpu_name()
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    assert cpu_name().endswith(f"(ATen {capability}, MKL_CBWR=COMPATIBLE, ONEDNN_MAX_CPU_ISA=SSE41)")


# ---- job identity ----------------------------------------------------------------------------------

def test_device_type_is_in_job_keys_off_the_cpu_only():
    config = default_config(pruners=("wt",), suites=("noise",))
    bf16 = config.model_copy(update={"precision": "bf16"})
    assert parent_spec(config, "data", "cpu") == parent_spec(config, "data")
    assert "device" not in parent_spec(config, "data") and "precision" not in parent_spec(config, "data")
    assert "device" not in eval_spec("net", "set", config) and "device" not in step_spec(config, "wt", 1, "p", {})
    assert parent_spec(config, "data", "cuda")["device"] == "cuda"
    assert parent_spec(config, "data", "cuda:1") == parent_spec(config, "data", "cuda")  # never the GPU index
    assert step_spec(config, "wt", 1, "p", {}, "mps")["device"] == "mps"
    assert spec_key(eval_spec("net", "set", config, "cuda")) != spec_key(eval_spec("net", "set", config))
    # bf16 now trains under autocast: its parents and steps are other artifacts than fp32's
    assert parent_spec(bf16, "data")["precision"] == "bf16" and step_spec(bf16, "wt", 1, "p", {})["precision"] == "bf16"


# ---- an explicit CPU device gives the same numbers -------------------------------------------------

@pytest.mark.slow
def test_training_on_an_explicit_cpu_device_is_identical(digits):
    recipe = DIGITS_TRAIN.model_copy(update={"epochs": 1, "corruption_mix": ("gaussian_noise", "fog")})
    config = default_config(pruners=("wt",), suites=("noise",))
    plain, explicit = new_model(config, digits), new_model(config, digits, device=CPU)
    assert same_state(plain, explicit)
    train(plain, digits, recipe, seed=3, progress=False)
    train(explicit.to(CPU), digits, recipe, seed=3, progress=False)
    assert same_state(plain, explicit)


@pytest.mark.slow
def test_bf16_training_keeps_fp32_weights_and_changes_the_numbers(digits):
    recipe = DIGITS_TRAIN.model_copy(update={"epochs": 1})
    torch.manual_seed(0)
    fp32 = create_model("digits_cnn", num_classes=10)
    bf16 = copy.deepcopy(fp32)
    train(fp32, digits, recipe, seed=0, progress=False)
    train(bf16, digits, recipe, seed=0, progress=False, precision="bf16")
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    assert not same_state(fp32, bf16)


def test_evaluation_on_an_explicit_cpu_device_is_identical(digits_cnn, digits):
    hits = correct_predictions(digits_cnn, digits, digits.test)
    assert hits.device == CPU
    assert torch.equal(hits, correct_predictions(digits_cnn.to(CPU), digits, digits.test))
    assert evaluate(digits_cnn, digits, digits.test) == evaluate(digits_cnn.to(CPU), digits, digits.test)


@pytest.mark.parametrize("pruner", [WeightThresholding(), PFP()], ids=["wt", "pfp"])
def test_size_search_on_an_explicit_cpu_device_is_identical(digits_cnn, digits, pruner):
    config = default_config(pruners=("wt",), suites=("noise",), calibration_size=16)
    parent_nonzero = sum(int(p.count_nonzero()) for p in digits_cnn.parameters())
    plain, explicit = copy.deepcopy(digits_cnn), copy.deepcopy(digits_cnn).to(CPU)
    outcome = prune_to_ratio(plain, pruner, 0.5, parent_nonzero, prune_context(config, digits, plain))
    again = prune_to_ratio(explicit, pruner, 0.5, parent_nonzero, prune_context(config, digits, explicit))
    assert outcome == again and same_state(plain, explicit)


def test_sensitivities_on_an_explicit_cpu_device_are_identical(digits_cnn, digits):
    images = digits.normalize(digits.val.images[:12])
    layers = compressible_layers(digits_cnn)
    for reducer in (sipp_layer_scores, pfp_layer_scores):
        plain = layer_sensitivities(digits_cnn, layers, images, reducer, 5)
        explicit = layer_sensitivities(digits_cnn.to(CPU), layers, images.to(CPU), reducer, 5)
        assert all(torch.equal(plain[name], explicit[name]) for name in layers)


def test_a_corruption_on_an_explicit_cpu_device_is_identical(digits):
    images = digits.test.images[:8]
    for name in ("snow", "glass_blur", "spatter"):
        assert torch.equal(corrupt(images, name, LEVELS[name], 5), corrupt(images.to(CPU), name, LEVELS[name], 5))


# ---- no device leaks: the per-batch functions on meta ----------------------------------------------

def test_one_training_step_on_meta(digits, strict):
    recipe = DIGITS_TRAIN.model_copy(update={"corruption_mix": ("impulse_noise", "motion_blur", "contrast")})
    torch.manual_seed(0)
    model = create_model("digits_cnn", num_classes=10).to(META)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in model.named_parameters()}
    images, targets = training_batch(digits, recipe, torch.arange(16), torch.Generator().manual_seed(0), META)
    assert images.device == META and targets.device == META and images.dtype == torch.uint8
    loss = training_step(model, optimizer, digits, images, targets, masks)
    assert loss.device == META and all(p.device == META for p in model.parameters())


def test_one_evaluation_batch_on_meta(digits_cnn, digits, strict):
    model = on_meta(digits_cnn).eval()
    with torch.inference_mode():
        hits = batch_hits(model, digits, digits.test.images[:8].to(META), digits.test.labels[:8].to(META))
    assert hits.device == META and hits.shape == (8,) and hits.dtype == torch.bool


@pytest.mark.slow
@pytest.mark.parametrize("reducer", [sipp_layer_scores, pfp_layer_scores], ids=["sipp", "pfp"])
def test_one_sensitivity_pass_on_meta(resnet20, digits, reducer, strict):
    model = on_meta(resnet20)
    layers = compressible_layers(model)
    scores = layer_sensitivities(model, layers, digits.normalize(digits.val.images[:6]).to(META), reducer, 4)
    assert set(scores) == set(layers) and all(s.device == META for s in scores.values())


@pytest.mark.parametrize("structured", [False, True], ids=["unstructured", "structured"])
def test_one_propagation_pass_on_meta(resnet20, digits, structured, strict):
    model = on_meta(resnet20)
    propagation_pass(model, context(digits, model), structured)
    assert all(p.device == META for p in model.parameters())


@pytest.mark.parametrize("name", sorted(set(CORRUPTIONS) - HOST_ONLY))
def test_each_corruption_on_meta(digits, name, strict):
    for images in (digits.test.images[:4], digits.test.images[:4, :1]):  # RGB and grey
        for seed in (11, [1, 2, 3, 4]):  # one generator for the batch, one per image
            out = corrupt(images.to(META), name, LEVELS[name], seed)
            assert out.device == META and out.shape == images.shape and out.dtype == torch.uint8


# ---- bench run --device cpu ------------------------------------------------------------------------

@pytest.mark.slow
def test_bench_run_device_cpu_gives_the_same_cells_and_records_the_device(tmp_path):
    plain, explicit = tmp_path / "plain", tmp_path / "explicit"
    assert main([*RUN, "--out", str(plain)]) == 0
    assert main([*RUN, "--device", "cpu", "--out", str(explicit)]) == 0
    (first,), (second,) = plain.glob("*.json"), explicit.glob("*.json")
    a, b = load_result(first), load_result(second)
    assert [n.model_dump() for n in a.networks] == [n.model_dump() for n in b.networks]
    assert b.provenance.device == "cpu" and b.provenance.device_name == cpu_name() and b.provenance.cuda_version is None
    keys = {folder: sorted(p.name for p in (folder / ".cache").rglob("*") if p.is_file()) for folder in (plain, explicit)}
    assert keys[plain] == keys[explicit]  # the same CPU job keys, with or without the flag


def test_bench_run_on_a_missing_device_is_a_one_line_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main([*RUN, "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "bench run: error: --device cuda: no CUDA device is available"
    assert not list(tmp_path.iterdir())


def test_result_files_without_device_fields_read_as_cpu():
    folder = Path(__file__).resolve().parents[1] / "leaderboard" / "results"
    path = next(p for p in sorted(folder.glob("*.json")) if not p.name.endswith(".verify.json"))
    assert load_result(path).provenance.device == "cpu"

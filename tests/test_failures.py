"""Failures are one clear line, leave no temporary files and lose nothing: a full disk at every
stage of a run, corrupted cache artifacts, and plugins that break the contract."""

import errno
import importlib
import json
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.core import registry
from bench.results import load_result

RUN = ["run", "--pruner", "wt", "--suite", "noise", "--corruptions", "gaussian_noise", "--ratios", "0.5",
       "--epochs", "1", "--retrain-epochs", "1", "--threads", "1", "--quiet"]


def cells(out: Path) -> list[dict]:
    (path,) = out.glob("*.json")
    return [n.model_dump() for n in load_result(path).networks]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("bench run: error:")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "results"
    assert main([*RUN, "--out", str(out)]) == 0
    return out


# ---- a full disk at each stage -------------------------------------------------------------------

STAGES = {  # the temporary file that fails to reach the disk, by the folder it is written to
    "test set": r"/testsets/\.[^/]+\.npz\.",
    "parent": r"/parents/\.[^/]+\.safetensors\.",
    "step": r"/steps/\.[^/]+\.safetensors\.",
    "evaluation": r"/evals/\.[^/]+\.json\.",
    "result": r"/results/\.digits-[^/]+\.json\.",
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_full_disk_at_any_stage_is_one_line_leaves_no_temporary_file_and_a_rerun_finishes(
        stage, reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    real_fsync = os.fsync

    def full_disk_fsync(fd: int) -> None:
        if re.search(STAGES[stage], os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_fsync)
    assert main([*RUN, "--out", str(out)]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "out of disk space" in line and str(out) in line
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "a temporary file was left behind"
    assert not list(out.glob("*.json")), "a result file was written by the failed run"

    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main([*RUN, "--out", str(out)]) == 0
    assert cells(out) == cells(reference)


# ---- corrupted cache artifacts -------------------------------------------------------------------

@pytest.mark.slow
def test_corrupted_cache_artifacts_are_recomputed_with_a_warning_naming_them(reference, tmp_path, caplog):
    out = tmp_path / "results"
    assert main([*RUN, "--out", str(out)]) == 0
    (parent,) = (out / ".cache" / "parents").glob("*.safetensors")
    payload = bytearray(parent.read_bytes())
    payload[-3] ^= 0x10  # one flipped bit in a stored weight
    parent.write_bytes(bytes(payload))
    evaluation = sorted((out / ".cache" / "evals").glob("*.json"))[0]
    document = json.loads(evaluation.read_text())
    document["payload"]["accuracy"] = 1.0  # "all correct", without the matching digest
    evaluation.write_text(json.dumps(document))
    for path in out.glob("*.json"):
        path.unlink()

    with caplog.at_level("WARNING", logger="bench.pipeline.store"):
        assert main([*RUN, "--out", str(out)]) == 0
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert str(parent) in warnings and str(evaluation) in warnings
    assert cells(out) == cells(reference)
    assert json.loads(evaluation.read_text())["payload"]["accuracy"] != 1.0


# ---- command-line input --------------------------------------------------------------------------

def test_out_pointing_at_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("")
    assert main([*RUN, "--out", str(target)]) == 2
    assert error_lines(capsys.readouterr().err) == [f"bench run: error: --out {target}: is a file, not a folder"]


@pytest.mark.parametrize("flag, value, message", [
    ("--epochs", "-1", "argument --epochs: must be at least 0, got -1"),
    ("--delta", "1.5", "argument --delta: must lie in [0, 1), got 1.5"),
    ("--threads", "two", "argument --threads: 'two' is not an integer"),
])
def test_invalid_values_name_the_flag(flag, value, message, capsys):
    with pytest.raises(SystemExit) as info:
        main([*RUN, flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "pydantic" not in err


def test_a_permission_error_names_the_file(tmp_path, monkeypatch, capsys):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(args[1]))

    monkeypatch.setattr(os, "replace", denied)
    assert main([*RUN, "--out", str(tmp_path / "results")]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "permission denied" in line and str(tmp_path / "results") in line


# ---- plugins -------------------------------------------------------------------------------------

@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """Install fake distributions (a dist-info with entry points, and their modules) on sys.path."""

    def install(distribution: str, entries: dict[str, str], modules: dict[str, str]) -> None:
        site = tmp_path / f"site-{distribution}"
        info = site / f"{distribution.replace('-', '_')}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(
            "[prunebench.pruners]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items()))
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
        # not monkeypatch.syspath_prepend: it trips over a pkg_resources stub other tests leave behind
        monkeypatch.setattr(sys, "path", [str(site), *sys.path])
        importlib.invalidate_caches()
        registry.refresh()

    yield install
    monkeypatch.undo()
    registry.refresh()


BROKEN_PRUNERS = '''
    import torch
    from bench.api import Pruner, compressible_layers

    class Raising(Pruner):
        name = "raising"
        def plan(self, model, ctx):
            return 1 / 0

    class FloatMask(Pruner):
        name = "floatmask"
        def plan(self, model, ctx):
            layers = compressible_layers(model)
            return lambda keep: {n: torch.full_like(l.weight, 10.0) for n, l in layers.items()}

    class WrongShape(Pruner):
        name = "wrongshape"
        def plan(self, model, ctx):
            layers = compressible_layers(model)
            return lambda keep: {n: torch.ones(3, dtype=torch.bool) for n, l in layers.items()}
'''


@pytest.mark.parametrize("pruner, message", [
    ("raising", "pruner 'raising' failed in plan(model, ctx): ZeroDivisionError: division by zero (package broken-pruners 0.1)"),
    ("floatmask", "pruner 'floatmask': mask of layer 'features.0.0' is torch.float32; masks must be torch.bool"),
    ("wrongshape", "pruner 'wrongshape': mask of layer 'features.0.0' has shape (3,), its weight (16, 3, 3, 3)"),
])
@pytest.mark.slow
def test_a_broken_plugin_is_one_line_naming_it(pruner, message, plugin_site, tmp_path, capsys):
    plugin_site("broken-pruners", {name: f"broken_pruners:{cls}" for name, cls in
                                   [("raising", "Raising"), ("floatmask", "FloatMask"), ("wrongshape", "WrongShape")]}, {"broken_pruners": BROKEN_PRUNERS})
    args = [a if a != "wt" else pruner for a in RUN]
    assert main([*args, "--out", str(tmp_path / "results")]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert message in line


@pytest.mark.slow
def test_diverged_retraining_is_an_error_naming_the_step(tmp_path):
    from bench.data.recipes import DIGITS_TRAIN
    from bench.pipeline.runner import run
    from bench.pruning import NonFiniteWeights
    from bench.results.schema import RunConfig

    recipe = DIGITS_TRAIN.model_copy(update={"epochs": 1})
    config = RunConfig(dataset="digits", model="digits_cnn", pruners=("wt",), target_ratios=(0.5,), train=recipe,
                       retrain=recipe.model_copy(update={"lr": 1e30}), seed=0, threads=1)
    with pytest.raises(NonFiniteWeights, match=r"^wt step 1 \(target ratio 0.5000\), after retraining: non-finite"):
        run(config, tmp_path, progress=False)


def test_the_traceback_is_shown_under_debug(plugin_site, tmp_path, capsys):
    plugin_site("broken-pruners", {"raising": "broken_pruners:Raising"}, {"broken_pruners": BROKEN_PRUNERS})
    args = [a if a != "wt" else "raising" for a in RUN]
    assert main(["--debug", *args, "--out", str(tmp_path / "results")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError" in err


def test_two_packages_registering_one_name_is_an_error_listing_both(plugin_site):
    plugin_site("impostor", {"wt": "impostor_wt:WT"}, {"impostor_wt": "from pruners.wt import WeightThresholding as WT\n"})
    with pytest.raises(registry.RegistryError) as info:
        registry.load_class(registry.PRUNER_GROUP, "wt", object)
    assert "registered by 2 installed packages" in str(info.value)
    assert "prunebench" in str(info.value) and "impostor 0.1 (impostor_wt:WT)" in str(info.value)


@pytest.mark.slow
def test_masks_are_checked_before_they_touch_the_weights(digits_cnn):
    from bench.core.registry import PluginError
    from bench.pruning import checked_masks, compressible_layers
    from pruners.wt import WeightThresholding

    layers = compressible_layers(digits_cnn)
    good = {name: torch.ones_like(layer.weight, dtype=torch.bool) for name, layer in layers.items()}
    assert checked_masks(WeightThresholding(), good, layers).keys() == good.keys()
    with pytest.raises(PluginError, match="'nonexistent', which is not a compressible layer"):
        checked_masks(WeightThresholding(), {"nonexistent": torch.ones(1, dtype=torch.bool)}, layers)


@pytest.mark.slow
def test_bench_run_writes_no_result_that_its_readers_would_reject(tmp_path, monkeypatch, capsys):
    """A run whose steps miss their targets by more than the readers allow (here: a negative
    tolerance, which every step misses) fails in one line and writes no result file."""
    import bench.results.files
    from bench.cli import main

    monkeypatch.setattr(bench.results.files, "TARGET_RATIO_TOLERANCE", -1.0)
    out = tmp_path / "out"
    code = main(["run", "--pruner", "wt", "--suite", "noise", "--ratios", "0.5", "--epochs", "1", "--retrain-epochs",
                 "1", "--calibration-size", "16", "--workers", "1", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "the run's own result fails the checks every reader applies, so it was not written" in err
    assert "away from its target" in err
    assert not list(out.glob("*.json"))

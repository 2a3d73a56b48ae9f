"""Content-addressed jobs: resume after SIGKILL, incremental suites, and executors agree."""

import os
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import torch

from bench.data.recipes import DIGITS_TRAIN
from bench.pipeline.executors import LocalExecutor, RayExecutor
from bench.pipeline.runner import run
from bench.results import load_result
from bench.results.metrics import derive
from bench.results.schema import RunConfig

ARGS = ["--pruner", "wt,sipp", "--suite", "noise", "--severities", "1", "--ratios", "0.5,0.8",
        "--epochs", "2", "--retrain-epochs", "1", "--quiet"]


def small_config(suites=("noise",)) -> RunConfig:
    """Two pruners of two steps each, on every suite's first severity (11 digits-c, 2 noise test sets)."""
    recipe = DIGITS_TRAIN.model_copy(update={"epochs": 3})
    return RunConfig(
        dataset="digits", model="digits_cnn", pruners=("wt", "sipp"), suites=suites, target_ratios=(0.5, 0.8),
        train=recipe, retrain=recipe.model_copy(update={"epochs": 1}), seed=0, calibration_size=64, severities=(1,),
    )


def cells(path: Path) -> dict:
    result = load_result(path)
    return {
        "networks": [n.model_dump() for n in result.networks],
        "distributions": [d.model_dump() for d in result.distributions],
        "derived": derive(result.distributions, result.networks, result.config.delta).model_dump(),
    }


def bench_command(out: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "bench"), "run", *ARGS, "--out", str(out)]


@pytest.fixture(scope="module")
def sequential_result(tmp_path_factory) -> Path:
    return run(small_config(), tmp_path_factory.mktemp("sequential"), progress=False)


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_result(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(bench_command(tmp_path / "whole"), check=True, env=env, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(bench_command(out), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steps = out / ".cache" / "steps"
    deadline = time.monotonic() + 300
    while not list(steps.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not list(out.glob("*.json")), "a result file was written by the killed run"
    finished_before = {p: p.stat().st_mtime_ns for p in steps.glob("*.safetensors")}
    assert finished_before

    subprocess.run(bench_command(out), check=True, env=env, capture_output=True)
    for path, stamp in finished_before.items():
        assert path.stat().st_mtime_ns == stamp, "a finished step was recomputed"
    (resumed,) = out.glob("*.json")
    (whole,) = (tmp_path / "whole").glob("*.json")
    assert cells(resumed) == cells(whole)


@pytest.mark.slow
def test_adding_a_suite_only_runs_new_evaluations(sequential_result, tmp_path):
    cache = sequential_result.parent / ".cache"
    networks = {p: p.stat().st_mtime_ns for kind in ("parents", "steps") for p in (cache / kind).glob("*.safetensors")}
    evals_before = set((cache / "evals").glob("*.json"))
    path = run(small_config(suites=("noise", "digits-c")), tmp_path, cache_dir=cache, progress=False)
    assert {p: p.stat().st_mtime_ns for p in networks} == networks
    new_evals = set((cache / "evals").glob("*.json")) - evals_before
    assert len(new_evals) == 5 * 11  # 5 networks x digits-c's 11 corruptions at severity 1
    grown, original = load_result(path), load_result(sequential_result)
    for before, after in zip(original.networks, grown.networks):
        assert all(after.accuracy[name] == value for name, value in before.accuracy.items())


@pytest.mark.slow
def test_process_pool_matches_sequential(sequential_result, tmp_path):
    """Two workers, one pool for the whole run, each step a job of its own (bench.pipeline.scheduler): the
    same networks and numbers as one process running everything in turn."""
    with closing(LocalExecutor(workers=2, progress=False)) as executor:
        path = run(small_config(), tmp_path, progress=False, executor=executor)
    assert cells(path) == cells(sequential_result)


@pytest.mark.slow
def test_ray_executor_matches_local(sequential_result, tmp_path):
    pytest.importorskip("ray")
    executor = RayExecutor(num_cpus=2, progress=False)
    try:
        path = run(small_config(), tmp_path, progress=False, executor=executor)
    finally:
        executor.close()
    assert cells(path) == cells(sequential_result)


@pytest.mark.slow
def test_bf16_evaluation_runs_under_autocast_and_agrees_with_fp32(digits, digits_cnn):
    from bench.pipeline.specs import eval_spec, spec_key
    from bench.pipeline.training import correct_predictions

    dtypes = []
    handle = digits_cnn.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    fp32 = correct_predictions(digits_cnn, digits, digits.test)
    bf16 = correct_predictions(digits_cnn, digits, digits.test, precision="bf16")
    handle.remove()
    assert dtypes[0] == torch.float32 and dtypes[-1] == torch.bfloat16
    assert (fp32 == bf16).float().mean() > 0.97  # same network, rounding flips only borderline images
    config = small_config()
    bf16_config = config.model_copy(update={"precision": "bf16"})
    assert spec_key(eval_spec("net", "set", config)) != spec_key(eval_spec("net", "set", bf16_config))


def test_distinct_labels_never_share_a_network_file_name():
    from bench.pipeline.specs import NetworkRef

    labels = ["pfp:failure_probability=1e-5", "pfp_failure_probability_1e-5", "pfp:failure_probability_1e-5",
              "pfp;failure_probability=1e-5", "wt"]
    names = {NetworkRef(kind="steps", key="k", pruner=label, step=2).file_name for label in labels}
    assert len(names) == len(labels)
    assert NetworkRef(kind="steps", key="k", pruner="wt", step=3).file_name == "wt-3.safetensors"
    assert NetworkRef(kind="steps", key="k", pruner="pfp_failure_probability_1e-5", step=1).file_name == (
        "pfp_failure_probability_1e-5-1.safetensors")

"""`bench plan`: exact job counts, the cache state after a run, and a positive, finite estimate."""

import math
import os

import pytest

from bench.cli import main
from bench.data.recipes import DIGITS_TRAIN
from bench.pipeline.plan import Plan, format_plan, plan
from bench.pipeline.runner import run
from bench.results.schema import RunConfig

PRUNERS, RATIOS = ("wt", "ft"), (0.5, 0.8)
TEST_SETS = 1 + 8  # clean + the noise suite's 4 uniform and 4 Gaussian levels


def tiny_config() -> RunConfig:
    recipe = DIGITS_TRAIN.model_copy(update={"epochs": 1})
    return RunConfig(dataset="digits", model="digits_cnn", pruners=PRUNERS, suites=("noise",), target_ratios=RATIOS,
                     train=recipe, retrain=recipe, seed=0, calibration_size=16)


def counts(result: Plan) -> dict[str, tuple[int, int]]:
    return {stage.name: (stage.jobs, stage.cached) for stage in result.stages}


@pytest.fixture(scope="module")
def planned_then_run(tmp_path_factory) -> tuple[Plan, Plan]:
    out = tmp_path_factory.mktemp("plan")
    before = plan(tiny_config(), out)
    run(tiny_config(), out, progress=False)
    return before, plan(tiny_config(), out)


@pytest.mark.slow
def test_counts_are_exact_and_nothing_is_cached_before_the_run(planned_then_run):
    before, _ = planned_then_run
    steps = len(PRUNERS) * len(RATIOS)
    assert counts(before) == {"parent": (1, 0), "cascade steps": (steps, 0), "evaluations": ((1 + steps) * TEST_SETS, 0)}
    assert before.test_sets == TEST_SETS
    assert all(stage.seconds > 0 for stage in before.stages)


@pytest.mark.slow
def test_the_estimate_is_positive_and_finite(planned_then_run):
    before, _ = planned_then_run
    assert 0 < before.remaining_s < before.total_s and math.isfinite(before.total_s)
    assert before.calibration.train_step_s > 0 and before.calibration.eval_image_s > 0


@pytest.mark.slow
def test_after_the_run_everything_is_cached_and_nothing_remains(planned_then_run):
    before, after = planned_then_run
    assert counts(after) == {name: (jobs, jobs) for name, (jobs, _) in counts(before).items()}
    assert after.remaining_s == 0
    assert "0 s of it for the 0 jobs not cached" in format_plan(after)


@pytest.mark.slow
def test_the_cli_prints_the_table_and_the_total(tmp_path, capsys):
    args = ["--pruner", "wt", "--suite", "noise", "--ratios", "0.5", "--epochs", "1", "--retrain-epochs", "1",
            "--out", str(tmp_path)]
    assert main(["plan", *args]) == 0
    printed = capsys.readouterr().out
    assert "| stage" in printed and "| jobs" in printed and "| cached" in printed
    assert "evaluations (2 networks x 9 test sets)" in printed
    assert "estimated " in printed and "on cpu (1 thread)" in printed
    assert not tmp_path.joinpath(".cache").exists(), "bench plan wrote to the cache"
    assert main(["run", "--dry-run", *args]) == 0  # the alias prints the same plan
    assert "| stage" in capsys.readouterr().out


def test_missing_data_is_the_usual_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_DATA", str(tmp_path / "nothing-here"))
    assert main(["plan", "--suite", "cifar10c", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("bench plan: error: ") and "\n" not in error


@pytest.mark.slow
def test_workers_share_the_cascades_and_the_evaluations_not_the_parent(tmp_path, monkeypatch):
    import bench.pipeline.plan as planning

    fixed = planning.Calibration(train_step_s=0.01, train_batch=64, eval_image_s=1e-4, device="cpu", threads=1)
    monkeypatch.setattr(planning, "calibrate", lambda *args: fixed)
    alone, pair, many = (plan(tiny_config(), tmp_path, workers=k) for k in (1, 2, 8))
    seconds = {k: {s.name: s.seconds for s in p.stages} for k, p in ((1, alone), (2, pair), (8, many))}
    assert seconds[2]["parent"] == seconds[1]["parent"] == seconds[8]["parent"]
    assert seconds[2]["cascade steps"] == pytest.approx(seconds[1]["cascade steps"] / 2)
    assert seconds[8]["cascade steps"] == pytest.approx(seconds[1]["cascade steps"] / len(PRUNERS))  # one chain each
    assert seconds[8]["evaluations"] == pytest.approx(seconds[1]["evaluations"] / 8)


@pytest.mark.slow
def test_more_workers_overlap_the_test_sets_and_never_beat_the_longest_chain(tmp_path, monkeypatch):
    import bench.pipeline.plan as planning

    fixed = planning.Calibration(train_step_s=0.01, train_batch=64, eval_image_s=1e-4, device="cpu", threads=1)
    monkeypatch.setattr(planning, "calibrate", lambda *args: fixed)
    alone, pair = (plan(tiny_config(), tmp_path, workers=k) for k in (1, 2))
    assert alone.total_s == pytest.approx(alone.load_s + alone.testsets_s + alone.work_s)
    assert pair.work_s == pytest.approx(alone.work_s)  # the same jobs, spread
    assert pair.critical_s <= pair.remaining_s < alone.remaining_s
    assert pair.total_s < alone.total_s and pair.total_s >= pair.load_s + pair.testsets_s


@pytest.mark.slow
def test_busy_cores_are_measured_and_named(tmp_path, monkeypatch):
    import bench.pipeline.plan as planning

    measured = planning.busy_cores(0.2)
    assert measured is None or 0 <= measured <= (os.cpu_count() or 1) + 1e-9
    monkeypatch.setattr(planning, "busy_cores", lambda *args: (os.cpu_count() or 1) - 0.5)
    crowded = plan(tiny_config(), tmp_path, workers=2)
    assert crowded.free_cores == pytest.approx(0.5)
    assert "other processes keep" in format_plan(crowded) and "expect the run to take longer" in format_plan(crowded)

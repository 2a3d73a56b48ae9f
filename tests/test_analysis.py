"""Functional similarity under noise and informative features, on a small real run."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.analysis import (
    CONTROL,
    CONTROL_KIND,
    NOISE_MODEL,
    AnalysisNetwork,
    RunNetworks,
    SimilarityReport,
    control_spec,
    features_analysis,
    features_table,
    functional_similarity,
    informative_features,
    load_report,
    load_run_networks,
    report_path,
    save_features_plot,
    save_similarity_plot,
    similarity_analysis,
    similarity_table,
)
from bench.cli import main
from bench.data.recipes import DIGITS_TRAIN
from bench.pipeline.jobs import job_environment
from bench.pipeline.runner import run
from bench.pipeline.specs import spec_key
from bench.results import find_result_files, load_result
from bench.results.metrics import derive
from bench.results.schema import PARENT, RunConfig

EPSILONS = (0.0, 0.15, 0.3)
MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-"}


@pytest.fixture(scope="module")
def result_path(tmp_path_factory) -> Path:
    # NCHW and one thread: on a busy 2-core machine, channels_last BatchNorm training and two
    # OpenMP threads each slow training down ~10x. The parent is trained long enough that the
    # one-epoch retrain does not leave a pruned network better trained than its parent.
    recipe = DIGITS_TRAIN.model_copy(update={"epochs": 8, "batch_size": 32, "lr": 1e-2})
    config = RunConfig(
        dataset="digits", model="digits_cnn", pruners=("wt",), target_ratios=(0.5, 0.9), train=recipe,
        retrain=recipe.model_copy(update={"epochs": 1, "lr": 1e-3}), seed=0, calibration_size=64,
        channels_last=False, threads=1,
    )
    return run(config, tmp_path_factory.mktemp("analysis"), progress=False)


@pytest.fixture(scope="module")
def networks(result_path) -> RunNetworks:
    return load_run_networks(result_path)


def small_test(networks: RunNetworks, n: int):
    return networks.data.test.subset(torch.arange(n))


def similarity(networks: RunNetworks, nets, images, **kwargs):
    with job_environment(networks.result.config):  # its thread count: 2 threads crawl on a busy 2-core machine
        return functional_similarity(nets, networks.data, images, **kwargs)


@pytest.mark.slow
def test_networks_are_parent_steps_and_a_cached_control(result_path, networks):
    assert [(n.pruner, n.step) for n in networks.networks] == [(PARENT, 0), ("wt", 1), ("wt", 2), (CONTROL, 0)]
    result = networks.result
    key = spec_key(control_spec(result.config, networks.data.checksum))
    store_file = result_path.parent / ".cache" / CONTROL_KIND / f"{key}.safetensors"
    stamp = store_file.stat().st_mtime_ns
    again = load_run_networks(load_result(result_path), result_path.parent / ".cache")
    assert store_file.stat().st_mtime_ns == stamp, "the control was retrained instead of read from the store"
    for a, b in zip(networks.networks[-1].model.state_dict().values(), again.networks[-1].model.state_dict().values()):
        assert torch.equal(a, b)
    parent, control = networks.networks[0].model, networks.networks[-1].model
    assert not torch.equal(next(parent.parameters()), next(control.parameters()))
    with pytest.raises(ValueError, match="cache folder"):
        load_run_networks(result)


@pytest.mark.slow
def test_parent_agrees_with_itself_at_every_epsilon(networks):
    parent = networks.networks[0]
    twin = AnalysisNetwork("parent copy", "copy", 0, 0.0, copy.deepcopy(parent.model))
    report = similarity(networks, [parent, twin], small_test(networks, 64), epsilons=EPSILONS, draws=2)
    for name in ("parent", "parent copy"):
        for eps in EPSILONS:
            cell = report.cell(name, eps)
            assert cell.agreement == 1.0
            assert cell.softmax_l2 == 0.0
    assert report.cell("parent", 0.3).accuracy < report.cell("parent", 0.0).accuracy


@pytest.mark.slow
def test_similarity_of_a_heavily_pruned_network_falls_with_noise(result_path, networks, tmp_path):
    report = similarity_analysis(result_path, epsilons=EPSILONS, draws=3, n_images=150)
    assert report.noise == NOISE_MODEL and report.draws == 3 and report.n_images == 150
    assert report.networks == [n.label for n in networks.networks]
    heavy = networks.networks[2].label  # wt at 90 %
    clean, noisy = report.cell(heavy, 0.0), report.cell(heavy, 0.3)
    assert noisy.agreement < clean.agreement
    assert noisy.softmax_l2 > clean.softmax_l2
    for cell in report.cells:
        assert 0.0 <= cell.agreement <= 1.0 and 0.0 <= cell.accuracy <= 1.0 and 0.0 <= cell.softmax_l2 <= 2**0.5
    assert [(p.pruner, p.epsilon) for p in report.potentials] == [("wt", e) for e in EPSILONS]
    table = similarity_table(report)
    assert "Label agreement" in table and heavy in table
    for path in save_similarity_plot(report, tmp_path / "similarity"):
        assert path.read_bytes().startswith(MAGIC[path.suffix])


@pytest.mark.slow
def test_noiseless_pass_reproduces_the_result_files_accuracies(result_path, networks):
    report = similarity_analysis(result_path, epsilons=(0.0,), control=False)
    result = networks.result
    assert report.n_images == result.nominal.n_examples
    for net in result.networks:
        (cell,) = [c for c in report.cells if (c.pruner, c.step) == (net.pruner, net.step)]
        assert cell.accuracy == pytest.approx(net.accuracy[result.nominal.name], abs=1e-12)
    assert report.potentials[0].potential == derive(result.distributions, result.networks, result.config.delta).pruners[0].nominal_potential


@pytest.mark.slow
def test_similarity_is_deterministic_and_independent_of_batch_size(networks):
    test = small_test(networks, 80)
    args = {"epsilons": (0.0, 0.2), "draws": 2}
    first = similarity(networks, networks.networks[:3], test, seed=5, batch_size=32, **args)
    second = similarity(networks, networks.networks[:3], test, seed=5, batch_size=32, **args)
    assert first == second
    rebatched = similarity(networks, networks.networks[:3], test, seed=5, batch_size=80, **args)
    for a, b in zip(first.cells, rebatched.cells):
        assert (a.agreement, a.accuracy) == (b.agreement, b.accuracy)
        assert a.softmax_l2 == pytest.approx(b.softmax_l2, abs=1e-6)
    other = similarity(networks, networks.networks[:3], test, seed=6, batch_size=32, **args)
    noisy = [c.softmax_l2 for c in first.cells if c.epsilon > 0]
    assert noisy != [c.softmax_l2 for c in other.cells if c.epsilon > 0]


@pytest.mark.slow
def test_analyze_saves_its_reports_and_bench_plot_plots_them(result_path, capsys, tmp_path):
    assert main(["analyze", "similarity", str(result_path), "--images", "40", "--draws", "1"]) == 0
    saved = report_path(result_path, "similarity")
    assert saved == result_path.parent / "analysis" / f"{result_path.stem}.similarity.json"
    assert f"wrote {saved}" in capsys.readouterr().err
    report = load_report(saved)
    assert isinstance(report, SimilarityReport)
    assert report == similarity_analysis(result_path, draws=1, n_images=40)  # deterministic, validated round trip
    assert report.networks[-1] == CONTROL and report.n_images == 40 and report.draws == 1
    assert find_result_files(result_path.parent) == [result_path]  # not taken for a result file

    other = tmp_path / "elsewhere.json"
    assert main(["analyze", "similarity", str(result_path), "--images", "8", "--draws", "1", "--json", str(other)]) == 0
    assert load_report(other).n_images == 8 and load_report(saved) == report
    assert main(["analyze", "features", str(result_path), "--images", "10"]) == 0
    assert load_report(report_path(result_path, "features")).n_images == 10
    capsys.readouterr()

    assert main(["plot", str(result_path.parent), "-o", str(tmp_path / "plots")]) == 0
    written = {Path(p).name for p in capsys.readouterr().out.split()}
    for suffix in (".png", ".pdf"):
        assert f"{result_path.stem}.similarity{suffix}" in written
        assert f"{result_path.stem}.features{suffix}" in written
        assert (tmp_path / "plots" / f"{result_path.stem}.similarity{suffix}").read_bytes().startswith(MAGIC[suffix])
        assert any(name.endswith(f"-potential{suffix}") for name in written)


@pytest.mark.slow
def test_own_pixels_maximise_own_confidence(result_path, networks, tmp_path):
    report = features_analysis(result_path, n_images=60)
    n = len(networks.networks)
    matrix = np.array(report.matrix)
    assert matrix.shape == (n, n) and report.n_images == 60 and report.kept_pixels == 102
    assert ((0.0 <= matrix) & (matrix <= 1.0)).all()
    # By construction (multistart; selection and matrix share their forward passes), for every
    # network: no other network's pixels inform it more than its own.
    for e in range(n):
        assert matrix[e, e] == matrix[:, e].max(), f"column {e}: another mask informs {report.networks[e]} more"
    # The parent's row compares different networks' confidences, which no pixel search can order
    # (see bench.analysis). Over 15 briefly trained seeds the parent beat the 90 %-pruned network
    # and the control on its own pixels by >= 37 points every time, the 50 %-pruned one (nearly the
    # parent, retrained once more) only in 11 of 15.
    parent, heavy, control = matrix[0, 0], matrix[0, 2], matrix[0, n - 1]
    assert parent > heavy + 0.2 and parent > control + 0.2, "row: the parent's pixels inform it most"
    # Whether the parent's own pixels also inform it more than the 50 % network's do is the seed's
    # luck (11 of 15 above): this fixture held it by 2.4 points until the exact channel statistics
    # moved the normalisation by one float32 ulp, and now loses it by 13. So it is not asserted.
    assert report.multistart and len(report.adopted) == n and 0 < max(report.adopted) < 1
    assert "pixels of" in features_table(report)
    with job_environment(networks.result.config):
        one_shot = informative_features(networks.networks[:2], networks.data, small_test(networks, 16),
                                        saliency="gradient", multistart=False)
    assert np.array(one_shot.matrix).shape == (2, 2) and one_shot.saliency == "gradient"
    assert one_shot.adopted == [0.0, 0.0]
    for path in save_features_plot(report, tmp_path / "features"):
        assert path.read_bytes().startswith(MAGIC[path.suffix])

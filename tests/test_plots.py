import json
from pathlib import Path

import numpy as np
import pytest
from test_uncertainty import GAP, NO_GAP, make_run

from bench.analysis import (
    CONTROL,
    FeatureReport,
    ReportFileError,
    SimilarityCell,
    SimilarityReport,
    load_report,
    load_reports,
    noise_potentials,
    report_path,
    save_report,
    similarity_figure,
)
from bench.cli import main
from bench.metrics import derive
from bench.plots import excess_error_figure, make_plots, regression_slope
from bench.results import find_result_files, save_result
from bench.schema import PARENT
from leaderboard.build import build_leaderboard, validate_files

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-"}


def test_slope_through_the_origin_is_the_closed_form():
    x = np.array([0.5, 0.8, 0.9, 0.95])
    y = np.array([0.01, 0.04, 0.07, 0.12])
    assert regression_slope(x, y) == pytest.approx(float((x * y).sum() / (x * x).sum()), rel=1e-12)
    assert regression_slope([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(2.0)
    # no intercept: a shifted line does not keep its slope
    assert regression_slope([1.0, 2.0], [2.0, 3.0]) == pytest.approx(8 / 5)
    with pytest.raises(ValueError, match="nonzero x"):
        regression_slope([0.0, 0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="2 x values but 3 y values"):
        regression_slope([1.0, 2.0], [1.0, 2.0, 3.0])


def test_excess_error_legend_reports_each_pruners_slope():
    runs = [make_run({"wt": GAP["wt"], "ft": NO_GAP["wt"]}, seed=s) for s in range(2)]
    fig = excess_error_figure(runs)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    for pruner in ("wt", "ft"):
        x, y = [], []
        for run in runs:
            (m,) = [m for m in derive(run.distributions, run.networks, run.config.delta).pruners if m.pruner == pruner]
            x += [n.prune_ratio for n in run.networks if n.pruner == pruner]
            y += m.delta_excess_error
        expected = np.dot(x, y) / np.dot(x, x)
        assert f"{pruner} (slope {expected:.3f})" in labels


def test_make_plots_writes_valid_png_and_pdf_per_protocol(tmp_path):
    hostile = "$\\frac{x|_name\n"  # mathtext and a leading underscore once flattened must not break rendering
    runs = [make_run({"wt": GAP["wt"], hostile: NO_GAP["wt"]}, seed=s) for s in range(2)]
    other_protocol = make_run({"wt": GAP["wt"]}, ratios=(0.5, 0.7, 0.9))
    paths = make_plots([*runs, other_protocol], tmp_path / "plots")

    assert len(paths) == len(set(paths)) == 2 * 3 * 2  # protocols x figures x formats
    for path in paths:
        assert path.parent == tmp_path / "plots" and path.stat().st_size > 1000
        assert path.read_bytes().startswith(MAGIC[path.suffix])
    names = sorted(p.name for p in paths)
    assert names[0].startswith("digits-digits_cnn-noise-") and names[0].endswith("-accuracy.pdf")
    assert {p.name.rsplit("-", 1)[-1] for p in paths} == {"accuracy.png", "accuracy.pdf", "potential.png",
                                                          "potential.pdf", "error.png", "error.pdf"}


NETWORKS = [("parent", PARENT, 0.0), ("wt 50.0%", "wt", 0.5), ("wt 90.0%", "wt", 0.9), ("control", CONTROL, 0.0)]


def similarity_report(config_hash: str = "abc") -> SimilarityReport:
    epsilons = (0.0, 0.1, 0.2)
    cells = [
        SimilarityCell(network=name, pruner=pruner, step=int(ratio > 0) + int(ratio > 0.5), prune_ratio=ratio,
                       epsilon=eps, agreement=1.0 - ratio * eps, softmax_l2=ratio * eps, accuracy=0.9 - ratio * eps)
        for eps in epsilons
        for name, pruner, ratio in NETWORKS
    ]
    return SimilarityReport(config_hash=config_hash, epsilons=epsilons, draws=2, n_images=10, seed=0, delta=0.005,
                            networks=[n for n, _, _ in NETWORKS], cells=cells, potentials=noise_potentials(cells, 0.005))


def features_report() -> FeatureReport:
    n = len(NETWORKS)
    matrix = (0.2 + 0.6 * np.eye(n)).tolist()
    return FeatureReport(
        config_hash="abc", networks=[n for n, _, _ in NETWORKS], pruners=[p for _, p, _ in NETWORKS],
        prune_ratios=[r for _, _, r in NETWORKS], saliency="backward", target="true", multistart=True,
        keep_fraction=0.1, kept_pixels=102, n_images=10, full_confidence=[0.9] * n, adopted=[0.1] * n, matrix=matrix,
    )


def test_similarity_figure_has_one_line_per_network_including_the_control():
    report = similarity_report()
    agreement, distance, _ = similarity_figure(report).axes
    for ax in (agreement, distance):
        assert [line.get_label() for line in ax.get_lines()] == report.networks
        assert all(len(line.get_xdata()) == len(report.epsilons) for line in ax.get_lines())
    assert list(distance.get_lines()[1].get_ydata()) == [c.softmax_l2 for c in report.cells if c.network == "wt 50.0%"]


def test_reports_are_validated_when_read(tmp_path):
    report = similarity_report()
    path = save_report(report, tmp_path / "analysis" / "run.similarity.json")
    assert load_report(path) == report and not list(path.parent.glob(".*"))  # no temporary file left
    features = features_report()
    assert load_report(save_report(features, tmp_path / "run.features.json")) == features
    broken = features.model_dump(mode="json")
    broken["matrix"] = broken["matrix"][:-1]
    (tmp_path / "bad.features.json").write_text(json.dumps(broken))
    with pytest.raises(ReportFileError, match="4x4 matrix"):
        load_report(tmp_path / "bad.features.json")
    missing = report.model_dump(mode="json")
    missing["cells"] = missing["cells"][1:]
    (tmp_path / "bad.similarity.json").write_text(json.dumps(missing))
    with pytest.raises(ReportFileError, match="one \\(network, ε\\) pair"):
        load_report(tmp_path / "bad.similarity.json")
    (tmp_path / "x.similarity.json").write_text("{")
    with pytest.raises(ReportFileError, match="not valid JSON"):
        load_report(tmp_path / "x.similarity.json")


def test_plot_command_plots_result_files_and_analysis_reports(tmp_path, capsys):
    results = tmp_path / "results"
    run = make_run({"wt": GAP["wt"]})
    result = save_result(run, results / "digits-digits_cnn-s0-abc.json")
    save_report(similarity_report(run.provenance.config_hash), report_path(result, "similarity"))
    save_report(features_report(), report_path(result, "features"))
    assert report_path(result, "similarity") == results / "analysis" / "digits-digits_cnn-s0-abc.similarity.json"

    # reports are not result files: the leaderboard, `bench plot` and `bench validate results/*.json` skip them
    assert find_result_files(results) == [result]
    assert sorted(p.name for p in results.glob("*.json")) == [result.name]
    assert validate_files(find_result_files(results)) == []
    assert "wt" in build_leaderboard(results, breakdown=False)
    assert list(load_reports(results)) == ["digits-digits_cnn-s0-abc.features", "digits-digits_cnn-s0-abc.similarity"]

    assert main(["plot", str(results), "-o", str(tmp_path / "plots")]) == 0
    written = [Path(p) for p in capsys.readouterr().out.split()]
    names = {p.name for p in written}
    for suffix in (".png", ".pdf"):
        assert f"digits-digits_cnn-s0-abc.similarity{suffix}" in names
        assert f"digits-digits_cnn-s0-abc.features{suffix}" in names
        assert any(n.endswith(f"-accuracy{suffix}") for n in names)  # the result file's plots as before
    assert len(written) == 2 * (3 + 2)
    for path in written:
        assert path.stat().st_size > 1000 and path.read_bytes().startswith(MAGIC[path.suffix])

    only_reports = tmp_path / "only-reports"
    save_report(similarity_report(), only_reports / "a.similarity.json")
    assert main(["plot", str(only_reports), "-o", str(tmp_path / "plots2")]) == 0
    assert sorted(Path(p).name for p in capsys.readouterr().out.split()) == ["a.similarity.pdf", "a.similarity.png"]
    (only_reports / "b.similarity.json").write_text('{"analysis": "similarity"}')
    assert main(["plot", str(only_reports), "-o", str(tmp_path / "plots2")]) == 2
    assert "b.similarity.json: not a valid similarity report" in capsys.readouterr().err

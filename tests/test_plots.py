import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import FillBetweenPolyCollection
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
    report_figure,
    report_path,
    save_report,
    similarity_figure,
)
from bench.cli import main
from bench.corruptions import CORRUPTIONS, FAMILIES
from bench.reports.figures import OKABE_ITO, PNG_DPI
from bench.reports.plots import (
    ACCURACY_FLOOR_PP,
    excess_error_figure,
    make_plots,
    potential_figure,
    regression_slope,
    result_figures,
)
from bench.results import find_result_files, load_results, save_result
from bench.results.metrics import derive
from bench.results.schema import PARENT, RunResult
from bench.results.uncertainty import bootstrap_pruners
from leaderboard.build import build_leaderboard

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


def test_excess_error_keeps_networks_above_the_accuracy_floor_and_fits_each_pruner_through_the_origin():
    # "collapse" loses 40 of 400 clean images (10 pp) at its last step: below the default 5 pp floor
    collapse = {"clean": [0, 2, 40], "shifted": [0, 10, 10]}
    runs = [make_run({"wt": GAP["wt"], "collapse": collapse}, seed=s) for s in range(2)]
    fig = excess_error_figure(runs)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "within 5 pp of their parent's nominal accuracy" in ax.get_title() and ACCURACY_FLOOR_PP == 5
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("prune ratio (%)", "Δ excess error (pp)")
    for pruner, floor_pp, kept in (("wt", 5, 3), ("collapse", 5, 2), ("collapse", 20, 3)):
        x, y = [], []
        for run in runs:
            (m,) = [m for m in derive(run.distributions, run.networks, run.config.delta).pruners if m.pruner == pruner]
            steps = [n for n in run.networks if n.pruner == pruner]
            x += [n.prune_ratio for n in steps][:kept]
            y += m.delta_excess_error[:kept]
        expected = np.dot(x, y) / np.dot(x, x)
        found = [t.get_text() for t in excess_error_figure(runs, floor_pp=floor_pp).axes[0].get_legend().get_texts()]
        assert f"{pruner} (slope {expected:.3f}, {2 * kept} of 6 networks)" in found
    assert labels[-1] == "least squares through the origin"
    markers = [line for line in ax.get_lines() if line.get_linestyle() == "None"]
    assert sorted(len(line.get_xdata()) for line in markers) == [4, 6]  # one point per kept network


def two_family_runs(seeds: int = 2, ft: dict[str, list[int]] | None = None) -> list[RunResult]:
    """Seeds of a suite "c" with two noise corruptions at severities 1 and 2 and one blur at 1;
    "copy" keeps every image of the parent."""
    shifted = [("c/gaussian_noise/1", "gaussian_noise", 1), ("c/shot_noise/1", "shot_noise", 1),
               ("c/gaussian_noise/2", "gaussian_noise", 2), ("c/shot_noise/2", "shot_noise", 2),
               ("c/defocus_blur/1", "defocus_blur", 1)]
    lost = {"wt": {"clean": [0, 0, 0], "shifted": [0, 40, 40]},
            "ft": ft or {"clean": [0, 2, 40], "shifted": [4, 60, 90]},
            "copy": {"clean": [0, 0, 0], "shifted": [0, 0, 0]}}
    return [make_run(lost, seed=s, shifted=shifted, suite="c") for s in range(seeds)]


def test_families_are_imagenet_c_categories():
    imagenet_c = {  # Hendrycks & Dietterich 2019, the 15 benchmark corruptions by category
        "noise": {"gaussian_noise", "shot_noise", "impulse_noise"},
        "blur": {"defocus_blur", "glass_blur", "motion_blur", "zoom_blur"},
        "weather": {"snow", "frost", "fog", "brightness"},
        "digital": {"contrast", "elastic_transform", "pixelate", "jpeg_compression"},
    }
    assert all(FAMILIES[name] == family for family, names in imagenet_c.items() for name in names)
    assert set(FAMILIES) == set(CORRUPTIONS)


@pytest.mark.slow
def test_accuracy_figure_per_family_with_the_parent_at_zero_every_severity_and_bootstrap_bands():
    runs = two_family_runs()
    figures = result_figures(runs)
    assert list(figures) == ["accuracy-blur", "accuracy-noise", "potential", "excess-error"]
    fig = figures["accuracy-noise"]
    assert fig._suptitle.get_text() == "Accuracy vs prune ratio: noise corruptions, every severity"
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["c, severity 1 (2 test sets)", "c, severity 2 (2 test sets)"]
    assert [ax.get_xlabel() for ax in axes] == ["prune ratio (%)"] * 2 and axes[0].get_ylabel() == "accuracy (%)"
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["copy", "ft", "wt", "parent", "95 % bootstrap band"]
    assert "95 % bias-corrected percentile (BC) bootstrap intervals over test images and seeds (1000 resamples)" in " ".join(legend.get_title().get_text().split())  # wrapped to fit
    for ax, severity in zip(axes, (1, 2)):
        names = [f"c/gaussian_noise/{severity}", f"c/shot_noise/{severity}"]
        parent = np.mean([np.mean([r.parent.accuracy[n] for n in names]) for r in runs])
        lines = {line.get_label(): line for line in ax.get_lines()}
        for pruner in ("copy", "ft", "wt"):
            x, y = lines[pruner].get_xdata(), lines[pruner].get_ydata()
            steps = [[n for n in r.networks if n.pruner == pruner] for r in runs]
            last = np.mean([np.mean([s[-1].accuracy[n] for n in names]) for s in steps])
            assert x[0] == 0 and y[0] == pytest.approx(100 * parent) and len(x) == 4  # the parent, then 3 steps
            assert y[-1] == pytest.approx(100 * last) and x[-1] == pytest.approx(90)
        parent_point = ax.containers[0]  # errorbar: the parent at ratio 0 with its interval
        ((px, py),) = parent_point.lines[0].get_xydata()
        assert (px, py) == (0, pytest.approx(100 * parent)) and parent_point.has_yerr
        assert len([c for c in ax.collections if isinstance(c, FillBetweenPolyCollection)]) == 3  # a band per pruner
    # paired resampling: "copy" keeps every image of the parent, so its band at each step is the parent's
    copy_band, parent_band = axes[0].collections[0], axes[0].containers[0]
    copy_vertices = copy_band.get_paths()[0].vertices
    low, high = copy_vertices[:, 1].min(), copy_vertices[:, 1].max()
    (bar,) = parent_band.lines[2]
    assert bar.get_segments()[0][:, 1].tolist() == pytest.approx([low, high])

    one = result_figures(runs, severity=2)
    assert list(one) == ["accuracy-noise", "potential", "excess-error"]  # defocus_blur has no severity 2
    assert " ".join(one["accuracy-noise"]._suptitle.get_text().split()).endswith("noise corruptions, severity 2")
    assert [ax.get_title() for ax in one["accuracy-noise"].axes if ax.get_visible()] == ["c, severity 2 (2 test sets)"]


def test_a_single_seed_band_has_the_binomial_width_of_the_test_set():
    (fig,) = [f for name, f in result_figures(two_family_runs(seeds=1)).items() if name == "accuracy-blur"]
    parent = fig.axes[0].containers[0]
    (bar,) = parent.lines[2]
    low, high = bar.get_segments()[0][:, 1]
    binomial = 100 * 2 * 1.96 * np.sqrt(0.9 * 0.1 / 400)  # parent: 360 of 400 images right
    assert 0.8 * binomial < high - low < 1.2 * binomial


def test_potential_heatmap_prints_every_cell_with_the_leaderboards_intervals():
    runs = two_family_runs(ft={"clean": [40, 40, 40], "shifted": [40, 40, 40]})  # ft fails at every ratio
    (ax, colorbar) = potential_figure(runs).axes
    columns = ["nominal", "robust mean", "gaussian_noise", "shot_noise", "defocus_blur"]
    assert [t.get_text() for t in ax.get_xticklabels()] == columns
    assert [t.get_text() for t in ax.get_yticklabels()] == ["copy", "ft", "wt"]
    assert colorbar.get_ylabel() == "prune potential P (%)"
    assert ax.get_title() == "P(δ = 0.5 %, D) per pruner and test distribution"
    assert "mean over severities" in ax.get_xlabel() and "95 % bias-corrected percentile (BC) bootstrap" in ax.get_xlabel()
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert len(cells) == 3 * 5
    derived = {r.config.seed: {m.pruner: m for m in derive(r.distributions, r.networks, 0.005).pruners} for r in runs}
    intervals = bootstrap_pruners(runs)
    for i, pruner in enumerate(["copy", "ft", "wt"]):
        found = [derived[s][pruner] for s in (0, 1)]
        by_corruption = {c: np.mean([np.mean([v for k, v in m.potential_by_distribution.items() if f"/{c}/" in k])
                                     for m in found]) for c in columns[2:]}
        expected = [np.mean([m.nominal_potential for m in found]), np.mean([m.robust_potential_mean for m in found]),
                    *by_corruption.values()]
        assert [cells[i, j].split("\n")[0] for j in range(5)] == [f"{100 * v:.0f}" for v in expected]
        nominal, robust = intervals[pruner].nominal, intervals[pruner].robust_mean
        assert cells[i, 0].split("\n")[1] == f"[{100 * nominal.low:.0f}, {100 * nominal.high:.0f}]"
        assert cells[i, 1].split("\n")[1] == f"[{100 * robust.low:.0f}, {100 * robust.high:.0f}]"
    assert cells[1, 0].startswith("0\n") and cells[1, 2] == "0"  # P = 0 is printed, not hidden


@pytest.mark.slow
def test_each_pruner_has_one_okabe_ito_colour_in_every_figure():
    figures = result_figures(two_family_runs())
    colours = {}
    for name in ("accuracy-noise", "accuracy-blur", "excess-error"):
        for ax in figures[name].axes:
            for line in ax.get_lines():
                pruner = line.get_label().split(" ")[0]
                if pruner in ("copy", "ft", "wt"):
                    colours.setdefault(pruner, set()).add(line.get_color())
    assert all(len(c) == 1 for c in colours.values()) and len(colours) == 3
    assert {c for (c,) in colours.values()} <= set(OKABE_ITO)
    assert len({c for (c,) in colours.values()}) == 3


@pytest.mark.slow
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
    assert names[0].startswith("digits-digits_cnn-noise-") and names[0].endswith("-accuracy-noise.pdf")
    assert {p.name.rsplit("-", 1)[-1] for p in paths} == {"noise.png", "noise.pdf", "potential.png",
                                                          "potential.pdf", "error.png", "error.pdf"}
    for png in (p for p in paths if p.suffix == ".png"):
        assert png_dpi(png) == pytest.approx(PNG_DPI, abs=0.01) and PNG_DPI >= 200


def png_dpi(path: Path) -> float:
    """Resolution from the PNG's pHYs chunk (pixels per metre)."""
    data = path.read_bytes()
    start = data.index(b"pHYs") + 4
    assert data[start + 8] == 1  # unit: metre
    return int.from_bytes(data[start : start + 4], "big") * 0.0254


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


@pytest.mark.slow
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
    assert load_results(find_result_files(results)).errors == []
    assert "wt" in build_leaderboard(results, breakdown=False)
    assert list(load_reports(results)) == ["digits-digits_cnn-s0-abc.features", "digits-digits_cnn-s0-abc.similarity"]

    assert main(["plot", str(results), "-o", str(tmp_path / "plots")]) == 0
    written = [Path(p) for p in capsys.readouterr().out.split()]
    names = {p.name for p in written}
    for suffix in (".png", ".pdf"):
        assert f"digits-digits_cnn-s0-abc.similarity{suffix}" in names
        assert f"digits-digits_cnn-s0-abc.features{suffix}" in names
        assert any(n.endswith(f"-accuracy-noise{suffix}") for n in names)  # the result file's plots as before
    assert len(written) == 2 * (3 + 2)
    for path in written:
        assert path.stat().st_size > 1000 and path.read_bytes().startswith(MAGIC[path.suffix])

    # the run has severities 1 and 2: at severity 3 there is no accuracy figure, the others remain
    assert main(["plot", str(results), "-o", str(tmp_path / "sev3"), "--severity", "3", "--accuracy-floor", "50"]) == 0
    names = {Path(p).name.rsplit("-", 1)[-1] for p in capsys.readouterr().out.split()}
    assert names == {"potential.png", "potential.pdf", "error.png", "error.pdf", "abc.similarity.png",
                     "abc.similarity.pdf", "abc.features.png", "abc.features.pdf"}

    only_reports = tmp_path / "only-reports"
    save_report(similarity_report(), only_reports / "a.similarity.json")
    assert main(["plot", str(only_reports), "-o", str(tmp_path / "plots2")]) == 0
    assert sorted(Path(p).name for p in capsys.readouterr().out.split()) == ["a.similarity.pdf", "a.similarity.png"]
    (only_reports / "b.similarity.json").write_text('{"analysis": "similarity"}')
    assert main(["plot", str(only_reports), "-o", str(tmp_path / "plots2")]) == 2
    assert "b.similarity.json: not a valid similarity report" in capsys.readouterr().err


def _figures_to_fit():
    """Every kind of figure, single panel and a 12-panel grid, with long names in it."""
    from bench.reports.plots import Panel, accuracy_figure, family_panels, resample_all

    runs = two_family_runs()
    draws = resample_all(runs)
    noise = family_panels(runs[0])["noise"]
    twelve = [Panel(f"{noise[0].suite}-suite-with-a-long-name", s, noise[0].names, noise[0].corruptions)
              for s in range(1, 13)]
    return {
        "accuracy, 1 panel": accuracy_figure(runs, "noise", noise[:1], draws, severity=1),
        "accuracy, 12 panels": accuracy_figure(runs, "noise", twelve, draws),
        "potential": potential_figure(runs),
        "excess error": excess_error_figure(runs),
        "similarity": similarity_figure(similarity_report()),
        "features": report_figure(features_report()),
    }


@pytest.mark.slow
def test_every_figure_keeps_its_text_inside_its_page():
    """Issue 23: no text artist past the figure's bounds (matplotlib's tight bbox), at 1 and at 12
    panels: titles, captions and legends are wrapped or narrowed to fit, never clipped."""
    for name, fig in _figures_to_fit().items():
        fig.draw_without_rendering()
        box = fig.get_tightbbox(fig.canvas.get_renderer())
        width, height = fig.get_size_inches()
        assert box.x0 >= -1e-3 and box.y0 >= -1e-3 and box.x1 <= width + 1e-3 and box.y1 <= height + 1e-3, (
            name, (box.x0, box.y0, box.x1, box.y1), (width, height))


def test_a_one_panel_figure_says_one_test_set_and_wraps_its_caption():
    from bench.reports.plots import Panel, accuracy_figure

    runs = two_family_runs()
    panel = Panel("c", 1, ("c/gaussian_noise/1",), ("gaussian_noise",))
    fig = accuracy_figure(runs, "noise", [panel])
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    assert ax.get_title() == "c, severity 1 (1 test set)"
    caption = fig.legends[0].get_title().get_text()
    assert "\n" in caption and "mean over 2 seeds" in " ".join(caption.split())

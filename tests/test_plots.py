import numpy as np
import pytest

from bench.metrics import derive
from bench.plots import excess_error_figure, make_plots, regression_slope
from test_uncertainty import GAP, NO_GAP, make_run

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

"""Analysis reports: the validated report models (`SimilarityReport`, `FeatureReport`), their
files (default `<result folder>/analysis/<result stem>.similarity.json` / `.features.json`,
atomic writes, validated reads) and their markdown tables."""

from __future__ import annotations

import json
from collections.abc import Sized
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from bench.core.io import atomic_write_text
from bench.reports.markdown import escape, table
from bench.results import ANALYSIS_REPORT_SUFFIXES
from bench.results.schema import PARENT, Strict

__all__ = [
    "MASK_VALUE",
    "NOISE_MODEL",
    "REPORTS_FOLDER",
    "REPORT_MODELS",
    "Analysis",
    "FeatureReport",
    "NoisePotential",
    "Report",
    "ReportFileError",
    "Saliency",
    "SimilarityCell",
    "SimilarityReport",
    "Target",
    "features_table",
    "find_report_files",
    "load_report",
    "load_reports",
    "report_path",
    "save_report",
    "similarity_table",
]

NOISE_MODEL = (
    "uniform U(-eps, eps) i.i.d. per pixel and channel, added in pixel space [0, 1] (uint8 / 255), "
    "clipped to [0, 1], not quantised, then standardised like every input"
)
MASK_VALUE = "0 in normalised space (the train split's mean colour), all channels of a pixel jointly"
Saliency = Literal["backward", "gradient"]
Target = Literal["true", "predicted"]  # the class whose confidence a network's pixel selection keeps
Analysis = Literal["similarity", "features"]
REPORTS_FOLDER = "analysis"  # default home of a run's reports, inside its result file's folder


# ---- report models ------------------------------------------------------------------------------


class SimilarityCell(Strict):
    network: str
    pruner: str
    step: int
    prune_ratio: float
    epsilon: float
    agreement: float  # fraction of (image, draw) pairs with the parent's top-1 on the same noisy input
    softmax_l2: float  # mean ‖softmax − parent's softmax‖₂ on the same noisy input
    accuracy: float


class NoisePotential(Strict):
    pruner: str
    epsilon: float
    potential: float


class SimilarityReport(Strict):
    analysis: Literal["similarity"] = "similarity"
    config_hash: str
    noise: str = NOISE_MODEL
    epsilons: tuple[float, ...]
    draws: int  # per image and ε > 0 (ε = 0 needs a single pass)
    n_images: int
    seed: int
    delta: float
    device: str = "cpu"  # the device type the networks ran on (reports written before say nothing: CPU)
    networks: list[str]
    cells: list[SimilarityCell]
    potentials: list[NoisePotential]

    def cell(self, network: str, epsilon: float) -> SimilarityCell:
        return next(c for c in self.cells if c.network == network and c.epsilon == epsilon)

    @model_validator(mode="after")
    def _consistent(self) -> SimilarityReport:
        grid = [(c.network, c.epsilon) for c in self.cells]
        if sorted(grid) != sorted((n, e) for n in self.networks for e in self.epsilons) or len(set(grid)) != len(grid):
            raise ValueError("cells must hold exactly one (network, ε) pair per network and ε")
        if not self.cells or self.cell(self.networks[0], self.epsilons[0]).pruner != PARENT:
            raise ValueError("the first network must be the unpruned parent")
        for c in self.cells:
            if not (0.0 <= c.agreement <= 1.0 and 0.0 <= c.accuracy <= 1.0 and 0.0 <= c.softmax_l2 <= 2**0.5 + 1e-9):
                raise ValueError(f"{c.network} at ε={c.epsilon}: agreement, accuracy or distance out of range")
        return self


class FeatureReport(Strict):
    analysis: Literal["features"] = "features"
    config_hash: str
    networks: list[str]
    pruners: list[str]
    prune_ratios: list[float]
    saliency: Saliency
    target: Target
    multistart: bool  # each network keeps, per image, the best of all networks' search results for itself
    keep_fraction: float
    kept_pixels: int  # per image
    device: str = "cpu"  # the device type the networks ran on (reports written before say nothing: CPU)
    mask_value: str = MASK_VALUE
    n_images: int
    full_confidence: list[float]  # per network: mean true-class softmax on the unmasked images
    adopted: list[float]  # per network: fraction of images whose mask is another network's search result
    matrix: list[list[float]]  # [pixel source][evaluated network]: mean true-class softmax

    @model_validator(mode="after")
    def _consistent(self) -> FeatureReport:
        n = len(self.networks)
        if n == 0 or self.pruners[0] != PARENT:
            raise ValueError("the first network must be the unpruned parent")
        per_network: tuple[Sized, ...] = (self.pruners, self.prune_ratios, self.full_confidence, self.adopted, *self.matrix)
        if len(self.matrix) != n or any(len(values) != n for values in per_network):
            raise ValueError(f"{n} networks need {n} pruners, ratios, confidences and an {n}x{n} matrix")
        values = [*self.full_confidence, *self.adopted, *(v for row in self.matrix for v in row)]
        if not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError("confidences and fractions must lie in [0, 1]")
        return self


Report = SimilarityReport | FeatureReport
REPORT_MODELS: dict[str, type[Report]] = {"similarity": SimilarityReport, "features": FeatureReport}


# ---- report files ---------------------------------------------------------------------------------


class ReportFileError(ValueError):
    """An analysis report that is not valid JSON or does not match its model."""


def report_path(result_path: Path, analysis: Analysis) -> Path:
    """Default report file of a result file: `<result folder>/analysis/<result stem>.<analysis>.json`.

    A subfolder, so that `bench validate results/*.json` never picks a report up; the suffix keeps
    `find_result_files` (leaderboard, `bench plot`) from taking it for a result file anywhere.
    """
    result_path = Path(result_path)
    return result_path.parent / REPORTS_FOLDER / f"{result_path.stem}.{analysis}.json"


def save_report(report: Report, path: Path) -> Path:
    """Atomic write (temporary file + rename) of the report's JSON."""
    path = Path(path)
    atomic_write_text(path, report.model_dump_json(indent=1) + "\n")
    return path


def load_report(path: Path) -> Report:
    """Read and validate a report; the kind comes from the `.similarity.json` / `.features.json` suffix,
    else from the report's `analysis` field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportFileError(f"{path}: cannot read ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise ReportFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    kind = next((name for name in REPORT_MODELS if path.name.endswith(f".{name}.json")), None)
    kind = kind or (raw.get("analysis") if isinstance(raw, dict) else None)
    if kind not in REPORT_MODELS:
        raise ReportFileError(f"{path}: not an analysis report (name it *.similarity.json or *.features.json)")
    try:
        return REPORT_MODELS[kind].model_validate(raw)
    except ValueError as exc:  # pydantic's ValidationError included
        raise ReportFileError(f"{path}: not a valid {kind} report:\n{exc}") from exc


def find_report_files(folder: Path) -> list[Path]:
    """Every `*.similarity.json` / `*.features.json` under `folder`, hidden folders (.cache) skipped."""
    folder = Path(folder)
    return sorted(
        p for suffix in ANALYSIS_REPORT_SUFFIXES for p in folder.rglob(f"*{suffix}")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def load_reports(folder: Path) -> dict[str, Report]:
    """Validated reports under `folder` by name: the file name without `.json` (`<result stem>.similarity`),
    or the path below `folder` where two reports share a file name."""
    folder = Path(folder)
    paths = find_report_files(folder)
    names = [p.name for p in paths]
    return {
        (p.name if names.count(p.name) == 1 else p.relative_to(folder).as_posix()).removesuffix(".json"): load_report(p)
        for p in paths
    }


# ---- markdown tables ------------------------------------------------------------------------------


def similarity_table(report: SimilarityReport) -> str:
    """Markdown: agreement, softmax ℓ2 and accuracy per (network, ε), then the noise P per (pruner, ε)."""
    headers = ["network", *(f"ε={e:g}" for e in report.epsilons)]

    def block(title: str, value: str) -> list[str]:
        rows = [[escape(name), *(_fmt(report.cell(name, e), value) for e in report.epsilons)]
                for name in report.networks]
        return [f"### {title}", "", table(rows, headers), ""]

    pruners = list(dict.fromkeys(p.pruner for p in report.potentials))
    p_rows = [[escape(p), *(f"{100 * q.potential:.1f}" for q in report.potentials if q.pruner == p)] for p in pruners]
    return "\n".join([
        f"## Functional similarity under noise (config {report.config_hash[:12]})",
        "",
        (f"Noise: {report.noise}; {report.draws} draws per image and ε > 0 on {report.n_images} test images, "
         f"seed {report.seed}. Agreement and distance compare each network with the parent on the same noisy input."),
        "",
        *block("Label agreement with the parent (%)", "agreement"),
        *block("Softmax ℓ2 distance to the parent", "softmax_l2"),
        *block("Accuracy (%)", "accuracy"),
        f"### Noise prune potential P(δ = {100 * report.delta:g} %) (%)",
        "",
        table(p_rows, ["pruner", *headers[1:]]) if p_rows else "(no pruned networks)",
    ]) + "\n"


def _fmt(cell: SimilarityCell, field: str) -> str:
    value = getattr(cell, field)
    return f"{value:.4f}" if field == "softmax_l2" else f"{100 * value:.1f}"


def features_table(report: FeatureReport) -> str:
    """Markdown matrix: rows = network whose pixels are kept, columns = evaluated network."""
    rows = [[escape(src), *(f"{100 * v:.1f}" for v in values)] for src, values in zip(report.networks, report.matrix)]
    rows.append(["all pixels", *(f"{100 * v:.1f}" for v in report.full_confidence)])
    return "\n".join([
        f"## Informative features (config {report.config_hash[:12]})",
        "",
        (f"Mean softmax on the true class (%) over {report.n_images} test images when only the row network's "
         f"{100 * report.keep_fraction:g} % most informative pixels ({report.kept_pixels} per image; {report.saliency} "
         f"saliency for the {report.target} class"
         f"{', best of all networks’ search results per image' if report.multistart else ''}) are kept; the rest "
         f"is set to {report.mask_value}. Columns: evaluated network."),
        "",
        table(rows, ["pixels of \\ evaluated by", *(escape(n) for n in report.networks)]),
    ]) + "\n"


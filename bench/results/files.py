"""Writing and reading result files: atomic writes, upgrades of older versions, integrity checks.

Compatibility promise: a result file written by any released prunebench stays readable. Each
older `schema_version` has an upgrade in UPGRADES (tested on a committed fixture of that version),
derived metrics are recomputed by the reader, and the integrity digest covers the JSON as stored.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bench.core.io import MAX_NETWORK_BYTES, UnreadableFile, atomic_write_text, canonical_sha256, read_capped
from bench.results.schema import EXTERNAL, PARENT, SCHEMA_VERSION, RunResult, VerifyReport

RESULT_SUFFIX = ".json"
# the most (network, test set) cells one file may hold: the board's work per file is bounded by it (a
# Fashion-MNIST seed has 33 x 84 = 2,772; a 62 MiB file of 34,001 networks kept the board busy 692 s)
MAX_CELLS_PER_FILE = 50_000
MAX_REPORT_BYTES = 16 * 2**20  # a `bench verify` report: a few kB, more with many disagreements
MAX_RESULT_BYTES = 64 * 2**20  # the largest result file read (a digits run is ~0.3 MB, an ImageNet one ~30 MB)
# How far a step's measured prune ratio may lie from its target ratio. The size search
# (bench.pruning.prune_to_ratio) stops within 0.1 % of the parent's nonzero count where the
# pruner's granularity allows; structured pruners of small layers land coarser: the committed
# digits results lie at most 0.0056 away (ft, step 1), a 2-step FT cascade on digits_cnn 0.0235
# (tests/test_compress.py). 0.04 admits both while refusing a claimed ratio far from the grid
# (e.g. 0.999 at target 0.95, which would rank the file on a step nobody else ran).
TARGET_RATIO_TOLERANCE = 0.04
PRUNE_RATIO_TOLERANCE = 1e-9  # prune_ratio against 1 - nonzero_params / parent's nonzero_params


class ResultFileError(ValueError):
    """A result file that is not valid JSON, does not match the schema, or was edited."""


class RejectedResult(RuntimeError):
    """A run's own result that the readers' checks reject: `bench run` stops (exit 1) instead of writing it."""


def content_digest(raw: Mapping[str, Any]) -> str:
    """The integrity digest of a result document: sha256 of its canonical JSON without `integrity`.

    Computed over the JSON as stored (not a re-dump of the model), so a field added to the schema
    later, with a default, leaves the digest of every existing file unchanged.
    """
    return canonical_sha256({key: value for key, value in raw.items() if key != "integrity"})


def result_document(result: RunResult) -> dict[str, Any]:
    """The JSON document `save_result` writes: the result with its integrity digest set."""
    raw = result.model_dump(mode="json", exclude={"integrity"})
    return {**raw, "integrity": content_digest(raw)}


def seal(result: RunResult) -> RunResult:
    """`result` with the integrity digest its saved file will carry."""
    return result.model_copy(update={"integrity": result_document(result)["integrity"]})


def save_result(result: RunResult, path: Path, test_set_sizes: Mapping[str, int] | None = None) -> Path:
    """Write `result` to `path` (atomically). With `test_set_sizes`, the text is first read back with
    the checks every reader applies (parse_result): a result they would reject raises RejectedResult
    and nothing is written."""
    text = json.dumps(result_document(result), indent=1) + "\n"
    if test_set_sizes is not None:
        try:
            parse_result(text, str(path), test_set_sizes)
        except ResultFileError as exc:
            raise RejectedResult(f"the run's own result fails the checks every reader applies, so it was not "
                                 f"written: {exc}") from exc
    atomic_write_text(path, text)
    return path


def _describe(error: ValidationError) -> str:
    """The first few schema errors on one line: `where: what; where: what (and N more)`."""
    parts = []
    for item in error.errors()[:8]:
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - 8
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def one_line(message: str) -> str:
    """`message` with line breaks and other control characters escaped: one line however hostile
    the names in it (file names, pruner names) are."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in message)


def _upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 stored the derived metrics (now always recomputed by the reader) and no network files."""
    return {key: value for key, value in raw.items() if key != "derived"} | {"schema_version": 2}


def _upgrade_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 2 had no `config.propagation`: its cascades repeated the propagation step until nothing
    changed (what version 3 calls "fixpoint"); `bench eval` results prune nothing (the default)."""
    config = raw.get("config")
    if isinstance(config, dict) and config.get("protocol") != EXTERNAL:
        config = {**config, "propagation": "fixpoint"}
    return {**raw, "config": config, "schema_version": 3}


# schema version -> the function that lifts a document of that version by one version
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_v1, 2: _upgrade_v2}


def check_version(raw: Mapping[str, Any], source: str = "<string>") -> None:
    """`schema_version` must be one of the supported integers exactly (not 1.0, not true)."""
    version = raw.get("schema_version")
    if type(version) is not int or not (version == SCHEMA_VERSION or version in UPGRADES):
        supported = ", ".join(str(v) for v in sorted({*UPGRADES, SCHEMA_VERSION}))
        raise ResultFileError(f"{source}: schema_version {version!r} is not supported (this prunebench reads "
                              f"the integers {supported})")


def upgrade(raw: dict[str, Any], source: str = "<string>") -> dict[str, Any]:
    """Lift a result document of any supported version to SCHEMA_VERSION."""
    check_version(raw, source)
    while raw["schema_version"] != SCHEMA_VERSION:
        raw = UPGRADES[raw["schema_version"]](raw)
    return raw


def parse_result(text: str, source: str = "<string>", test_set_sizes: Mapping[str, int] | None = None) -> RunResult:
    """Validate a result document of any supported schema version: JSON, version, the schema of the
    current version after upgrading, the integrity digest over the content as stored, and that its
    numbers agree with each other (check_consistency).

    `test_set_sizes` (dataset -> most examples one of its test sets holds; bench.data.DatasetSpec
    .max_test_examples) also bounds every `n_examples` and refuses datasets it does not name.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    except (ValueError, RecursionError) as exc:  # integers past Python's digit limit, nesting past the stack
        raise ResultFileError(f"{source}: not valid JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(raw, dict):
        raise ResultFileError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    check_version(raw, source)
    sealed = raw.get("integrity") == content_digest(raw)  # over the content as stored, before any upgrade
    stored_config = raw.get("config")  # as stored: what provenance.config_hash was computed over
    try:
        result = RunResult.model_validate(upgrade(raw, source))
    except ValidationError as exc:
        raise ResultFileError(f"{source}: does not match the result schema: {_describe(exc)}") from exc
    if not sealed:
        raise ResultFileError(
            f"{source}: integrity check failed: the content changed after `bench run` wrote it "
            "(hand-edited or corrupted). Re-run the benchmark instead of editing result files."
        )
    problem = check_consistency(result, stored_config, test_set_sizes)
    if problem:
        raise ResultFileError(f"{source}: {problem}")
    return result


def check_consistency(
    result: RunResult, stored_config: Any, test_set_sizes: Mapping[str, int] | None = None
) -> str | None:
    """What is wrong with a schema-valid result whose numbers disagree with each other, or None.

    The config hash must be the canonical sha256 of the config as stored (not of a re-dump, so a
    field added to RunConfig later leaves old files valid); every test set has a checksum; the
    parent is step 0 with ratios 0; each pruner ran the whole grid, step k at target_ratios[k-1],
    with prune_ratio = 1 - nonzero_params / parent's nonzero_params and within
    TARGET_RATIO_TOLERANCE of its target.
    """
    if canonical_sha256(stored_config) != result.provenance.config_hash:
        return (f"provenance.config_hash {result.provenance.config_hash[:12]!r} does not match the config "
                f"(whose canonical sha256 is {canonical_sha256(stored_config)[:12]})")
    cells = len(result.networks) * len(result.distributions)
    if cells > MAX_CELLS_PER_FILE:
        return (f"{len(result.networks)} networks x {len(result.distributions)} test sets = {cells:,} cells, more "
                f"than the {MAX_CELLS_PER_FILE:,} the board evaluates per file")
    names = {d.name for d in result.distributions}
    if set(result.provenance.distribution_checksums) != names:
        odd = sorted(names ^ set(result.provenance.distribution_checksums))
        return f"provenance.distribution_checksums do not match the distributions (differ on {odd[0]!r})"
    if test_set_sizes is not None:
        dataset = result.config.dataset
        if dataset not in test_set_sizes:
            return f"unknown dataset {dataset!r} (known: {', '.join(sorted(test_set_sizes))})"
        for dist in result.distributions:
            if dist.n_examples > test_set_sizes[dataset]:
                return (f"distribution {dist.name!r} claims {dist.n_examples} examples, more than the "
                        f"{test_set_sizes[dataset]} of any {dataset} test set")
    return _check_networks(result)


def _check_networks(result: RunResult) -> str | None:
    parent, grid = result.parent, result.config.target_ratios
    if parent.step != 0 or parent.prune_ratio != 0 or parent.target_ratio != 0:
        return (f"the parent must be step 0 with prune and target ratio 0, got step {parent.step}, prune ratio "
                f"{parent.prune_ratio}, target ratio {parent.target_ratio}")
    if parent.nonzero_params <= 0:
        return f"the parent has {parent.nonzero_params} nonzero parameters"
    steps: dict[str, list[int]] = defaultdict(list)
    for net in result.networks:
        if net.pruner == PARENT:
            continue
        where = f"network {net.pruner!r} step {net.step}"
        steps[net.pruner].append(net.step)
        if result.config.protocol == EXTERNAL:
            continue  # no grid: checked below (_check_external_networks)
        if not 1 <= net.step <= len(grid):
            return f"{where}: the grid has steps 1 to {len(grid)}"
        if net.target_ratio != grid[net.step - 1]:
            return f"{where}: target ratio {net.target_ratio}, but the config's grid has {grid[net.step - 1]} there"
        measured = 1.0 - net.nonzero_params / parent.nonzero_params
        if abs(net.prune_ratio - measured) > PRUNE_RATIO_TOLERANCE:
            return (f"{where}: prune ratio {net.prune_ratio} disagrees with its {net.nonzero_params} nonzero "
                    f"parameters of the parent's {parent.nonzero_params} (ratio {measured})")
        if abs(net.prune_ratio - net.target_ratio) > TARGET_RATIO_TOLERANCE:
            return (f"{where}: prune ratio {net.prune_ratio} is more than {TARGET_RATIO_TOLERANCE} away from its "
                    f"target {net.target_ratio}")
    if result.config.protocol == EXTERNAL:
        return _check_external_networks(result)
    for pruner, found in sorted(steps.items()):
        if sorted(found) != list(range(1, len(grid) + 1)):
            return f"network {pruner!r}: steps {sorted(found)}, expected each of 1 to {len(grid)} once"
    return None


def _check_external_networks(result: RunResult) -> str | None:
    """`bench eval`'s networks: as many per method as the config names, steps 1..k in order of their
    measured prune ratio, which is also their target (there is no grid)."""
    parent = result.parent
    named = Counter(n.method for n in result.config.external_networks or ())
    for method in result.config.pruners:
        nets = sorted((n for n in result.networks if n.pruner == method), key=lambda n: n.step)
        if [n.step for n in nets] != list(range(1, named[method] + 1)):
            return f"method {method!r}: steps {[n.step for n in nets]}, expected 1 to {named[method]} once each"
        ratios = [n.prune_ratio for n in nets]
        if ratios != sorted(ratios) or any(n.target_ratio != n.prune_ratio for n in nets):
            return f"method {method!r}: steps must be in order of their measured prune ratio, which is their target"
    for net in result.networks:
        measured = 1.0 - net.nonzero_params / parent.nonzero_params
        if net.pruner != PARENT and abs(net.prune_ratio - measured) > PRUNE_RATIO_TOLERANCE:
            return (f"network {net.pruner!r} step {net.step}: prune ratio {net.prune_ratio} disagrees with its "
                    f"{net.nonzero_params} parameters of the parent's {parent.nonzero_params} (ratio {measured})")
    unknown = sorted({n.pruner for n in result.networks} - {PARENT, *result.config.pruners})
    return f"network {unknown[0]!r} is not one of the config's methods" if unknown else None


def _read_capped(path: Path) -> bytes:
    """The bytes of a result file: a regular file of at most MAX_RESULT_BYTES (bench.core.io.read_capped)."""
    try:
        return read_capped(path, MAX_RESULT_BYTES, "result file")
    except UnreadableFile as exc:
        raise ResultFileError(str(exc)) from exc


def load_result(path: Path, test_set_sizes: Mapping[str, int] | None = None) -> RunResult:
    """Read and validate one result file (parse_result). Only a regular file (or a link to one) of
    at most MAX_RESULT_BYTES is read: a FIFO, device or directory is refused unopened or unread."""
    data = _read_capped(Path(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResultFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return parse_result(text, str(path), test_set_sizes)


# `bench analyze` and `bench verify` reports are JSON too, but not result files
ANALYSIS_REPORT_SUFFIXES = (".similarity.json", ".features.json")
VERIFY_REPORT_SUFFIX = ".verify.json"
REPORT_SUFFIXES = (*ANALYSIS_REPORT_SUFFIXES, VERIFY_REPORT_SUFFIX)
NETWORKS_SUFFIX = ".networks"


def networks_folder(result_path: Path) -> Path:
    """Where `bench run` saves a result's networks: `<result file without .json>.networks/`."""
    path = Path(result_path)
    return path.with_name(path.name.removesuffix(RESULT_SUFFIX) + NETWORKS_SUFFIX)


def find_result_files(folder: Path) -> list[Path]:
    """Every `*.json` under `folder` that is not a report and not in a hidden folder, sorted. Links,
    FIFOs and folders named *.json are listed too: load_result refuses them with a message, so that
    they are reported rather than silently dropped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultFileError(f"{folder}: no such results folder (run `bench run --out {folder}` first)")
    # hidden folders hold job artifacts (.cache) and temporary files
    return sorted(
        p for p in folder.rglob(f"*{RESULT_SUFFIX}")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not p.name.endswith(REPORT_SUFFIXES)
    )


def report_path(result_path: Path) -> Path:
    """Where `bench verify` writes its report on a result file: `<result without .json>.verify.json`."""
    path = Path(result_path)
    return path.with_name(path.name.removesuffix(RESULT_SUFFIX) + VERIFY_REPORT_SUFFIX)


def report_vouches_for(result_path: Path, result: RunResult, report: VerifyReport | None) -> bool:
    """Whether `report` is a passing, complete `bench verify` report for exactly this file and its
    networks: the result's integrity digest, every network checked and every hit compared (not a
    sample), no disagreement, and every network file the result names present beside it with its
    recorded sha256 (hashed here). A report written by hand for a file without its networks, or
    kept after the networks changed, does not count."""
    every_hit = len(result.networks) * sum(d.n_examples for d in result.distributions)
    return (report is not None and report.sample is None and report.hits_compared == every_hit
            and _report_covers(result_path, result, report))


def sample_vouched_for(result_path: Path, result: RunResult, report: VerifyReport | None) -> int | None:
    """K of a passing `bench verify --sample K` report for exactly this file and its networks (the
    checks of report_vouches_for, but of K drawn (network, test set) pairs); None otherwise."""
    if report is None or report.sample is None or not _report_covers(result_path, result, report):
        return None
    return report.sample


def _report_covers(result_path: Path, result: RunResult, report: VerifyReport) -> bool:
    """A passing report without disagreements, for this integrity digest, that checked every network,
    and every network file the result names beside it with its recorded sha256."""
    if (not report.passed or report.disagreements or report.integrity != result.integrity
            or report.networks_checked != len(result.networks)):
        return False
    folder = networks_folder(result_path)
    for net in result.networks:
        if net.file is None:
            return False
        try:
            payload = read_capped(folder / net.file.name, MAX_NETWORK_BYTES, "network file")
        except UnreadableFile:
            return False
        if hashlib.sha256(payload).hexdigest() != net.file.sha256:
            return False
    return True


def read_report(result_path: Path) -> VerifyReport | None:
    """The verification report beside a result file, or None if there is none or it is invalid (also
    when it is not a regular file of at most MAX_REPORT_BYTES)."""
    try:
        return VerifyReport.model_validate_json(read_capped(report_path(result_path), MAX_REPORT_BYTES, "report"))
    except (UnreadableFile, ValidationError):
        return None

"""Writing and reading result files: atomic writes, upgrades of older versions, integrity checks.

Compatibility promise: a result file written by any released prunebench stays readable. Each
older `schema_version` has an upgrade in UPGRADES (tested on a committed fixture of that version),
derived metrics are recomputed by the reader, and the integrity digest covers the JSON as stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bench.io import atomic_write_text, canonical_sha256
from bench.schema import SCHEMA_VERSION, RunResult, VerifyReport

RESULT_SUFFIX = ".json"


class ResultFileError(ValueError):
    """A result file that is not valid JSON, does not match the schema, or was edited."""


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


def save_result(result: RunResult, path: Path) -> Path:
    atomic_write_text(path, json.dumps(result_document(result), indent=1) + "\n")
    return path


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors()[:8]:
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  - {where}: {item['msg']}")
    more = error.error_count() - 8
    if more > 0:
        lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def _upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 stored the derived metrics (now always recomputed by the reader) and no network files."""
    return {key: value for key, value in raw.items() if key != "derived"} | {"schema_version": 2}


# schema version -> the function that lifts a document of that version by one version
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_v1}


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


def parse_result(text: str, source: str = "<string>") -> RunResult:
    """Validate a result document of any supported schema version: JSON, version, the schema of the
    current version after upgrading, and the integrity digest over the content as stored."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    if not isinstance(raw, dict):
        raise ResultFileError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    check_version(raw, source)
    sealed = raw.get("integrity") == content_digest(raw)  # over the content as stored, before any upgrade
    try:
        result = RunResult.model_validate(upgrade(raw, source))
    except ValidationError as exc:
        raise ResultFileError(f"{source}: does not match the result schema:\n{_describe(exc)}") from exc
    if not sealed:
        raise ResultFileError(
            f"{source}: integrity check failed: the content changed after `bench run` wrote it "
            "(hand-edited or corrupted). Re-run the benchmark instead of editing result files."
        )
    return result


def load_result(path: Path) -> RunResult:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot read ({exc.strerror})") from exc
    return parse_result(text, str(path))


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


def read_report(result_path: Path) -> VerifyReport | None:
    """The verification report beside a result file, or None if there is none or it is invalid."""
    try:
        return VerifyReport.model_validate_json(report_path(result_path).read_bytes())
    except (OSError, ValidationError):
        return None

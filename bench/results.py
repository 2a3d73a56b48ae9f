"""Writing and reading result files: atomic writes, schema validation, integrity checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import ValidationError

from bench.io import atomic_write_text
from bench.metrics import derive
from bench.schema import SCHEMA_VERSION, RunResult

RESULT_SUFFIX = ".json"


class ResultFileError(ValueError):
    """A result file that is not valid JSON, does not match the schema, or was edited."""


def seal(result: RunResult) -> RunResult:
    return result.model_copy(update={"integrity": result.payload_digest()})


def save_result(result: RunResult, path: Path) -> Path:
    sealed = seal(result)
    atomic_write_text(path, sealed.model_dump_json(indent=1) + "\n")
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


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def parse_result(text: str, source: str = "<string>") -> RunResult:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    if not isinstance(raw, dict):
        raise ResultFileError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultFileError(f"{source}: schema_version {version!r} is not supported (this prunebench reads {SCHEMA_VERSION})")
    try:
        result = RunResult.model_validate(raw)
    except ValidationError as exc:
        raise ResultFileError(f"{source}: does not match the result schema:\n{_describe(exc)}") from exc
    if result.integrity != result.payload_digest():
        raise ResultFileError(
            f"{source}: integrity check failed: the content changed after `bench run` wrote it "
            "(hand-edited or corrupted). Re-run the benchmark instead of editing result files."
        )
    recomputed = derive(result.distributions, result.networks, result.config.delta)
    if not _same(recomputed.model_dump(mode="json"), result.derived.model_dump(mode="json")):
        raise ResultFileError(f"{source}: stored derived metrics disagree with the ones recomputed from its accuracies")
    return result


def load_result(path: Path) -> RunResult:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot read ({exc.strerror})") from exc
    return parse_result(text, str(path))


# `bench analyze` reports (bench/analysis.py) are JSON too, but not result files
ANALYSIS_REPORT_SUFFIXES = (".similarity.json", ".features.json")


def find_result_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultFileError(f"{folder}: no such results folder (run `bench run --out {folder}` first)")
    # hidden folders hold job artifacts (.cache) and temporary files
    return sorted(
        p for p in folder.rglob(f"*{RESULT_SUFFIX}")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not p.name.endswith(ANALYSIS_REPORT_SUFFIXES)
    )

"""Physically smaller networks as torch.export archives (`.pt2`).

`bench compress --export-dir` writes them, `bench eval` reads them (bench.pipeline.external). An archive
holds the network's graph and weights, so it runs without the code that built it; its batch size
is dynamic, so any evaluation batch fits. The graph is exported in eval mode (BatchNorm with its
running statistics), for inference only.

torch.export.load would run code from an archive in five places: pickled weights and constants
(`weights_only=False`), custom and opaque objects, sample inputs (a `weights_only=False` fallback),
the guards (`exec` of Python source when the module is built) and symbolic shapes (`sympy.sympify`,
which evaluates its string). `read_exported` opens only archives that use none of them
(`check_archive`: the PT2 layout with raw tensor files, sample inputs a weights-only load accepts,
no guards, shape expressions of symbols, integers and arithmetic only, every graph call an ATen
operator or Python's own arithmetic and indexing), so no file a result brings can run code here.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core.io import atomic_path
from bench.pruning import count_nonzero
from bench.results.checkpoints import NetworkFileError, checked_bytes

__all__ = [
    "EXPORT_SUFFIX", "ExportedNetwork", "check_archive", "export_network", "load_exported", "network_size",
    "read_exported",
]

EXPORT_SUFFIX = ".pt2"
MAX_ARCHIVE_MEMBERS = 100_000
MAX_ARCHIVE_BYTES = 4 << 30  # uncompressed, all members together (a zip bomb stops here)
_ROOT = "archive/"
# what torch.export.save writes; anything else (AOTInductor or ExecuTorch binaries, extra files) is refused
_ALLOWED_MEMBERS = re.compile(
    r"archive/(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
    r"models/\w+\.json|data/sample_inputs/\w+\.pt|data/weights/(weight_\d+|\w+_weights_config\.json)|"
    r"data/constants/(tensor_\d+|\w+_constants_config\.json))"
)
# graph calls: ATen operators, and Python's arithmetic / comparison / indexing on sizes
_SAFE_TARGET = re.compile(
    r"torch\.ops\.aten\.\w+\.\w+|_operator\.(getitem|add|sub|mul|floordiv|truediv|mod|neg|pos|eq|ne|lt|le|gt|ge)"
)
# a symbolic shape: symbols (s0, u1, ...), integers, arithmetic and torch's integer functions
_SAFE_EXPRESSION = re.compile(r"[\w\s+\-*/%(),.<>=!]*")
_SAFE_NAMES = frozenset({
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "IntTrueDiv", "FloatTrueDiv", "Max", "Min", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or",
    "Not", "oo", "true", "false", "True", "False", "Symbol", "Integer", "Rational", "Add", "Mul", "Pow",
    "positive", "integer", "nonnegative", "real", "finite",
})
_QUOTED_SYMBOL = re.compile(r"'[a-z]{1,3}\d+'")  # torch writes symbols as Symbol('s31', positive=True, ...)
_SYMBOL = re.compile(r"[a-z]{1,3}\d+")


class ExportedNetwork(nn.Module):
    """An exported program as an inference module. torch.export's modules refuse train() / eval();
    the graph is fixed in eval mode, so switching modes does nothing here."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        self.graph_module = program.module()
        # every tensor the program holds: parameters, buffers and lifted constants (a network whose
        # weights live in buffers or constants is not smaller than one that keeps them as parameters)
        tensors = [*program.state_dict.values(), *program.constants.values()]
        self.stored_entries = sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))

    def train(self, mode: bool = True) -> ExportedNetwork:
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.graph_module(images)


def export_network(model: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Export `model` in eval mode with a dynamic batch size (`example`: one input batch) to `path`,
    atomically; returns the archive's sha256."""
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    payload = buffer.getvalue()
    with atomic_path(Path(path)) as temporary:
        temporary.write_bytes(payload)
    return hashlib.sha256(payload).hexdigest()


def _refuse(source: str, why: str) -> NetworkFileError:
    return NetworkFileError(f"{source}: refused, {why} (an archive may not bring code; see bench.pipeline.exported)")


def _json_strings(node: Any, key: str) -> Iterator[str]:
    """Every string stored under `key` anywhere in a parsed JSON document."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key and isinstance(value, str):
                yield value
            else:
                yield from _json_strings(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from _json_strings(value, key)


def _safe_expression(text: str) -> bool:
    text = _QUOTED_SYMBOL.sub("s0", text)
    if not _SAFE_EXPRESSION.fullmatch(text) or "__" in text or ".." in text:
        return False
    names = re.findall(r"[A-Za-z_]\w*", text)
    return all(name in _SAFE_NAMES or _SYMBOL.fullmatch(name) for name in names)


def _check_program(model_json: bytes, source: str) -> None:
    try:
        program = json.loads(model_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(source, "its graph is not JSON") from exc
    if program.get("guards_code"):
        raise _refuse(source, "it carries guards (Python source that torch would exec)")
    for target in _json_strings(program, "target"):
        if not _SAFE_TARGET.fullmatch(target):
            raise _refuse(source, f"its graph calls {target[:80]!r}, not an ATen operator")
    ranges = program.get("range_constraints") or {}
    expressions = [*_json_strings(program, "expr_str"), *(ranges if isinstance(ranges, dict) else ())]
    for expression in expressions:
        if not _safe_expression(expression):
            raise _refuse(source, f"a shape expression {expression[:80]!r} is not plain arithmetic")


def _check_payload_config(config_json: bytes, source: str, prefix: str) -> None:
    try:
        entries = json.loads(config_json).get("config", {})
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise _refuse(source, "a weights or constants table is not JSON") from exc
    for name, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
            raise _refuse(source, f"{str(name)[:80]!r} is stored pickled")
        if not re.fullmatch(prefix + r"\d+", str(entry.get("path_name", ""))):
            raise _refuse(source, f"{str(name)[:80]!r} is not a plain tensor file")


def check_archive(payload: bytes, source: str) -> None:
    """Raise NetworkFileError unless the archive's bytes are a torch.export (PT2) archive that
    torch.export.load can open without running code from it (the module docstring says where it would)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise NetworkFileError(f"{source}: not a torch.export archive (not a zip file)") from exc
    if len(members) > MAX_ARCHIVE_MEMBERS or sum(m.file_size for m in members) > MAX_ARCHIVE_BYTES:
        raise _refuse(source, "it unpacks to more than the size limit")
    names = [m.filename for m in members]
    if f"{_ROOT}archive_format" not in names:
        raise _refuse(source, "not the PT2 archive layout (older torch.export archives are pickles)")
    for name in names:
        if not _ALLOWED_MEMBERS.fullmatch(name):
            raise _refuse(source, f"it holds {name[:80]!r}, which torch.export.save does not write")
    with archive:
        for name in names:
            data = archive.read(name)
            if name.startswith(f"{_ROOT}models/"):
                _check_program(data, source)
            elif name.endswith("_weights_config.json"):
                _check_payload_config(data, source, "weight_")
            elif name.endswith("_constants_config.json"):
                _check_payload_config(data, source, "tensor_")
            elif name.startswith(f"{_ROOT}data/sample_inputs/"):
                try:  # torch tries exactly this first; only its fallback unpickles freely
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        torch.load(io.BytesIO(data), weights_only=True)
                except Exception as exc:
                    raise _refuse(source, "its sample inputs need a full unpickler") from exc


def read_exported(payload: bytes, source: str) -> ExportedNetwork:
    """The network in a torch.export archive's bytes (`source` names it in errors); archives that
    could run code when loaded are refused (`check_archive`)."""
    check_archive(payload, source)
    try:
        program = torch.export.load(io.BytesIO(payload))
    except Exception as exc:  # torch raises many types for foreign bytes
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise NetworkFileError(f"{source}: not a torch.export archive ({type(exc).__name__}: {reason})") from exc
    return ExportedNetwork(program).eval()


def load_exported(path: Path, sha256: str | None = None) -> ExportedNetwork:
    """The network in the archive `path`; with `sha256`, the file's bytes are checked first."""
    return read_exported(checked_bytes(path, sha256), str(path))


def network_size(model: nn.Module) -> int:
    """What a network's prune ratio is measured by: for an exported (physically smaller) network
    every entry of every tensor it holds (parameters, buffers, constants; zeros included: it stores
    them); else its nonzero parameters."""
    if isinstance(model, ExportedNetwork):
        return model.stored_entries
    return count_nonzero(model)

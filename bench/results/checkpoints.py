"""Sparse network files: safetensors holding a bit-packed nonzero mask and the kept values.

The one network format of prunebench: the job store, the networks `bench run` saves beside its
result file and `bench verify` all use it. A floating tensor `w` is stored as two entries,
`w::mask` (np.packbits of "bit pattern not all zero", flattened, uint8) and `w::values` (those
entries), so a 90 %-pruned network costs about 10 % of its dense size plus 1/32 for the mask; other
tensors (integer buffers) are stored as they are. Shapes and dtypes live in the header's metadata.
The round trip is bitwise exact (a -0.0 is a stored value), so a cascade resumed from a saved step
continues exactly as an uninterrupted one. Loading never unpickles: safetensors is a JSON header
and raw little-endian buffers.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from bench.core.io import MAX_NETWORK_BYTES, UnreadableFile, atomic_path, canonical_sha256, read_capped

__all__ = ["FORMAT", "NetworkFileError", "SavedFile", "decode_checkpoint", "fit_state", "load_state", "read_state", "save_state",
           "shape_signature"]

FORMAT = "prunebench-sparse-1"
_MASK, _VALUES = "::mask", "::values"
_HEADER_KEY = "prunebench"
_SAME_SIZE_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


class NetworkFileError(ValueError):
    """A network file that is missing, not what its record says, or not a prunebench network."""


@dataclass(frozen=True)
class SavedFile:
    """What a result file records of a saved network."""

    sha256: str
    nonzero: int  # stored entries (nonzero bit patterns) over every floating tensor, buffers included
    shape_signature: str


def shape_signature(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the sorted (name, shape, dtype) list: equal for states of one architecture."""
    return canonical_sha256(sorted((name, list(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in state.items()))


def _encode(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict[str, object]] = {}
    for name, tensor in state.items():
        if _MASK in name or _VALUES in name:
            raise ValueError(f"tensor name {name!r} contains a reserved suffix")
        tensor = tensor.detach().to("cpu").contiguous()
        sparse = tensor.is_floating_point()
        layout[name] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."), "sparse": sparse}
        if sparse:
            flat = tensor.reshape(-1)
            kept = flat.view(_SAME_SIZE_INT[flat.element_size()]) != 0  # bit patterns: -0.0 is kept, exactly
            tensors[name + _MASK] = torch.from_numpy(np.packbits(kept.numpy()))
            tensors[name + _VALUES] = flat[kept].clone()
        else:
            tensors[name] = tensor.clone()
    # one metadata entry: safetensors writes the metadata map in hash order, which varies between
    # processes, and the file's sha256 must not
    return tensors, {_HEADER_KEY: json.dumps({"format": FORMAT, "layout": layout}, sort_keys=True)}


def save_state(state: Mapping[str, torch.Tensor], path: Path) -> SavedFile:
    """Write `state` (a state dict) sparsely to `path`, atomically; returns its sha256 and counts."""
    tensors, metadata = _encode(state)
    payload = save_safetensors(tensors, metadata=metadata)
    with atomic_path(Path(path)) as temporary:
        temporary.write_bytes(payload)
    nonzero = sum(int(t.numel()) for n, t in tensors.items() if n.endswith(_VALUES))
    return SavedFile(hashlib.sha256(payload).hexdigest(), nonzero, shape_signature(state))


def _decode(payload: bytes, source: str) -> dict[str, torch.Tensor]:
    try:
        tensors = load_safetensors(payload)
        header_size = int.from_bytes(payload[:8], "little")
        metadata = json.loads(payload[8:8 + header_size]).get("__metadata__") or {}
        description = json.loads(metadata.get(_HEADER_KEY, "{}"))
    except (SafetensorError, ValueError, OSError) as exc:
        raise NetworkFileError(f"{source}: not a safetensors file ({exc})") from exc
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise NetworkFileError(f"{source}: not a prunebench network file (no {FORMAT!r} description in its header)")
    try:
        return _dense_state(tensors, description["layout"], source)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise NetworkFileError(f"{source}: malformed prunebench network file ({type(exc).__name__}: {exc})") from exc


def _dense_state(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, dict], source: str) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name, entry in layout.items():
        shape, dtype = tuple(entry["shape"]), getattr(torch, str(entry["dtype"]), None)
        if not isinstance(dtype, torch.dtype) or not all(isinstance(d, int) and 0 <= d < 2**40 for d in shape):
            raise NetworkFileError(f"{source}: tensor {name!r} has a malformed shape or dtype in the header")
        if not entry["sparse"]:
            state[name] = tensors[name]
            continue
        numel = math.prod(shape)
        mask = tensors[name + _MASK]
        # the header's shape is bounded by the mask the file really holds before anything is allocated
        if mask.dtype != torch.uint8 or mask.numel() != (numel + 7) // 8:
            raise NetworkFileError(f"{source}: tensor {name!r}: its mask of {mask.numel()} bytes does not fit "
                                   f"the shape {list(shape)} of its header")
        kept = torch.from_numpy(np.unpackbits(mask.numpy(), count=numel).astype(bool))
        values = tensors[name + _VALUES]
        if int(kept.sum()) != values.numel() or values.dtype != dtype:
            raise NetworkFileError(f"{source}: tensor {name!r} has a mask of {int(kept.sum())} entries "
                                   f"but {values.numel()} {values.dtype} values")
        dense = torch.zeros(numel, dtype=dtype)
        dense[kept] = values
        state[name] = dense.reshape(shape)
    return state


def _looks_like_safetensors(payload: bytes) -> bool:
    """A safetensors file starts with its header's length (u64, little-endian) and a JSON object."""
    header_size = int.from_bytes(payload[:8], "little")
    return len(payload) >= 10 and 8 + header_size <= len(payload) and payload[8:9] == b"{"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour codes in torch's messages


def decode_checkpoint(payload: bytes, source: str) -> dict[str, torch.Tensor]:
    """A user's state dict from a file's bytes (`source` names it in errors): prunebench's sparse
    format (its header says so), plain safetensors, or a `torch.save`d mapping of names to tensors,
    read with `weights_only=True` (no code is unpickled)."""
    if _looks_like_safetensors(payload):
        try:
            tensors = load_safetensors(payload)
        except (SafetensorError, ValueError, OSError) as exc:
            raise NetworkFileError(f"{source}: not a safetensors file ({exc})") from exc
        header = json.loads(payload[8:8 + int.from_bytes(payload[:8], "little")])
        if _HEADER_KEY in (header.get("__metadata__") or {}):
            return _decode(payload, source)
        return dict(tensors)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign bytes (UnpicklingError, RuntimeError, ...)
        text = _ANSI.sub("", str(exc))
        if "Unsupported global" in text or "GLOBAL" in text:  # pickled classes: a whole module, not its weights
            raise NetworkFileError(f"{source}: holds a pickled object (e.g. a whole module saved with "
                                   "torch.save(model)), which is never unpickled here; save its weights instead: "
                                   "torch.save(model.state_dict(), path)") from exc
        reason = (text.strip().splitlines() or [""])[0][:200]
        raise NetworkFileError(f"{source}: not a state dict file (torch.save or safetensors): "
                               f"{type(exc).__name__}: {reason}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        raise NetworkFileError(f"{source}: not a state dict (a mapping of parameter names to tensors)")
    return dict(state)


def stored_entries(state: Mapping[str, torch.Tensor]) -> int:
    """Entries a sparse network file stores for `state`: nonzero bit patterns (-0.0 included) over
    every floating tensor, buffers too (SavedFile.nonzero, NetworkFile.nonzero)."""
    return sum(int(torch.count_nonzero(t) + ((t == 0) & t.signbit()).sum())
               for t in state.values() if t.is_floating_point())


def checked_bytes(path: Path, sha256: str | None = None) -> bytes:
    """The bytes of the network file `path`; with `sha256`, checked against it (NetworkFileError)."""
    try:
        payload = read_capped(Path(path), MAX_NETWORK_BYTES, "network file")
    except UnreadableFile as exc:
        raise NetworkFileError(str(exc)) from exc
    if sha256 is not None and hashlib.sha256(payload).hexdigest() != sha256:
        raise NetworkFileError(f"{path}: sha256 differs from the recorded one (file replaced or corrupted)")
    return payload


def read_state(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict in `path`; with `sha256`, the file's bytes are checked first."""
    return _decode(checked_bytes(path, sha256), str(path))


def load_state(model: torch.nn.Module, path: Path, sha256: str | None = None) -> torch.nn.Module:
    """Load `path` into `model` (keys, shapes and dtypes must match exactly); returns the model."""
    return fit_state(model, read_state(path, sha256), path)


def fit_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> torch.nn.Module:
    """Load a state read from `path` into `model`, which it must fit exactly; returns the model."""
    expected = model.state_dict()
    if shape_signature(state) != shape_signature(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        hint = ""
        if any(key.endswith(("_orig", "_mask")) for key in extra):
            hint = ("; torch.nn.utils.prune's weight_orig / weight_mask are still in it: call "
                    "torch.nn.utils.prune.remove(module, 'weight') on every pruned module before saving")
        raise NetworkFileError(f"{path}: does not fit the model (missing {missing[:3]}, unexpected {extra[:3]}, "
                               f"other shape or dtype {wrong[:3]}){hint}")
    model.load_state_dict(state)
    return model

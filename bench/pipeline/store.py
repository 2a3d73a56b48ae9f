"""The job store: a run's content-addressed artifacts, each checked every time it is used.

Layout under the store folder (a run's `.cache`):

    parents/<key>.safetensors + .json   a trained unpruned network (and the analyses' control parents)
    steps/<key>.safetensors + .json     one prune + retrain step of a cascade chain
    evals/<key>.json                    per-example correctness of one network on one test set
    testsets/<sha256>.npz               a generated test set, addressed by its content checksum
    testsets/<sha256>.json              a file-backed test set, stored as a reference to its files
    checkpoints/<sha256>.checkpoint     a user's parent checkpoint (`--parent-checkpoint`), as given

Every `.json` is a marker `{"payload": ..., "sha256": sha256 of the payload's canonical JSON}`,
written last, so its presence means "done"; a network marker also records its file's sha256. A
marker that is unreadable or disagrees with its digest, or a network file that disagrees with its
marker, is deleted with a warning naming it, and `done` answers False so the job runs again (a
cache on a flaky disk heals instead of feeding wrong numbers into results). Generated test sets
are checked against their content checksum whenever they are saved or loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.core.io import (
    MAX_NETWORK_BYTES,
    UnreadableFile,
    atomic_path,
    atomic_write_text,
    canonical_sha256,
    read_capped,
)
from bench.data import ImageSet, TestSource
from bench.data.readers import source_from_reference
from bench.results.checkpoints import NetworkFileError, SavedFile, load_state, save_state

__all__ = ["NETWORK_SUFFIX", "CacheCorrupted", "Store"]

NETWORK_SUFFIX = ".safetensors"
MAX_MARKER_BYTES = 64 * 2**20  # a job record: a few kB (an evaluation's hits: ~1 bit per image)
CHECKPOINT_SUFFIX = ".checkpoint"  # a user's parent, as given (torch.save or safetensors)
ARTIFACT_SUFFIXES = (".json", NETWORK_SUFFIX, ".npz", CHECKPOINT_SUFFIX)  # every file an artifact may have
log = logging.getLogger(__name__)


class CacheCorrupted(RuntimeError):
    """A job artifact that is unreadable or differs from its recorded sha256."""


@dataclass(frozen=True)
class Store:
    root: Path

    def path(self, kind: str, key: str, suffix: str) -> Path:
        return Path(self.root) / kind / f"{key}{suffix}"

    def network_path(self, kind: str, key: str) -> Path:
        return self.path(kind, key, NETWORK_SUFFIX)

    def artifact_paths(self, kind: str, key: str) -> list[Path]:
        """The files of one artifact that are in the store (marker, network, test set or checkpoint)."""
        return [path for suffix in ARTIFACT_SUFFIXES if (path := self.path(kind, key, suffix)).is_file()]

    # ---- markers -------------------------------------------------------------------------------

    def done(self, kind: str, key: str) -> bool:
        """Whether the job's artifacts are all present and intact. A corrupted one is deleted with a
        warning naming it, and the answer is False: the caller recomputes it."""
        if not self.path(kind, key, ".json").exists():
            return False
        try:
            payload = self.read_json(kind, key)
            if "file" in payload:
                self._check_network_file(kind, key, SavedFile(**payload["file"]).sha256)
        except CacheCorrupted as exc:
            self.discard(kind, key, str(exc))
            return False
        return True

    def read_json(self, kind: str, key: str) -> dict[str, Any]:
        """A marker's payload, checked against its digest (CacheCorrupted if it is not intact)."""
        path = self.path(kind, key, ".json")
        try:
            document = json.loads(read_capped(path, MAX_MARKER_BYTES, "job record").decode("utf-8"))
        except UnreadableFile as exc:
            raise CacheCorrupted(str(exc)) from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CacheCorrupted(f"{path}: unreadable ({exc})") from exc
        if not isinstance(document, dict) or document.get("sha256") != canonical_sha256(document.get("payload")):
            raise CacheCorrupted(f"{path}: content differs from its recorded sha256")
        payload = document["payload"]
        if not isinstance(payload, dict):
            raise CacheCorrupted(f"{path}: not a job record")
        return payload

    def write_json(self, kind: str, key: str, payload: Mapping[str, Any]) -> None:
        document = {"payload": dict(payload), "sha256": canonical_sha256(dict(payload))}
        atomic_write_text(self.path(kind, key, ".json"), json.dumps(document, sort_keys=True))

    def discard(self, kind: str, key: str, reason: str) -> None:
        """Delete a job's artifacts (marker first), with a warning saying why."""
        log.warning("cache: %s; deleted, it will be recomputed", reason)
        for suffix in (".json", NETWORK_SUFFIX, ".npz"):
            self.path(kind, key, suffix).unlink(missing_ok=True)

    # ---- networks ------------------------------------------------------------------------------

    def save_network(self, kind: str, key: str, model: nn.Module, meta: Mapping[str, Any]) -> None:
        saved = save_state(model.state_dict(), self.network_path(kind, key))
        self.write_json(kind, key, {**meta, "file": asdict(saved)})  # last: marks the job done

    def network_file(self, kind: str, key: str) -> SavedFile:
        """The sha256, nonzero count and shape signature recorded when the network was saved."""
        return SavedFile(**self.read_json(kind, key)["file"])

    def _check_network_file(self, kind: str, key: str, sha256: str) -> bytes:
        path = self.network_path(kind, key)
        try:
            payload = read_capped(path, MAX_NETWORK_BYTES, "network file")
        except UnreadableFile as exc:
            raise CacheCorrupted(str(exc)) from exc
        if hashlib.sha256(payload).hexdigest() != sha256:
            raise CacheCorrupted(f"{path}: content differs from its recorded sha256")
        return payload

    def export_network(self, kind: str, key: str, target: Path) -> SavedFile:
        """Copy a network file out of the store (e.g. beside a result file), checking its sha256."""
        saved = self.network_file(kind, key)
        payload = self._check_network_file(kind, key, saved.sha256)
        with atomic_path(target) as temporary:
            temporary.write_bytes(payload)
        return saved

    def load_weights(self, kind: str, key: str, model: nn.Module) -> nn.Module:
        try:
            load_state(model, self.network_path(kind, key), self.network_file(kind, key).sha256)
        except NetworkFileError as exc:
            raise CacheCorrupted(str(exc)) from exc
        return model.eval()

    # ---- user checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self, payload: bytes) -> str:
        """Keep a user's parent checkpoint (`bench run --parent-checkpoint`) under its sha256, so a
        parent job on any worker reads it from the store; returns the sha256."""
        sha256 = hashlib.sha256(payload).hexdigest()
        path = self.path("checkpoints", sha256, CHECKPOINT_SUFFIX)
        try:
            intact = hashlib.sha256(read_capped(path, MAX_NETWORK_BYTES, "checkpoint")).hexdigest() == sha256
        except UnreadableFile:
            intact = False
        if not intact:
            with atomic_path(path) as temporary:
                temporary.write_bytes(payload)
        return sha256

    def checkpoint_bytes(self, sha256: str) -> bytes:
        """The bytes of a checkpoint saved with `save_checkpoint`, checked against its sha256."""
        path = self.path("checkpoints", sha256, CHECKPOINT_SUFFIX)
        if not path.exists() and not path.is_symlink():
            raise LookupError(f"parent checkpoint {sha256[:12]} is not in {self.root}; "
                              "pass its file again (--parent-checkpoint)")
        try:
            payload = read_capped(path, MAX_NETWORK_BYTES, "checkpoint")
        except UnreadableFile as exc:
            raise CacheCorrupted(str(exc)) from exc
        if hashlib.sha256(payload).hexdigest() != sha256:
            path.unlink(missing_ok=True)
            raise CacheCorrupted(f"{path}: content differs from its sha256; deleted, pass the checkpoint again")
        return payload

    # ---- test sets -----------------------------------------------------------------------------

    def save_testset(self, source: TestSource) -> None:
        """Generated test sets are copied (npz); file-backed ones are stored as a reference (json).
        An existing copy is checked against the checksum and replaced if it differs."""
        reference = source.reference()
        if reference is not None:
            if not self.done("testsets", source.checksum):
                self.write_json("testsets", source.checksum, reference)
            return
        path = self.path("testsets", source.checksum, ".npz")
        if path.exists():
            try:
                self._load_npz(source.checksum)
                return
            except CacheCorrupted as exc:
                self.discard("testsets", source.checksum, str(exc))
        assert isinstance(source, ImageSet)
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, images=source.images.numpy(), labels=source.labels.numpy())

    def _load_npz(self, checksum: str) -> ImageSet:
        path = self.path("testsets", checksum, ".npz")
        try:
            with np.load(path) as archive:
                images = ImageSet(torch.from_numpy(archive["images"]), torch.from_numpy(archive["labels"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise CacheCorrupted(f"{path}: unreadable ({exc})") from exc
        if images.checksum != checksum:
            raise CacheCorrupted(f"{path}: content differs from its checksum")
        return images

    def load_testset(self, checksum: str) -> TestSource:
        if self.done("testsets", checksum):
            return source_from_reference(self.read_json("testsets", checksum))
        return self._load_npz(checksum)

"""Data on disk: where it lives, how it is fetched and verified (test sets read lazily from it:
bench.data.readers).

* The data root is `--data-dir`, else `$PRUNEBENCH_DATA`, else `./data`. Nothing is downloaded
  unless the user allows it (`bench run --download`); a missing folder raises `DataMissing` with
  a message that says how to get it.
* `verify_files` checks files against a sha256 manifest: pinned by us for downloaded archives,
  or `prunebench-manifest.json` next to the files (written by `bench data make-c` and on the first
  use of a folder). A file whose checksum differs is refused, naming the file.
* A file is hashed again when its size, mtime, inode or ctime changed since it was last hashed
  (`.prunebench-verified.json`), and always once per run under `bench run --verify-data`.
* A file that is present but unusable (truncated, malformed, wrong shape or labels) raises
  `DataInvalid`, one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the dataset specs stay torch-free
    pass


DATA_ENV = "PRUNEBENCH_DATA"
DOWNLOAD_ENV = "PRUNEBENCH_DOWNLOAD"
RUN_ENV = "PRUNEBENCH_RUN"  # a token per run, inherited by its workers: files are hashed at most once per run
VERIFY_ENV = "PRUNEBENCH_VERIFY_DATA"  # "1": `--verify-data`, hash every data file again in this run
LOCAL_MANIFEST = "prunebench-manifest.json"
log = logging.getLogger(__name__)


class DataMissing(FileNotFoundError):
    """Data that is not on disk; the message says how to get it."""

    @classmethod
    def not_found(cls, what: str, where: Path, how: str) -> DataMissing:
        """The one wording of every missing-data error: what, where it was looked for, how to get it."""
        return cls(f"{what} not found in {where}: {how} (--data-dir or ${DATA_ENV} choose the data root)")


class ChecksumMismatch(ValueError):
    """A file on disk differs from its manifest entry."""


class DataInvalid(ValueError):
    """A data file that is present but unusable: truncated, malformed, or not the shape, dtype or
    labels its format promises. The message is one line that names the file."""


@contextmanager
def data_environment(root: Path | None, download: bool, verify_data: bool = False) -> Iterator[None]:
    """Set the data root / download permission / `--verify-data` for this run (and the workers it
    spawns), then restore the previous values: one run's `--download` must not leak into the next.

    Each call starts a run with a fresh token: a process hashes each unchanged data file at most once
    per run, and with `verify_data` at least once, ignoring the record of verified files (`file_hashes`)."""
    saved = {key: os.environ.get(key) for key in (DATA_ENV, DOWNLOAD_ENV, RUN_ENV, VERIFY_ENV)}
    if root is not None:
        os.environ[DATA_ENV] = str(Path(root).expanduser().resolve())
    if download:
        os.environ[DOWNLOAD_ENV] = "1"
    os.environ[RUN_ENV] = uuid.uuid4().hex
    if verify_data:
        os.environ[VERIFY_ENV] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def data_root() -> Path:
    """The data root of this run: `--data-dir`, else `$PRUNEBENCH_DATA`, else `./data`."""
    return Path(os.environ.get(DATA_ENV, "data")).expanduser().resolve()


def download_allowed() -> bool:
    """Whether this run may download data (`bench run --download`)."""
    return os.environ.get(DOWNLOAD_ENV, "") == "1"


def verify_data_requested() -> bool:
    """Whether this run hashes every data file again (`bench run --verify-data`)."""
    return os.environ.get(VERIFY_ENV, "") == "1"


def file_digest(path: Path, algorithm: str = "sha256", chunk: int = 1 << 22) -> str:
    """Hex digest of a file, read in chunks (md5 only as a checksum, never for security)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    return file_digest(path, "sha256")


def load_json(path: Path) -> Any:
    """A JSON file's content; a truncated or malformed file raises DataInvalid naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataMissing(f"{path} is missing") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataInvalid(f"{path}: not valid JSON, truncated or corrupted ({exc})") from None


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def read_manifest(path: Path) -> dict[str, str]:
    """A sha256 manifest (file name -> hex sha256); a malformed one raises DataInvalid naming it
    (it is the reference the files are checked against, so it is never silently rebuilt)."""
    manifest = load_json(path)
    if not isinstance(manifest, dict) or not all(isinstance(k, str) and _is_sha256(v) for k, v in manifest.items()):
        raise DataInvalid(f"{path}: not a manifest of file name -> sha256; restore it, or delete it to record "
                          "the checksums of the files present again")
    return manifest


def update_manifest(folder: Path, hashes: Mapping[str, str]) -> dict[str, str]:
    """Merge sha256 `hashes` (name -> hex) into the folder's `prunebench-manifest.json`, atomically."""
    from bench.core.io import atomic_write_text

    path = folder / LOCAL_MANIFEST
    manifest = read_manifest(path) if path.exists() else {}
    manifest.update(hashes)
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


VERIFIED = ".prunebench-verified.json"  # name -> [sha256, size, mtime_ns, ino, ctime_ns] of files already hashed

FileStamp = tuple[int, int, int, int]
_HASHED: dict[tuple[str, str, FileStamp], str] = {}  # (run token, path, stamp) -> sha256 in this process


def file_stamp(path: Path) -> FileStamp:
    """What says a file is unchanged without reading it: size, mtime, inode and ctime (ns). The ctime
    cannot be set back from user space, so a file rewritten in place with its size and mtime restored
    (or replaced by another file) still differs."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns


def read_verified(path: Path) -> dict[str, Any]:
    """The record of files already hashed; a corrupt record is ignored with a warning (it is only a
    cache of hashes: every file is hashed again and the record rebuilt)."""
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = str(exc)
    else:
        if isinstance(record, dict):
            return record
        reason = "not a JSON object"
    log.warning("%s: unreadable record of verified files (%s); ignoring it, the files are hashed again", path, reason)
    return {}


def _recorded(entry: object, stamp: FileStamp) -> str | None:
    """The sha256 of a record entry [sha256, size, mtime_ns, ino, ctime_ns] if it is for this stamp."""
    if isinstance(entry, list) and entry[1:] == list(stamp) and _is_sha256(entry[0]):
        return str(entry[0])
    return None


def file_hashes(folder: Path, names: Sequence[str]) -> dict[str, str]:
    """sha256 of `names` (relative to folder). A file is hashed again only when its size, mtime,
    inode or ctime changed since it was last hashed (remembered in `<folder>/.prunebench-verified.json`),
    so a large folder is read once, not on every run; records of the older format count as changed.
    Under `bench run --verify-data` every file is hashed again, ignoring the record. A process hashes
    each unchanged file at most once per run."""
    from bench.core.io import atomic_write_text

    record_path = folder / VERIFIED
    record = read_verified(record_path)
    run, again = os.environ.get(RUN_ENV, ""), verify_data_requested()
    hashes, changed = {}, False
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataMissing(f"{path} is missing")
        stamp = file_stamp(path)
        key = (run, os.path.abspath(path), stamp)
        digest = _HASHED.get(key)
        if digest is None:
            recorded = None if again else _recorded(record.get(name), stamp)  # --verify-data ignores the record
            digest = _HASHED[key] = recorded or sha256_file(path)
        if record.get(name) != [digest, *stamp]:
            record[name], changed = [digest, *stamp], True
        hashes[name] = digest
    if changed:
        try:
            atomic_write_text(record_path, json.dumps(record, sort_keys=True))
        except OSError:  # a read-only data folder: hash again next time
            pass
    return hashes


def verify_files(folder: Path, manifest: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    """Check `names` (relative to folder) against the sha256 `manifest`; return their hashes."""
    unknown = [name for name in names if name not in manifest]
    if unknown:
        raise ChecksumMismatch(f"{folder / unknown[0]} has no entry in the manifest of {folder}; refusing an unknown file")
    hashes = file_hashes(folder, names)
    for name in names:
        if hashes[name] != manifest[name]:
            raise ChecksumMismatch(
                f"{folder / name}: sha256 {hashes[name][:16]}... differs from the manifest ({manifest[name][:16]}...); "
                "the file is corrupted or not the official one; delete it and fetch it again"
            )
    return hashes


def local_manifest(folder: Path, names: Sequence[str]) -> dict[str, str]:
    """The folder's manifest; created on first use from the files present (trust on first use)."""
    path = folder / LOCAL_MANIFEST
    if path.exists():
        return read_manifest(path)
    present = [name for name in names if (folder / name).is_file()]
    return update_manifest(folder, file_hashes(folder, present))  # also records them as verified


@dataclass(frozen=True)
class Archive:
    """A pinned download: URL, file name, md5 (and sha256 when published)."""

    url: str
    filename: str
    md5: str
    sha256: str | None = None
    size: int | None = None


def fetch_archive(archive: Archive, into: Path, missing: DataMissing) -> None:
    """Download (only when allowed, else raise `missing`), verify md5/sha256, extract a tar into `into`."""
    target = into / archive.filename
    if not target.exists():
        if not download_allowed():
            raise missing
        from torchvision.datasets.utils import download_url

        download_url(archive.url, str(into), filename=archive.filename)
    actual = file_digest(target, "md5")
    if actual != archive.md5:
        raise ChecksumMismatch(f"{target}: md5 {actual} differs from the pinned {archive.md5}; delete it and retry")
    if archive.sha256 is not None and sha256_file(target) != archive.sha256:
        raise ChecksumMismatch(f"{target}: sha256 differs from the pinned {archive.sha256}; delete it and retry")
    with tarfile.open(target) as tar:
        tar.extractall(into, filter="data")


# ---- checks of test files --------------------------------------------------------------------------


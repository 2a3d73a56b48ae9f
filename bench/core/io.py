"""Durable file writes, canonical hashing and seed derivation: the one implementation of each.

Every artifact (result files, job-store networks and test sets, make-c arrays, manifests,
reports) is written through `atomic_path`: to a temporary file beside the target, flushed to disk,
given the mode the user's umask asks for (``tempfile`` alone would leave 0600), then renamed over
the target, so a crash never leaves half a file under a final name and a failed write leaves no
temporary file behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import numbers
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["WriteFailed", "atomic_path", "atomic_write_text", "canonical_json", "canonical_sha256", "file_mode", "seed_for"]

# the domain of seed_for: changing it changes every corruption, make-c file and bootstrap draw
_SEED_DOMAIN = b"prunebench.corruptions.seed_for.v1"


def file_mode() -> int:
    """0666 less the process umask: the mode `open()` would give a new file (0644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class WriteFailed(OSError):
    """Writing a file failed; the message is one line that names the folder or file and says why."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_failure(exc: OSError, path: Path) -> WriteFailed:
    """One-line description of a failed write of `path` (out of space, permissions, not a folder)."""
    if isinstance(exc, WriteFailed):
        return exc
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        message = f"{path.parent}: out of disk space (or quota) while writing {path.name}; free space and rerun"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        message = f"{exc.filename or path}: permission denied ({exc.strerror})"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST) and not path.parent.is_dir():
        message = f"{path.parent}: not a folder (cannot write {path.name} into it)"
    else:
        message = f"{path}: cannot write ({exc.strerror or exc})"
    return WriteFailed(exc.errno or 0, message)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; on success it replaces `path` atomically.

    Any failure (a full disk included) removes the temporary file; OS errors come out as
    WriteFailed with a one-line message naming the folder or file.
    """
    path = Path(path)
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        temporary = Path(name)
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, file_mode())
        os.replace(temporary, path)
    except OSError as exc:
        raise write_failure(exc, path) from exc
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


MAX_NETWORK_BYTES = 4 << 30  # the largest network file read (a DeepLabV3-ResNet50 is ~170 MB)


class UnreadableFile(ValueError):
    """A file that is not a regular file, is larger than its cap, or cannot be read (one line)."""


def _kind(mode: int) -> str:
    return "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"


def read_capped(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of a regular file (or a link to one) of at most `max_bytes`; `what` names the kind
    of file in errors ("result file", "network file", ...). Anything else (a FIFO, /dev/zero, a
    directory, a sparse 20 GB file) is refused before it is read; the type is checked again on the
    opened descriptor (a file swapped in between is caught), which is opened non-blocking so that
    even then a FIFO never hangs. Raises UnreadableFile."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableFile(f"{path}: {_kind(mode)} (only regular files are read as {what}s)")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                raise UnreadableFile(f"{path}: {_kind(opened.st_mode)} (only regular files are read as {what}s)")
            if opened.st_size > max_bytes:
                raise UnreadableFile(f"{path}: larger than the {_size_text(max_bytes)} a {what} may hold")
            # what the file holds and one byte more, to see it grow: read(max_bytes + 1) would allocate
            # the whole cap up front (4 GiB per network file; refused under strict overcommit)
            data = handle.read(opened.st_size + 1)
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot read ({exc.strerror})") from exc
    if len(data) > opened.st_size:
        raise UnreadableFile(f"{path}: changed while it was read")
    return data


def _size_text(max_bytes: int) -> str:
    return f"{max_bytes // 2**20} MiB" if max_bytes >= 2**20 else f"{max_bytes:,} bytes"


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see atomic_path)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def canonical_sha256(value: Any) -> str:
    """sha256 (hex) of canonical_json(value)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _canonical(part: object) -> object:
    """Normalise a seed part to builtin types with a stable ``repr``."""
    if part is None or isinstance(part, bool):
        return part
    if isinstance(part, str):
        return str.__str__(part)
    if isinstance(part, bytes):
        return bytes(part)
    if isinstance(part, numbers.Integral):
        return int(part)
    if isinstance(part, numbers.Real):
        return float(part)
    if isinstance(part, (tuple, list)):
        return tuple(_canonical(p) for p in part)
    raise TypeError(
        "seed_for parts must be str, bytes, numbers, None or tuples/lists of them, "
        f"got {type(part).__name__}"
    )


def seed_for(*parts: object) -> int:
    """Stable 63-bit seed derived from ``parts`` with SHA-256 (never Python's salted ``hash``).

    Parts may be str, bytes, bool, integers, reals, None or (nested) tuples/lists of these;
    ``1``, ``1.0``, ``True`` and ``'1'`` give different seeds.  Example:
    ``seed_for(run_seed, "gaussian_noise", severity)``. The one seed derivation of the package:
    corruptions, make-c, the bootstrap and the similarity analysis all use it.
    """
    digest = hashlib.sha256(_SEED_DOMAIN + repr(_canonical(parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1

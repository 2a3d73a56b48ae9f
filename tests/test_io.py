"""bench.core.io: atomic writes with the umask's file mode, nothing left behind on failure; canonical hashes."""

import os
import stat

import pytest

from bench.core.io import atomic_path, atomic_write_text, canonical_json, canonical_sha256


@pytest.fixture
def umask():
    def set_umask(mask: int) -> None:
        os.umask(mask)

    before = os.umask(0o022)
    os.umask(before)
    yield set_umask
    os.umask(before)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_umask_default_mode(tmp_path, umask, mask, mode):
    umask(mask)
    path = tmp_path / "sub" / "result.json"
    atomic_write_text(path, "{}\n")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_text() == "{}\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk gone")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_canonical_hash_ignores_key_order_and_whitespace():
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert canonical_sha256({"b": 1, "a": 2}) == canonical_sha256({"a": 2, "b": 1})
    assert canonical_sha256({"a": 1}) != canonical_sha256({"a": 2})


def test_read_capped_allocates_what_the_file_holds_not_the_cap(tmp_path):
    """A 1 KiB file under a 1 GiB cap: reading it never reserves the cap (4 GiB per network file
    before, which a machine with strict overcommit refuses)."""
    import tracemalloc

    from bench.core.io import read_capped

    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 1024)
    tracemalloc.start()
    try:
        assert read_capped(small, 2**30, "test file") == b"x" * 1024
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20

"""Job-cache artifacts that are not regular files, or are far too large, are reported and recomputed,
never read: a marker that is /dev/zero or a FIFO, a sparse network file of 20 GB."""

from __future__ import annotations

import os

from torch import nn

from bench.pipeline.store import Store


def _stored(tmp_path) -> Store:
    store = Store(tmp_path / "cache")
    store.save_network("steps", "k", nn.Linear(3, 2), {"pruner": "wt"})
    assert store.done("steps", "k")
    return store


def test_a_marker_that_is_dev_zero_or_a_fifo_is_discarded_not_read(tmp_path, caplog):
    for make in (lambda p: p.symlink_to("/dev/zero"), os.mkfifo):
        store = _stored(tmp_path / make.__name__)
        marker = store.path("steps", "k", ".json")
        marker.unlink()
        make(marker)
        assert not store.done("steps", "k")  # returns at once: nothing blocks, nothing is read
        assert "only regular files are read as job records" in caplog.text
        assert not marker.exists() and not marker.is_symlink()


def test_a_huge_sparse_network_file_is_discarded_not_read(tmp_path, caplog, monkeypatch):
    import bench.pipeline.store

    store = _stored(tmp_path)
    monkeypatch.setattr(bench.pipeline.store, "MAX_NETWORK_BYTES", 1 << 20)  # 20 GB files are slow to make; the cap is what counts
    with open(store.network_path("steps", "k"), "r+b") as handle:
        handle.truncate(2 << 20)
    assert not store.done("steps", "k")
    assert "larger than the 1 MiB a network file may hold" in caplog.text
    assert not store.network_path("steps", "k").exists()  # deleted: the next run recomputes it

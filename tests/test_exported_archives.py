"""torch.export archives from a result never run code here (bench.pipeline.exported.check_archive), and a
network is sized by every tensor it holds.

The hostile archives (tests/fixtures/hostile/archives/, made by its make_archives.py) each carry code
that torch.export.load runs: a marker file `PWNED-<name>` appears in the working directory when it
does. First a control shows that plain torch runs it; then prunebench must refuse each archive with
one line naming why, and no marker may appear."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.pipeline.exported import export_network, load_exported, network_size
from bench.results.checkpoints import NetworkFileError

ARCHIVES = Path(__file__).parent / "fixtures" / "hostile" / "archives"
CODE = {
    "pickled-weight": "is stored pickled",
    "pickled-sample-inputs": "sample inputs need a full unpickler",
    "guards-code": "carries guards",
    "sympy-expression": "is not plain arithmetic",
}

_PLAIN_TORCH = """
import sys, torch
for name in sys.argv[1:]:
    try:
        torch.export.load(name).module()(torch.randn(2, 1, 8, 8))
    except Exception:
        pass
"""


@pytest.mark.slow
def test_plain_torch_runs_the_code_each_hostile_archive_brings(tmp_path):
    paths = [str(ARCHIVES / f"{name}.pt2") for name in CODE]
    subprocess.run([sys.executable, "-c", _PLAIN_TORCH, *paths], cwd=tmp_path, capture_output=True, check=True)
    assert sorted(p.name for p in tmp_path.glob("PWNED-*")) == sorted(f"PWNED-{name}" for name in CODE)


@pytest.mark.parametrize("name", sorted(CODE))
def test_prunebench_refuses_the_archive_and_no_code_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NetworkFileError) as raised:
        network = load_exported(ARCHIVES / f"{name}.pt2")
        network(torch.randn(2, 1, 8, 8))
    message = str(raised.value)
    assert "refused" in message and CODE[name] in message and "\n" not in message
    assert not list(tmp_path.glob("PWNED-*"))


def _tensor_entries(module: nn.Module) -> int:
    return sum(t.numel() for t in (*module.parameters(), *module.buffers()))


def test_an_honest_archive_loads_and_is_sized_by_every_tensor_it_holds(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x = torch.randn(5, 1, 8, 8)
    sha = export_network(model, x[:2], tmp_path / "net.pt2")
    network = load_exported(tmp_path / "net.pt2", sha)
    assert torch.allclose(network(x), model(x), atol=1e-6)  # any batch size: the batch is dynamic
    # parameters, and the BatchNorm statistics the eval-mode graph reads
    assert network_size(network) == _tensor_entries(model) == 40 + 8 + 9 + 15


def test_weights_held_as_buffers_are_counted(tmp_path):
    network = load_exported(ARCHIVES / "buffer-weights.pt2")
    assert sum(p.numel() for p in network.parameters()) <= 8  # a parameter count sees only BatchNorm
    # conv 4x1x3x3 + 4, BatchNorm 4 + 4 (+ 9 statistics), Linear 3x4 + 3: all of it counts
    assert network_size(network) == 36 + 4 + 8 + 9 + 12 + 3

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# bench run/eval default to one worker process per core; tests patch in-process state (pinned
# checksums, fault injection) that spawned workers would not see, and tiny runs do not repay a
# worker's start-up. Tests of the process pool pass --workers explicitly.
os.environ.setdefault("PRUNEBENCH_WORKERS", "1")

import copy

import pytest
import torch

from bench.data import DataBundle, load_digits
from bench.data.recipes import DIGITS_TRAIN
from bench.models import create_model
from bench.pipeline.training import train

# Under pytest-xdist (pyproject's addopts: two worker processes) each worker takes one intra-op
# thread, so the two workers never oversubscribe two cores; alone, up to two threads.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread, for tests of many small ops: on a busy 2-core machine a second thread
    makes them up to 100x slower (OpenMP spin-waits). Results do not depend on it.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits() -> DataBundle:
    return load_digits(seed=0)


def trained_on_digits(name: str, data: DataBundle, epochs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    train(model, data, DIGITS_TRAIN.model_copy(update={"epochs": epochs}), seed=0, progress=False)
    return model


@pytest.fixture(scope="session")
def _trained_digits_cnn(digits: DataBundle) -> torch.nn.Module:
    return trained_on_digits("digits_cnn", digits, epochs=6)


@pytest.fixture
def digits_cnn(_trained_digits_cnn: torch.nn.Module) -> torch.nn.Module:
    """A briefly trained small CNN; each test gets its own copy."""
    return copy.deepcopy(_trained_digits_cnn)


@pytest.fixture
def resnet20() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20_cifar", num_classes=10).eval()


@pytest.fixture(scope="session")
def _trained_resnet20(digits: DataBundle) -> torch.nn.Module:
    return trained_on_digits("resnet20_cifar", digits, epochs=1)


@pytest.fixture
def trained_resnet20(_trained_resnet20: torch.nn.Module) -> torch.nn.Module:
    """resnet20_cifar after one epoch on digits (BN statistics and biases no longer at init)."""
    return copy.deepcopy(_trained_resnet20)

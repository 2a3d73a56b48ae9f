import os
from pathlib import Path

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

# Modules whose module-scoped fixture is a real run (training, pruning, evaluating): all their tests go
# to one xdist worker, so the fixture runs once, not once per worker that gets one of them.
ONE_WORKER_MODULES = frozenset({"test_analysis", "test_cli", "test_compress", "test_eval_external", "test_jobs",
                                "test_plan", "test_portable_testsets", "test_verify"})


def pytest_xdist_make_scheduler(config, log):
    """xdist's load-by-scope scheduling where a scope is a module of ONE_WORKER_MODULES, else a single
    test. (`--dist loadgroup` would say this with marks, but xdist 3.8 cannot rename the node ids of
    pytest 9, so its groups are silently ignored.) Scopes with the most tests start first."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if Path(module).stem in ONE_WORKER_MODULES else nodeid

    return ModuleFixtureScheduling(config, log)


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

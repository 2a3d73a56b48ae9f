"""What `bench verify` found about one result file (`Verification`: every disagreement as one line,
the checks it ran) and the report it writes beside the file.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from bench.results.schema import PARENT, NetworkResult, RunResult, VerifyReport


def label(net: NetworkResult) -> str:
    return PARENT if net.pruner == PARENT else f"{net.pruner} step {net.step}"


@dataclass
class Verification:
    """What `verify_result` found: every disagreement as one line, and the checks it ran."""

    result_path: Path
    result: RunResult
    disagreements: list[str] = field(default_factory=list)
    networks_checked: int = 0
    hits_compared: int = 0
    reproduced: list[str] = field(default_factory=list)
    ties: list[str] = field(default_factory=list)
    seconds: float = 0.0
    sample: int | None = None  # --sample K: the (network, test set) pairs compared; None: all
    device_name: str | None = None  # what re-evaluated: the GPU's name or the CPU (bench.core.devices)

    @property
    def passed(self) -> bool:
        return not self.disagreements

    def fail(self, where: str, what: str) -> None:
        self.disagreements.append(f"{where}: {what}")

    def report(self) -> VerifyReport:
        return VerifyReport(
            result=self.result_path.name,
            integrity=self.result.integrity,
            passed=self.passed,
            networks_checked=self.networks_checked,
            hits_compared=self.hits_compared,
            sample=self.sample,
            reproduced=self.reproduced,
            disagreements=self.disagreements,
            ties=self.ties,
            prunebench=version("prunebench"),
            platform=current_platform(self.result),
            device_name=self.device_name,
            verified_at=datetime.now(timezone.utc),
            seconds=self.seconds,
        )


def current_platform(result: RunResult) -> str:
    """This machine in the words `bench run` records (platform and thread count, executor aside)."""
    return f"{platform.platform()} ({result.config.threads} threads per job"



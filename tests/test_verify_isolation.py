"""`bench verify` imports no plugin unless asked, and nothing a plugin does when imported changes a
verdict: a hostile pruner package that, at import, makes every comparison of bench.pipeline.verify pass
(and leaves a marker file) is imported only by --reproduce, in a process of its own, so a forged
file verified in the same command still fails."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from test_plugin import PLUGIN_SOURCE, PYPROJECT, bench_executable, install_package
from test_verify import flip_first_hit, rewrite

from bench.results import networks_folder

HOSTILE_SOURCE = PLUGIN_SOURCE + '''
import os
import bench.pipeline.verify

open(os.path.join(os.environ["PWNED_DIR"], "PWNED-plugin"), "w").close()
bench.pipeline.verify._hit_differences = lambda *args, **kwargs: None  # every re-evaluated hit "agrees"
bench.pipeline.verify.Verification.fail = lambda self, where, what: None  # and nothing is ever reported
'''


def tiny_run(env: dict[str, str], out, pruner: str, suite: str, *options: str):
    """`bench run` of one pruner at one ratio on digits, in a process that sees the installed plugin;
    returns its result file."""
    run = subprocess.run([bench_executable(), "run", "--pruner", pruner, "--suite", suite, "--ratios", "0.5",
                          "--epochs", "2", "--retrain-epochs", "1", "--threads", "1", "--workers", "1",
                          "--out", str(out), "--quiet", *options], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    (result,) = out.glob("*.json")
    return result


@pytest.mark.slow
def test_a_plugin_imported_by_reproduce_cannot_change_another_files_verdict(tmp_path):
    _, env = install_package(tmp_path, PYPROJECT, {"layerwise_demo": HOSTILE_SOURCE})
    env["PWNED_DIR"] = str(tmp_path)
    plugin_run = tiny_run(env, tmp_path / "results", "layerwise", "noise", "--severities", "1")
    marker = tmp_path / "PWNED-plugin"
    marker.unlink()  # `bench run` imported the pruner it ran; from here on only verify runs

    forged = tmp_path / "forged" / plugin_run.name
    forged.parent.mkdir()
    shutil.copy(plugin_run, forged)
    shutil.copytree(networks_folder(plugin_run), networks_folder(forged))
    rewrite(forged, flip_first_hit)

    def verify(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([bench_executable(), "verify", str(plugin_run), str(forged), "--no-report", "--quiet",
                               "--workers", "1", *options], env=env, capture_output=True, text=True, timeout=600)

    plain = verify()
    assert plain.returncode == 1 and not marker.exists()  # no plugin was imported at all
    assert f"{forged.name}: FAILED (1 disagreements)" in plain.stdout

    reproduced = verify("--reproduce", "1")
    assert marker.exists()  # the plugin ran, in the reproducing process
    lines = reproduced.stdout.splitlines()
    assert f"{plugin_run.name}: reproduced layerwise step 1: bitwise identical" in lines
    assert reproduced.returncode == 1 and f"{forged.name}: FAILED (1 disagreements)" in reproduced.stdout


@pytest.mark.slow
def test_without_plugins_a_result_that_needs_a_plugin_suite_is_refused_in_one_line(tmp_path):
    suite_source = '''
from bench.api import Suite, TestDistribution

class Mirror(Suite):
    name = "mirror"
    description = "the clean test set, mirrored"

    def distributions(self, data, seed, selection=None):
        from bench.data import ImageSet
        return [TestDistribution(name="mirror/flip", suite=self.name,
                                 images=ImageSet(data.test.images.flip(-1).contiguous(), data.test.labels))]
'''
    pyproject = PYPROJECT.replace('[project.entry-points."prunebench.pruners"]\nlayerwise = "layerwise_demo:LayerwiseMagnitude"',
                                  '[project.entry-points."prunebench.suites"]\nmirror = "layerwise_demo:Mirror"')
    _, env = install_package(tmp_path, pyproject, {"layerwise_demo": suite_source})
    result = tiny_run(env, tmp_path / "results", "wt", "mirror")
    assert json.loads(result.read_text())["config"]["suites"] == ["mirror"]
    refused = subprocess.run([bench_executable(), "verify", str(result), "--quiet"], env=env, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode != 0
    assert "comes from the plugin package prunebench-layerwise-demo" in refused.stderr
    assert "--plugins" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    allowed = subprocess.run([bench_executable(), "verify", str(result), "--quiet", "--plugins"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "verified" in allowed.stdout

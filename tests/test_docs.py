"""The documentation site (mkdocs.yml, docs/): it builds with --strict (no broken link, anchor or
include, no docstring the API reference cannot render), and its generated command-line reference
holds every command of the parser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_site_builds_strictly_with_the_generated_references(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "WARNING" not in built.stderr, built.stderr[-3000:]
    cli = (tmp_path / "reference" / "cli" / "index.html").read_text()
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices  # type: ignore[attr-defined]
    assert all(f"bench {name}" in cli for name in commands), sorted(commands)
    api = (tmp_path / "reference" / "api" / "index.html").read_text()
    assert all(name in api for name in ("evaluate", "load_dataset", "load_network", "potentials", "Pruner"))


def test_the_readme_stays_a_front_page_that_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 100
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name != "index.md")
    assert all(f"docs/{page}" in readme for page in pages), [p for p in pages if f"docs/{p}" not in readme]


def test_the_pruner_contract_has_one_copy():
    """The contract is `Pruner`'s docstring; docs/plugins.md renders it rather than restating it, and
    the README and bench.api point to it (issue 24, item 7)."""
    from bench import api
    from bench.pruning import Pruner

    plugins = (ROOT / "docs" / "plugins.md").read_text()
    assert "\n::: bench.pruning.Pruner\n" in plugins
    terms = ["**Name**", "**Options**", "**Masks**", "**`plan(model, ctx)`**", "**`reconstruct(model, masks, ctx)`**"]
    assert all(term in (Pruner.__doc__ or "") for term in terms)
    assert not any(term in plugins for term in terms), "docs/plugins.md restates the contract"
    assert "`bench.api.Pruner`" in (ROOT / "README.md").read_text()
    assert "`Pruner`'s docstring" in (api.__doc__ or "")

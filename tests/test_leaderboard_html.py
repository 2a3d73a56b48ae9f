"""The HTML board in a real headless browser (Debian's chromium driven by Playwright): it loads from
file:// without console errors, sorting by robust P reorders the rows, the filters hide rows and
sections, each row links to its result files, and a screenshot goes to the CI artifacts folder."""

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from test_uncertainty import GAP, NO_GAP, make_run

from bench.cli import main
from bench.results import save_result
from leaderboard.rows import load_board

ROOT = Path(__file__).resolve().parents[1]
# CI keeps this folder as build artifacts; /build/ is gitignored
ARTIFACTS = Path(os.environ.get("PRUNEBENCH_ARTIFACTS", ROOT / "build" / "ci-artifacts"))
ROBUST = {"clean": [0, 0, 0], "shifted": [0, 0, 0]}  # never breaks: robust P = the last ratio


def chromium() -> str:
    found = os.environ.get("PRUNEBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium: apt-get update && apt-get install -y chromium")
    return found


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    """A board of three pruners x two seeds, written by `bench leaderboard --html --json`."""
    folder = tmp_path_factory.mktemp("board")
    results = folder / "results"
    results.mkdir()
    for seed in range(2):
        save_result(make_run({"wt": NO_GAP["wt"], "ft": GAP["wt"], "sipp": ROBUST}, seed=seed),
                    results / f"run-s{seed}.json")
    html, document = folder / "site" / "index.html", folder / "site" / "board.json"
    html.parent.mkdir()
    assert main(["leaderboard", str(results), "--html", str(html), "--json", str(document)]) == 0
    return html, load_board(document)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="no Playwright: pip install -e '.[test]'")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium())
        yield launched
        launched.close()


def pruner_column(page) -> list[str]:
    return page.eval_on_selector_all("table.board tbody tr", "rows => rows.map(r => r.cells[1].textContent)")


@pytest.mark.slow
def test_the_page_sorts_filters_links_and_loads_without_console_errors(page_file, browser):
    html, board = page_file
    rows = board.protocols[0].rows
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(html.as_uri())

    ranked = [row.pruner for row in rows]
    assert pruner_column(page) == ranked
    by_robust = [row.pruner for row in sorted(rows, key=lambda r: r.robust_p.value)]
    assert by_robust != ranked
    page.get_by_role("button", name="robust P mean (%)").click()
    assert pruner_column(page) == by_robust  # ascending first
    page.get_by_role("button", name="robust P mean (%)").click()
    assert pruner_column(page) == by_robust[::-1]

    hrefs = page.eval_on_selector_all("table.board a", "links => links.map(a => a.href)")
    assert sorted(Path(unquote(urlparse(h).path)).name for h in hrefs) == sorted(f for r in rows for f in r.files)
    assert all(Path(unquote(urlparse(h).path)).is_file() for h in hrefs)

    page.fill("#pruner-filter", "sipp")
    assert page.eval_on_selector_all("table.board tbody tr:not([hidden])", "rows => rows.length") == 1
    page.fill("#pruner-filter", "")
    page.select_option("#suite-filter", "noise")
    assert page.is_visible("section.protocol")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "leaderboard.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    assert errors == []
    page.close()

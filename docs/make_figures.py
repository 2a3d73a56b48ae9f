"""Regenerate the README's pictures from the committed results, or check that they are current.

* ``docs/figures/accuracy_noise.png``: `bench plot`'s accuracy figure, noise family, of the
  Fashion-MNIST protocol (the committed results' powered track);
* ``docs/leaderboard.png``: a screenshot of ``leaderboard/index.html`` in headless chromium
  (Playwright, as tests/test_leaderboard_html.py drives it).

Pixels differ between machines (fonts, chromium builds), so staleness is decided by inputs, not
bytes: ``docs/figures.json`` records for each picture the sha256 of what it is drawn from (the
result files' integrity digests and the plotting code; the HTML page). ``--check`` recomputes
them and names each stale picture with this command (the test suite runs it, as CI checks
LEADERBOARD.md).

Run: .venv/bin/python docs/make_figures.py [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "docs" / "figures.json"
ACCURACY = "docs/figures/accuracy_noise.png"
SCREENSHOT = "docs/leaderboard.png"
ACCURACY_DATASET = "fashion-mnist"
PLOT_CODE = ("bench/reports/plots.py", "bench/reports/figures.py", "bench/results/uncertainty.py")
VIEWPORT = {"width": 1400, "height": 900}
COMMAND = ".venv/bin/python docs/make_figures.py"
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the project's packages, once


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _accuracy_results() -> list:
    from bench.results import find_result_files, load_results

    kept, errors, _ = load_results(find_result_files(ROOT / "leaderboard" / "results"))
    if errors:
        raise SystemExit("invalid committed results: " + "; ".join(errors))
    return [result for _, result in kept if result.config.dataset == ACCURACY_DATASET]


def input_digests() -> dict[str, str]:
    """Picture -> sha256 of what it is drawn from."""
    results = sorted(result.integrity for result in _accuracy_results())
    code = [(ROOT / name).read_bytes() for name in PLOT_CODE]
    return {
        ACCURACY: _sha256(*(r.encode() for r in results), *code),
        SCREENSHOT: _sha256((ROOT / "leaderboard" / "index.html").read_bytes(), json.dumps(VIEWPORT).encode()),
    }


def draw_accuracy(path: Path) -> None:
    from bench.reports.figures import PNG_DPI
    from bench.reports.plots import result_figures

    fig = result_figures(_accuracy_results())["accuracy-noise"]
    fig.savefig(path, format="png", dpi=PNG_DPI)


def take_screenshot(path: Path) -> None:
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: apt-get update && apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto((ROOT / "leaderboard" / "index.html").as_uri())
        page.screenshot(path=str(path), full_page=False)
        browser.close()


def stale() -> list[str]:
    """The pictures whose inputs changed since they were drawn (or that are missing)."""
    recorded = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    return [name for name, digest in input_digests().items()
            if recorded.get(name) != digest or not (ROOT / name).is_file()]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only name the stale pictures (exit 1 if any)")
    args = parser.parse_args()
    if args.check:
        outdated = stale()
        for name in outdated:
            print(f"{name}: stale, drawn from other inputs (regenerate: {COMMAND})", file=sys.stderr)
        return 1 if outdated else 0
    draw_accuracy(ROOT / ACCURACY)
    take_screenshot(ROOT / SCREENSHOT)
    digests = input_digests()
    MANIFEST.write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n")
    for name in digests:
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Names from result files (file names, pruner labels) never reach a terminal or the HTML page with
their control characters: an ESC sequence cannot fake a "verified" line, a bidi override (U+202E)
cannot reverse a name on the page."""

from __future__ import annotations

import shutil

import pytest
from test_uncertainty import GAP, NO_GAP, make_run
from test_verify import finished, small_config  # noqa: F401 (the module fixture: a real run with networks)

from bench.cli import main
from bench.results import networks_folder, save_result

HOSTILE = "wt\x1b[2K\r\u202eevil\x07"


def test_the_html_page_shows_control_characters_as_code_points(tmp_path):
    run = make_run({HOSTILE: NO_GAP["wt"], "ft": GAP["wt"]})
    save_result(run, tmp_path / "results" / "run.json")
    page = tmp_path / "board.html"
    assert main(["leaderboard", str(tmp_path / "results"), "-o", str(tmp_path / "board.md"), "--html", str(page)]) == 0
    html = page.read_text()
    assert not any(c in html for c in "\x1b\r\u202e\x07")
    assert "\\u001b" in html and "\\u202e" in html and "\\u0007" in html


@pytest.mark.slow
def test_verify_prints_a_hostile_file_name_escaped(finished, tmp_path, capsys):  # noqa: F811
    hostile = tmp_path / "x\x1b[2K\r\u202eok.json"
    shutil.copy(finished, hostile)
    shutil.copytree(networks_folder(finished), networks_folder(hostile))
    assert main(["verify", str(hostile), "--quiet", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x1b\r\u202e")
    assert "\\x1b[2K\\r\\u202eok.json: verified" in out

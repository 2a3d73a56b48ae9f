import json
import re

import pytest
from pydantic import ValidationError
from test_uncertainty import GAP, NO_GAP, make_run

from bench.cli import main
from bench.results import load_results, save_result
from bench.results.schema import PrunerIdentity
from leaderboard.build import build_leaderboard, render_leaderboard
from leaderboard.html import render_html
from leaderboard.publish import render_json
from leaderboard.rows import build_board, load_board

PRUNERS = {"wt": NO_GAP["wt"], "ft": GAP["wt"]}
ROBUST = {"clean": [0, 0, 0], "shifted": [0, 0, 0]}  # never fails
NUMBER = re.compile(r"-?\d+\.\d")
INTERVAL = re.compile(r"\d+\.\d \[-?\d+\.\d, -?\d+\.\d\]")


def separators(line: str) -> int:
    """Cell separators of a markdown table row: pipes not escaped by an odd run of backslashes."""
    return sum(1 for m in re.finditer(r"(\\*)\|", line) if len(m.group(1)) % 2 == 0)


def tables(board: str) -> list[list[str]]:
    blocks, current = [], []
    for line in board.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    return blocks


def test_same_files_give_byte_identical_markdown(tmp_path):
    runs = [make_run(PRUNERS, seed=s) for s in range(2)]
    for i, run in enumerate(runs):
        save_result(run, tmp_path / f"run{i}.json")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "step.json").write_text("{}")  # caches are not result files
    board = build_leaderboard(tmp_path)
    assert board == build_leaderboard(tmp_path)
    assert board == render_leaderboard(runs[::-1], breakdown=True, verified=set())
    assert "### Suite noise: P per severity" in board


def test_intervals_and_p_values_are_shown():
    board = render_leaderboard([make_run(PRUNERS, seed=s) for s in range(2)])
    ft = next(line for line in board.splitlines() if line.startswith("| 2 ") and "ft" in line)
    assert len(INTERVAL.findall(ft)) == 3  # nominal, robust mean, gap
    assert "90.0 [90.0, 90.0]" in ft and "40.0 [40.0, 40.0], p = 0.002" in ft
    assert "95 % bias-corrected percentile (BC) bootstrap intervals (Efron 1981; they always contain their point) over 1000 resamples" in board


def test_files_without_per_example_hits_fall_back_to_mean_and_std():
    run = make_run(PRUNERS)
    bare = run.model_copy(update={"networks": [n.model_copy(update={"hits": {}}) for n in run.networks]})
    board = render_leaderboard([bare])
    assert not INTERVAL.search(board) and "no bootstrap intervals" in board


def test_hostile_names_render_inert_in_every_table():
    hostile = "evil|name\n# header `code` <script>alert(1)</script> $x$ [l](u) \x1b[31m\u202e"
    shifted = [("x/1", "blur|x\n<b>`y`", 1), ("x/2", "blur|x\n<b>`y`", 2), ("x/3", "zoom_blur", 1)]
    run = make_run({hostile: GAP["wt"], "wt": NO_GAP["wt"]}, model="m|x\n## y", suite="su|ite<i>", shifted=shifted)
    board = render_leaderboard([run], breakdown=True)

    assert "<script>" not in board and "<b>" not in board and "<i>" not in board and "\x1b" not in board
    assert not any(line.startswith("# header") or line.startswith("## y") for line in board.splitlines())
    assert r"evil\|name \# header \`code\` \<script\>" in board and r"\\u001b\[31m\\u202e" in board
    assert "## digits · m\\|x \\#\\# y · suites: su\\|ite\\<i\\>" in board
    blocks = tables(board)
    # main table, pruner metadata, P per corruption, P per severity: header, rule, 2 rows each
    assert [len(block) for block in blocks] == [2 + 2] * 4
    for block in blocks:
        assert len({separators(line) for line in block}) == 1, block
    assert separators(blocks[2][0]) == 5  # pruner, 2 corruptions, mean -> 4 columns
    assert r"blur\|x \<b\>\`y\`" in blocks[2][0]


def test_different_protocols_get_different_tables():
    first = make_run({"wt": GAP["wt"]})
    second = make_run({"ft": GAP["wt"]}, ratios=(0.5, 0.7, 0.9))
    board = render_leaderboard([first, second])
    protocols = re.findall(r"Protocol `([0-9a-f]{12})`", board)
    assert sorted(protocols) == sorted({first.config.protocol_hash(), second.config.protocol_hash()})
    aggregate = [block for block in tables(board) if block[0].startswith("| rank")]
    assert len(aggregate) == 2
    assert sorted(block[2].split("|")[2].strip() for block in aggregate) == ["ft", "wt"]


def test_each_bad_file_is_named_in_one_line(tmp_path):
    good = save_result(make_run(PRUNERS), tmp_path / "good.json")
    edited = save_result(make_run(PRUNERS), tmp_path / "edited.json")
    raw = json.loads(edited.read_text())
    raw["networks"][1]["prune_ratio"] = 0.95
    edited.write_text(json.dumps(raw))
    truncated = tmp_path / "truncated.json"
    truncated.write_text(good.read_text()[:100])

    assert load_results([good]).errors == []
    errors = load_results([good, edited, truncated, tmp_path / "missing.json"]).errors
    assert len(errors) == 3
    assert "edited.json" in errors[0] and "integrity check failed" in errors[0]
    assert "truncated.json" in errors[1] and "not valid JSON" in errors[1]
    assert "missing.json" in errors[2] and "cannot read" in errors[2]


def numbers(text: str) -> list[float]:
    return [float(x) for x in NUMBER.findall(text)]


def percent(*values: float | None) -> list[float]:
    return [round(100 * v, 1) + 0.0 for v in values if v is not None]


def test_json_holds_the_markdowns_numbers_row_by_row(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    for seed in range(2):
        save_result(make_run({**PRUNERS, "sipp": ROBUST}, seed=seed), results / f"s{seed}.json")
    assert main(["leaderboard", str(results), "-o", str(tmp_path / "board.md"), "--json", str(tmp_path / "b.json")]) == 0
    markdown = (tmp_path / "board.md").read_text()
    document = json.loads((tmp_path / "b.json").read_text())  # the raw document, not the model
    assert document["format"] == "prunebench-leaderboard" and document["schema_version"] == 1
    [protocol] = document["protocols"]
    main_rows = next(block for block in tables(markdown) if block[0].startswith("| rank"))[2:]
    assert len(main_rows) == len(protocol["rows"]) == 3
    for line, row in zip(main_rows, protocol["rows"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == str(row["rank"]) and cells[1] == row["pruner"] and cells[2] == str(len(row["seeds"]))
        for text, key in zip(cells[3:9], ["parent_clean_accuracy", "parent_shifted_accuracy", "nominal_p", "robust_p",
                                          "gap", "first_failure"]):
            value = row[key]
            expected = [] if value is None else percent(value["value"], value["low"], value["high"], value["std"])
            assert numbers(text.split(", p = ")[0]) == expected, (key, text)
        failing = [len(f["distributions"]) for f in row["first_failure_by_seed"] if f["ratio"] is not None]
        assert cells[8].endswith(f", {round(sum(failing) / len(failing))} sets") if failing else cells[8] == "none"
        if row["gap_p_value"] is not None:
            assert cells[7].endswith(f"p = {row['gap_p_value']:.3f}")
        sampled = f" + {row['sampled']} sampled" if row["sampled"] else ""
        assert cells[9] == f"{row['verified']}/{len(row['seeds'])}{sampled}"
    [suite] = protocol["breakdowns"]
    by_corruption = next(block for block in tables(markdown) if "gaussian\\_noise" in block[0])[2:]
    for line, row in zip(by_corruption, suite["rows"]):
        assert numbers(line) == percent(*row["by_corruption"], row["mean"])
        assert row["cells"] == [row["by_severity"]]  # one corruption: its severities are the severity means


def test_first_failure_is_the_smallest_ratio_where_a_shifted_set_fails():
    board = build_board([make_run({**PRUNERS, "sipp": ROBUST}, seed=s) for s in range(2)])
    rows = {row.pruner: row for row in board.protocols[0].rows}
    assert rows["ft"].first_failure.value == 0.8  # GAP: loses 40 of 400 shifted images from 0.8 on
    assert rows["wt"].first_failure.value == 0.9  # NO_GAP: 2 images (within delta) at 0.8, 40 at 0.9
    assert rows["sipp"].first_failure is None
    assert [f.distributions for f in rows["ft"].first_failure_by_seed] == [
        ["noise/gaussian_noise/1", "noise/gaussian_noise/2"]] * 2
    markdown = render_leaderboard([make_run({**PRUNERS, "sipp": ROBUST}, seed=s) for s in range(2)])
    assert re.search(r"\| sipp .*\| none +\|", markdown) and re.search(r"\| ft .*\| 80\.0 ± 0\.0, 2 sets +\|", markdown)


def test_pruner_metadata_is_shown_with_safe_links_only():
    run = make_run(PRUNERS)
    identity = {"distribution": "prunebench", "version": "0.2", "source_sha256": "0" * 64}
    pruners = {
        "wt": PrunerIdentity(name="wt", **identity, display_name="Weight Thresholding", paper="Han et al. 2015",
                             code_url="https://github.com/lucaslie/torchprune", options={"scope": "global"}),
        "ft": PrunerIdentity(name="ft", **identity, paper="javascript:alert(1)", code_url="https://x.org/a b"),
    }
    run = run.model_copy(update={"provenance": run.provenance.model_copy(update={"pruners": pruners})})
    board = build_board([run])
    markdown = render_leaderboard([run])
    wt = next(line for line in markdown.splitlines() if "Weight Thresholding" in line)
    assert "Han et al. 2015" in wt and "[code](https://github.com/lucaslie/torchprune)" in wt
    assert "prunebench 0.2" in wt and '\\{"scope": "global"\\}' in wt
    ft = next(line for line in markdown.splitlines() if "javascript" in line)
    assert "](" not in ft and ft.count("–") == 2  # no display name, no options; unsafe URLs stay text
    page = render_html(board)
    assert '<a href="https://github.com/lucaslie/torchprune">' in page and 'href="javascript' not in page


def test_html_escapes_hostile_names():
    hostile = "<script>alert(1)</script>\"'"
    run = make_run({hostile: GAP["wt"]}, suite="</style><img src=x onerror=alert(1)>")
    page = render_html(build_board([run], files=["a b/<x>.json"]), "../results/")
    assert "<script>alert" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="../results/a%20b/%3Cx%3E.json"' in page


def test_the_json_document_is_validated_on_read(tmp_path):
    path = tmp_path / "board.json"
    board = build_board([make_run(PRUNERS)])
    path.write_text(render_json(board))
    assert load_board(path) == board  # every float survives the round trip
    document = json.loads(path.read_text())
    for broken in ({**document, "schema_version": 2}, {**document, "extra": 1}, {**document, "protocols": [{}]}):
        path.write_text(json.dumps(broken))
        with pytest.raises(ValidationError):
            load_board(path)


def test_check_names_each_stale_output(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    save_result(make_run(PRUNERS), results / "run.json")
    outputs = ["-o", str(tmp_path / "L.md"), "--json", str(tmp_path / "l.json"), "--html", str(tmp_path / "i.html")]
    assert main(["leaderboard", str(results), "--check", *outputs]) == 1  # nothing written yet
    assert main(["leaderboard", str(results), *outputs]) == 0
    capsys.readouterr()
    assert main(["leaderboard", str(results), "--check", *outputs]) == 0
    assert "3 of 3 outputs up to date" in capsys.readouterr().out
    html = (tmp_path / "i.html").read_text()
    (tmp_path / "i.html").write_text(html.replace("<td", "<td data-x", 1))
    save_result(make_run(PRUNERS, seed=1), results / "run1.json")  # the board changes: every output is stale
    assert main(["leaderboard", str(results), "--check", *outputs]) == 1
    stale = [line.split(":")[0] for line in capsys.readouterr().err.splitlines() if "stale" in line]
    assert stale == [str(tmp_path / name) for name in ("L.md", "l.json", "i.html")]


def test_the_html_notes_show_code_not_backticks_and_the_heatmaps_their_colour_scale():
    run = make_run({"wt": NO_GAP["wt"], "ft": GAP["wt"]})
    page = render_html(build_board([run], verified=set()))
    notes = page[page.index('<ul class="note">'):page.index("</ul>")]
    assert "`" not in notes and "<code>bench verify</code>" in notes
    legend = page[page.index('class="note heat-legend"'):]
    legend = legend[:legend.index("</p>")]
    swatches = legend.count('class="swatch"')
    assert swatches == 11 and ">0</span>" in legend and ">100</span>" in legend
    assert "background:#440154" in legend and "background:#fde725" in legend  # viridis from 0 to 100 %

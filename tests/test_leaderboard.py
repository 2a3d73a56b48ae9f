import json
import re

from test_uncertainty import GAP, NO_GAP, make_run

from bench.results import save_result
from leaderboard.build import build_leaderboard, render_leaderboard, validate_files

PRUNERS = {"wt": NO_GAP["wt"], "ft": GAP["wt"]}
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
    assert "### Suite noise: P per corruption and severity" in board


def test_intervals_and_p_values_are_shown():
    board = render_leaderboard([make_run(PRUNERS, seed=s) for s in range(2)])
    ft = next(line for line in board.splitlines() if line.startswith("| 2 ") and "ft" in line)
    assert len(INTERVAL.findall(ft)) == 3  # nominal, robust mean, gap
    assert "90.0 [90.0, 90.0]" in ft and "40.0 [40.0, 40.0], p = 0.002" in ft
    assert "95 % bootstrap percentile intervals over 1000 resamples" in board


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
    assert [len(block) for block in blocks] == [2 + 2, 2 + 2, 2 + 2 * 2]  # header, rule, rows
    for block in blocks:
        assert len({separators(line) for line in block}) == 1, block
    assert separators(blocks[1][0]) == 5  # pruner, 2 corruptions, mean -> 4 columns
    assert r"blur\|x \<b\>\`y\`" in blocks[1][0]


def test_different_protocols_get_different_tables():
    first = make_run({"wt": GAP["wt"]})
    second = make_run({"ft": GAP["wt"]}, ratios=(0.5, 0.7, 0.9))
    board = render_leaderboard([first, second])
    protocols = re.findall(r"Protocol `([0-9a-f]{12})`", board)
    assert sorted(protocols) == sorted({first.config.protocol_hash(), second.config.protocol_hash()})
    aggregate = [block for block in tables(board)]
    assert len(aggregate) == 2
    assert sorted(block[2].split("|")[2].strip() for block in aggregate) == ["ft", "wt"]


def test_validate_files_names_each_bad_file(tmp_path):
    good = save_result(make_run(PRUNERS), tmp_path / "good.json")
    edited = save_result(make_run(PRUNERS), tmp_path / "edited.json")
    raw = json.loads(edited.read_text())
    raw["networks"][1]["prune_ratio"] = 0.95
    edited.write_text(json.dumps(raw))
    truncated = tmp_path / "truncated.json"
    truncated.write_text(good.read_text()[:100])

    assert validate_files([good]) == []
    errors = validate_files([good, edited, truncated, tmp_path / "missing.json"])
    assert len(errors) == 3
    assert "edited.json" in errors[0] and "integrity check failed" in errors[0]
    assert "truncated.json" in errors[1] and "not valid JSON" in errors[1]
    assert "missing.json" in errors[2] and "cannot read" in errors[2]

"""The package's structure: layers that import only downwards (each declares its dependencies), plugins
that import only bench.api, modules that import on their own, and no import cycle."""

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "leaderboard", "pruners", "suites")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules that `path` imports anywhere (module level, functions, TYPE_CHECKING blocks)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            # a package's __init__ importing its own submodules (re-exports) is not a cycle back
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_internal_imports_form_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# ---- layers: bench/ is a stack of subpackages; each says in its docstring what it may import ----

TOP = "top"  # bench's own top-level modules (cli, api, facade, the package itself): may import any layer
# pruners/ and suites/ import only bench.api, the public plugin API. The one exception is pinned by
# committed results: a built-in pruner's recorded source digest covers its module's bytes, so
# pruners/tp.py keeps its imports until the tp-* results are regenerated (bench/registry.py serves it).
PLUGIN_EXCEPTIONS = {"pruners.tp": {"bench.pruning", "bench.registry"}}
BOARD_LAYERS = {"core", "results", "reports"}  # leaderboard/ builds boards from JSON alone: no torch


def declared_layers() -> dict[str, set[str]]:
    """Each bench subpackage -> the layers its docstring's `May import:` line allows."""
    import ast

    layers = {}
    for init in sorted((ROOT / "bench").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        match = re.search(r"May import: (.*?)\.(\s|$)", " ".join(doc.split()))
        assert match, f"{init.relative_to(ROOT)}: the docstring must say `May import: ...` (its layer's dependencies)"
        allowed = match.group(1)
        layers[init.parent.name] = set() if allowed == "nothing of bench" else {"*"} if allowed == "every layer" else {
            name.strip().removeprefix("bench.") for name in allowed.split(",")}
    return layers


def layer_of(module: str, layers: dict[str, set[str]]) -> str:
    parts = module.split(".")
    if parts[0] != "bench":
        return parts[0]
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in layers) else TOP


def layer_violations(graph: dict[str, set[str]], layers: dict[str, set[str]]) -> list[str]:
    """Every import that crosses the stack the wrong way, or past the plugin and board boundaries."""
    found = []
    for module, imports in sorted(graph.items()):
        here = layer_of(module, layers)
        for target in sorted(t for t in imports if t.split(".")[0] == "bench"):
            there = layer_of(target, layers)
            if here in ("pruners", "suites"):
                ok = target == "bench.api" or target in PLUGIN_EXCEPTIONS.get(module, set())
            elif here == "leaderboard":
                ok = there in BOARD_LAYERS
            elif here == TOP or here == there:
                ok = True
            else:
                ok = there in layers[here] or "*" in layers[here]
            if not ok:
                found.append(f"{module} ({here}) imports {target} ({there})")
    return found


def test_layers_import_only_what_they_declare():
    """A lower layer never imports a higher one; pruners and suites import only bench.api; the
    leaderboard package only core, results and reports."""
    assert layer_violations(import_graph(), declared_layers()) == []


def test_the_layer_check_catches_violations():
    layers = declared_layers()
    graph = {
        "bench.core.io": {"bench.pipeline.jobs"},  # the foundation reaching up
        "bench.results.schema": {"bench.data"},  # results below data
        "suites.noise": {"bench.data.files"},  # a plugin past bench.api
        "pruners.wt": {"bench.pruning.search"},
        "leaderboard.rows": {"bench.pipeline.runner"},  # the board would import torch
        "bench.pipeline.jobs": {"bench.data", "bench.pruning"},  # allowed
        "bench.cli.commands": {"bench.pipeline.runner"},  # the top may import anything
    }
    assert [line.split(" ")[0] for line in layer_violations(graph, layers)] == [
        "bench.core.io", "bench.results.schema", "leaderboard.rows", "pruners.wt", "suites.noise"]


def test_every_layer_is_short_modules():
    """No module in bench/ is over 400 lines: a module does one job."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "bench").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """Each module imported with none of the project's modules loaded before it (third-party
    packages such as torch stay loaded, so this takes one interpreter)."""
    script = (
        "import importlib, sys\n"
        f"names = {sorted(project_modules())!r}\n"
        "failed = []\n"
        "for name in names:\n"
        f"    for loaded in [m for m in sys.modules if m.split('.')[0] in {PACKAGES!r}]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


TORCH_FREE_COMMANDS = {  # what CI and a reviewer run on result files only: no torch, no timm (issue 22)
    "help": ["--help"],
    "leaderboard": ["leaderboard", "{results}", "-o", "{tmp}/board.md", "--json", "{tmp}/board.json",
                    "--html", "{tmp}/index.html"],
    "validate": ["validate", "{result}"],
    "leaderboard error": ["leaderboard", "{tmp}/no-such-folder"],
}


@pytest.mark.slow
def test_board_commands_never_import_torch(tmp_path):
    """`bench --help`, `bench leaderboard` and `bench validate` on the committed digits results (and a
    failing command's error path) run without importing torch or timm: a board is built from JSON alone.
    (The digits files only: the Fashion-MNIST ones take the same code path with 20x the hits to resample.)"""
    results = tmp_path / "results"
    results.mkdir()
    for path in (ROOT / "leaderboard" / "results").glob("digits-*.json"):
        shutil.copy(path, results)
    result = sorted(p for p in results.glob("*.json") if not p.name.endswith(".verify.json"))[0]
    script = (
        "import json, sys\n"
        "from bench.cli import main\n"
        "try:\n"
        "    code = main(json.loads(sys.argv[1]))\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "print(json.dumps({'code': code, 'heavy': sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'torchvision'})}))\n"
    )
    codes = {}
    for name, argv in TORCH_FREE_COMMANDS.items():
        args = [part.format(tmp=tmp_path, result=result, results=results) for part in argv]
        out = subprocess.run([sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True, cwd=ROOT)
        report = json.loads(out.stdout.strip().splitlines()[-1])
        assert report["heavy"] == [], f"bench {name} imported {report['heavy']}"
        codes[name] = report["code"]
    assert codes == {"help": 0, "leaderboard": 0, "validate": 0, "leaderboard error": 2}
    assert (tmp_path / "board.md").read_text().startswith("# prunebench leaderboard")


def _defined_here(module_name: str, base: type) -> list[str]:
    """`module:Name` of every concrete subclass of `base` that `module_name` defines and names (its
    own `name` attribute: intermediate bases such as a family's shared class name nothing)."""
    import importlib
    import inspect

    module = importlib.import_module(module_name)
    return [f"{module_name}:{name}" for name, value in vars(module).items()
            if inspect.isclass(value) and issubclass(value, base) and value.__module__ == module_name
            and not inspect.isabstract(value) and not name.startswith("_") and "name" in vars(value)]


def test_every_pruner_suite_and_dataset_in_the_tree_has_an_entry_point():
    """The core knows pruners, suites, datasets and models only through entry points, and the tests
    follow them (bench.core.registry.builtin_names): one defined without its entry point is never run or
    tested."""
    from importlib.metadata import entry_points

    from bench.api import Pruner, Suite
    from bench.core.registry import DATASET_GROUP, MODEL_GROUP, PRUNER_GROUP, SUITE_GROUP
    from bench.data import DatasetSpec
    from bench.models.config import ModelConfig

    groups = (PRUNER_GROUP, SUITE_GROUP, DATASET_GROUP, MODEL_GROUP)
    registered = {group: {ep.value for ep in entry_points(group=group) if ep.dist and ep.dist.name == "prunebench"}
                  for group in groups}
    pruners = [f"pruners.{p.stem}" for p in sorted((ROOT / "pruners").glob("*.py")) if not p.stem.startswith("_")]
    suites = [f"suites.{p.stem}" for p in sorted((ROOT / "suites").glob("*.py")) if not p.stem.startswith("_")]
    defined = {
        PRUNER_GROUP: {v for m in pruners for v in _defined_here(m, Pruner)},
        SUITE_GROUP: {v for m in suites for v in _defined_here(m, Suite)},
        DATASET_GROUP: _instances_in(["bench.data.builtin"], DatasetSpec),
        MODEL_GROUP: _instances_in(["bench.models.classifiers", "bench.models.segmentation"], ModelConfig),
    }
    for group in groups:
        assert defined[group] and defined[group] <= registered[group], (group, defined[group] - registered[group])


def _instances_in(module_names: list[str], cls: type) -> set[str]:
    """`module:NAME` of every module-level `cls` instance the modules define (dataset specs, model configs)."""
    import importlib

    return {f"{name}:{attr}" for name in module_names
            for attr, value in vars(importlib.import_module(name)).items() if isinstance(value, cls)}


def test_shared_flags_are_declared_once():
    """`bench run`, `plan` and `eval` share one declaration of their common flags, and --device,
    --workers, --quiet, --dataset, --data-dir and --download have one declaration for every command."""
    source = "".join(path.read_text() for path in sorted((ROOT / "bench" / "cli").glob("*.py")))
    declared = re.findall(r'add_argument\(\s*"(--[a-z0-9-]+)"', source)
    shared = ["--device", "--workers", "--quiet", "--dataset", "--data-dir", "--download", "--model", "--suite",
              "--delta", "--precision", "--per-class", "--image-size", "--no-channels-last"]
    assert {flag: declared.count(flag) for flag in shared} == dict.fromkeys(shared, 1)

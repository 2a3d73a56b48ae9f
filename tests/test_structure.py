"""The package's structure: every module imports on its own, and internal imports form no cycle."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

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


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


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
    "leaderboard": ["leaderboard", "leaderboard/results", "-o", "{tmp}/board.md", "--json", "{tmp}/board.json",
                    "--html", "{tmp}/index.html"],
    "validate": ["validate", "{result}"],
    "leaderboard error": ["leaderboard", "{tmp}/no-such-folder"],
}


def test_board_commands_never_import_torch(tmp_path):
    """`bench --help`, `bench leaderboard` and `bench validate` on the committed results (and a failing
    command's error path) run without importing torch or timm: a board is built from JSON alone."""
    result = sorted(p for p in (ROOT / "leaderboard" / "results").glob("*.json") if not p.name.endswith(".verify.json"))[0]
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
        args = [part.format(tmp=tmp_path, result=result) for part in argv]
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
    follow them (bench.registry.builtin_names): one defined without its entry point is never run or
    tested."""
    from importlib.metadata import entry_points

    from bench.api import Pruner, Suite
    from bench.data import DatasetSpec
    from bench.model_config import ModelConfig
    from bench.registry import DATASET_GROUP, MODEL_GROUP, PRUNER_GROUP, SUITE_GROUP

    groups = (PRUNER_GROUP, SUITE_GROUP, DATASET_GROUP, MODEL_GROUP)
    registered = {group: {ep.value for ep in entry_points(group=group) if ep.dist and ep.dist.name == "prunebench"}
                  for group in groups}
    pruners = [f"pruners.{p.stem}" for p in sorted((ROOT / "pruners").glob("*.py")) if not p.stem.startswith("_")]
    suites = [f"suites.{p.stem}" for p in sorted((ROOT / "suites").glob("*.py")) if not p.stem.startswith("_")]
    defined = {
        PRUNER_GROUP: {v for m in pruners for v in _defined_here(m, Pruner)},
        SUITE_GROUP: {v for m in suites for v in _defined_here(m, Suite)},
        DATASET_GROUP: _instances_in(["bench.datasets"], DatasetSpec),
        MODEL_GROUP: _instances_in(["bench.models", "bench.segmentation.model"], ModelConfig),
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
    source = (ROOT / "bench" / "cli.py").read_text()
    declared = re.findall(r'add_argument\(\s*"(--[a-z0-9-]+)"', source)
    shared = ["--device", "--workers", "--quiet", "--dataset", "--data-dir", "--download", "--model", "--suite",
              "--delta", "--precision", "--per-class", "--image-size", "--no-channels-last"]
    assert {flag: declared.count(flag) for flag in shared} == dict.fromkeys(shared, 1)

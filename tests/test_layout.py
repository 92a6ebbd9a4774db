"""The package's shape: what may import what, module sizes, the wheel's package list."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SRC = REPO / "src"
PACKAGE = SRC / "mdnlab"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The mdnlab modules ``name`` imports anywhere in its file, inside functions too."""
    path = MODULES[name]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES}
    return found - {name}


def test_no_import_cycles():
    graph = {name: imports_of(name) for name in MODULES}
    # a package's __init__ re-exporting its children is not a cycle of design
    graph = {
        m: {d for d in deps if not (m.startswith(d + ".") and MODULES[d].name == "__init__.py")}
        for m, deps in graph.items()
    }
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(path + [nxt])
            if not state.get(nxt):
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if not state.get(name):
            visit(name, [name])


# The floors, bottom up: a module imports only from its own floor and the floors below it.
FLOORS = [
    ("mdnlab.errors", "mdnlab.io"),
    ("mdnlab.mixtures", "mdnlab.problems"),
    ("mdnlab.data", "mdnlab.models", "mdnlab.eval"),
    ("mdnlab.checkpoint",),
    ("mdnlab.config",),
    ("mdnlab.runs",),
    ("mdnlab.training",),
    ("mdnlab.cli",),
]


def floor_of(module: str) -> int:
    for level, names in enumerate(FLOORS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return level
    raise AssertionError(f"{module} is on no floor: add it to FLOORS")


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m != "mdnlab"))
def test_imports_go_down_the_floors(name):
    upward = {m for m in imports_of(name) if m != "mdnlab" and floor_of(m) > floor_of(name)}
    assert not upward, f"{name} (floor {floor_of(name)}) imports from above: {sorted(upward)}"


def test_cli_is_thin():
    lines = sum(len(p.read_text().splitlines()) for p in (PACKAGE / "cli").glob("*.py"))
    assert lines < 800, f"cli/ has {lines} lines: move what is not command-line code to a floor below"


def test_the_bench_scripts_do_not_import_each_other():
    def imported(script: str) -> set[str]:
        tree = ast.parse((REPO / "scripts" / f"{script}.py").read_text())
        return {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        }

    assert not ("bench_stacked" in imported("bench") and "bench" in imported("bench_stacked"))


@pytest.mark.parametrize("bottom", ["mdnlab.errors", "mdnlab.io"])
def test_errors_and_io_import_nothing_of_mdnlab(bottom):
    assert imports_of(bottom) == set()


@pytest.mark.parametrize("name", [m for m in MODULES if m.startswith("mdnlab.eval")])
def test_metrics_and_figures_never_import_models_or_entry_points(name):
    forbidden = {m for m in imports_of(name) if m.startswith(("mdnlab.models", "mdnlab.cli", "mdnlab.checkpoint"))}
    assert not forbidden, forbidden


def test_math_problems_and_metrics_import_without_lightning():
    code = (
        "import sys, mdnlab.mixtures, mdnlab.problems, mdnlab.eval.metrics, mdnlab.eval.predictive; "
        "assert 'lightning' not in sys.modules, 'lightning imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_no_module_over_300_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(sizes.values()) <= 300, {n: s for n, s in sizes.items() if s > 300}


def test_the_wheel_lists_every_package():
    """pyproject.toml names the packages by hand (configs/ maps to mdnlab.configs): a new
    subpackage missing there would be left out of the wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    plugins = {f"hydra_plugins.{p.parent.name}" for p in (REPO / "src" / "hydra_plugins").glob("*/__init__.py")}
    assert set(config["packages"]) == packages | plugins | {"mdnlab.configs"}
    assert not (REPO / "src" / "hydra_plugins" / "__init__.py").exists()  # Hydra's namespace package
    assert config["package-dir"]["mdnlab.configs"] == "configs"


def test_train_help_names_every_launcher_without_importing_torch():
    code = (
        "import sys; sys.argv = ['mdn-train', '--help']\n"
        "from mdnlab.cli.train import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    for launcher in ("stacked", "parallel", "slurm"):
        assert f"hydra/launcher={launcher}" in result.stdout

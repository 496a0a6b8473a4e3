"""Architecture guard: envs/ and agents/ never import each other, experiments, mlflow or hydra;
the folders are imported only as rapport.<package>; experiments modules import no circle."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "envs": {"rapport.agents", "rapport.experiments", "mlflow", "hydra", "omegaconf"},
    "agents": {"rapport.envs", "rapport.experiments", "mlflow", "hydra", "omegaconf"},
}
# The top-level folders install as rapport.envs / rapport.agents / rapport.experiments: importing
# them by their folder names would load a second copy of every module (or a user's own package).
LEGACY = {"envs", "agents", "experiments"}


def _package_of(module: str) -> str:
    """``rapport.envs.dynamics`` -> ``rapport.envs``; ``mlflow.pyfunc`` -> ``mlflow``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "rapport" and len(parts) > 1 else parts[0]


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(_package_of(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(_package_of(node.module))
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layering(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no python files found under {package}/"
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_top_levels(f) & FORBIDDEN[package]) for f in files
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package}/ must not import {sorted(FORBIDDEN[package])}: {offenders}"


def test_detector_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import mlflow\nfrom rapport.agents.protocol import Policy\nfrom . import sibling\n")
    assert imported_top_levels(bad) == {"mlflow", "rapport.agents"}


def test_nothing_imports_the_folder_names():
    roots = ["envs", "agents", "experiments", "tests", "scripts"]
    files = [f for r in roots for f in sorted((ROOT / r).rglob("*.py"))]
    offenders = {str(f.relative_to(ROOT)): sorted(imported_top_levels(f) & LEGACY) for f in files}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"import these as rapport.<package>, not by folder name: {offenders}"


def test_top_level_layout_is_fixed():
    allowed = {"pyproject.toml", "README.md", "envs", "agents", "conf", "experiments", "notebooks",
               "tests", "scripts"}
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    tops = {p.split("/")[0] for p in tracked.split() if p and not p.startswith(".")}
    assert tops <= allowed, f"unexpected top-level entries: {sorted(tops - allowed)}"


def _module_imports(package: str) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}``, function-level imports included."""
    modules = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        name = "rapport." + ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = f
    graph = {}
    for name, f in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)  # from pkg import module
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
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


def test_experiments_modules_import_no_circle():
    cycle = _find_cycle(_module_imports("experiments"))
    assert cycle is None, f"import circle among experiments modules: {' -> '.join(cycle)}"


def test_circle_detector_finds_a_circle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None

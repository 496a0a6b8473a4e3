"""Architecture guard: envs/ and agents/ never import each other, experiments, mlflow or hydra."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "envs": {"agents", "experiments", "mlflow", "hydra", "omegaconf"},
    "agents": {"envs", "experiments", "mlflow", "hydra", "omegaconf"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
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
    bad.write_text("import mlflow\nfrom agents.protocol import Policy\nfrom . import sibling\n")
    assert imported_top_levels(bad) == {"mlflow", "agents"}


def test_top_level_layout_is_fixed():
    allowed = {"pyproject.toml", "README.md", "envs", "agents", "conf", "experiments", "notebooks",
               "tests", "scripts"}
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    tops = {p.split("/")[0] for p in tracked.split() if p and not p.startswith(".")}
    assert tops <= allowed, f"unexpected top-level entries: {sorted(tops - allowed)}"

"""Rapport installs as one ``rapport`` namespace with its Hydra configs inside the package.

The wheel test builds the wheel, installs it into a throwaway venv that reuses this venv's
dependencies (offline, no index) and runs the apps from a directory holding its own
``experiments/`` and ``envs/`` packages — the research-repository layout that shadowed Rapport
when it installed four generic top-level names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_folders() -> dict[str, str]:
    """Every folder with an ``__init__.py`` or YAML config -> the dotted name it installs as."""
    mapping = _setuptools_table()["package-dir"]
    by_dir = {d: name for name, d in mapping.items()}
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    folders = {Path(f).parent.as_posix() for f in files
               if Path(f).name == "__init__.py" or (f.startswith("conf/") and f.endswith(".yaml"))}
    found: dict[str, str] = {}
    for rel in sorted(folders):
        if rel.split("/")[0] in {"tests", "scripts", "notebooks"}:
            continue
        # the longest mapped folder above (or equal to) this one names its package
        base = max((d for d in by_dir if rel == d or rel.startswith(d + "/")), key=len, default=None)
        assert base is not None, f"{rel}/ holds an __init__.py but no package-dir entry maps it"
        suffix = rel[len(base):].strip("/").replace("/", ".")
        found[rel] = by_dir[base] + (f".{suffix}" if suffix else "")
    return found


def test_every_package_folder_is_listed():
    listed = set(_setuptools_table()["packages"])
    folders = _package_folders()
    # experiments/_rapport/ is the root package itself (rapport), mapped, not a subpackage
    missing = {rel: name for rel, name in folders.items() if name not in listed
               and not name.startswith("rapport.experiments._rapport")
               and not name.startswith("rapport.experiments.launchers.hydra_plugins")}
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_import_rapport_registers_the_gymnasium_ids():
    code = ("import gymnasium, rapport; e = gymnasium.make('Rapport/Customer-v0'); "
            "v = gymnasium.make_vec('Rapport/Population-v0', num_envs=3); print(v.num_envs)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT / "tests")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


def _user_repo(tmp: Path) -> Path:
    """A research repository with its own envs/ and experiments/ packages."""
    repo = tmp / "their_repo"
    for name in ("envs", "experiments"):
        (repo / name).mkdir(parents=True)
        (repo / name / "__init__.py").write_text(f"MINE = {name!r}\n")
    return repo


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    # build from a copy of the tracked tree: an in-tree build would leave build/ in the checkout
    src = tmp / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    wheel = next(dist.glob("rapport_rl-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    purelib = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # this venv's dependencies, as a plain path entry: its .pth files (among them the editable
    # finder of the checkout) are not processed, so `rapport` can only come from the wheel
    Path(purelib, "_rapport_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(vpy), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    return venv, wheel


def _env_without_checkout() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MLFLOW_TRACKING_URI"}}
    env["HYDRA_FULL_ERROR"] = "1"
    return env


def test_wheel_ships_the_configs(wheel_venv):
    _, wheel = wheel_venv
    names = zipfile.ZipFile(wheel).namelist()
    assert "rapport/conf/train.yaml" in names and "rapport/conf/agent/mass.yaml" in names
    assert "rapport/__init__.py" in names and "rapport/envs/dynamics.py" in names
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"rapport", "hydra_plugins"}, tops


def test_wheel_runs_an_experiment_from_a_foreign_directory(wheel_venv, tmp_path):
    venv, _ = wheel_venv
    repo = _user_repo(tmp_path)
    env = _env_without_checkout()
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import envs, experiments, gymnasium, rapport; assert envs.MINE == 'envs'; "
         "assert experiments.MINE == 'experiments'; gymnasium.make('Rapport/Customer-v0'); "
         "print(rapport.__file__)"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert str(ROOT) not in probe.stdout and "site-packages" in probe.stdout, probe.stdout
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    train = subprocess.run(
        [str(venv / "bin" / "rapport-train"), "agent=mass", "debug=fast", f"tracking.uri={uri}",
         "tracking.experiment=wheel", "tracking.log_plots=false"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    compare = subprocess.run(
        [str(venv / "bin" / "rapport-compare"), "--tracking-uri", uri, "--experiment", "wheel"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert compare.returncode == 0, compare.stdout[-3000:] + compare.stderr[-3000:]
    assert "mass" in compare.stdout


def _requirement_name(spec: str) -> str:
    import re

    return re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_every_directly_imported_package_is_declared():
    import ast
    from importlib.metadata import packages_distributions

    declared = {_requirement_name(s) for s in
                tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    first_party = {"rapport", "hydra_plugins", "decision_runtime"}  # the export's runtime file
    imported: dict[str, str] = {}
    for folder in ("envs", "agents", "experiments"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.module
                         and node.level == 0 else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in first_party:
                        imported.setdefault(top, str(f.relative_to(ROOT)))
    dists = packages_distributions()
    missing = {}
    for module, where in sorted(imported.items()):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = (sorted(names), where)
    assert not missing, f"imported directly but not declared in [project] dependencies: {missing}"

"""The notebooks run top to bottom on tiny settings, and are stored in git without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ORDER = ["quickstart.ipynb", "policy_comparison.ipynb"]  # the second reads the first's runs


def test_there_are_the_two_notebooks():
    assert set(ORDER) <= {p.name for p in NOTEBOOKS.glob("*.ipynb")}


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; strip them before committing"


def test_notebooks_execute_on_tiny_settings(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("RAPPORT_NOTEBOOK_OVERRIDES", "debug=fast tracking.log_model=false")
    monkeypatch.setenv("RAPPORT_NOTEBOOK_EXPERIMENT", "quickstart")
    monkeypatch.setenv("RAPPORT_NOTEBOOK_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for name in ORDER:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors
    assert (tmp_path / "outputs" / "leaderboard" / "quickstart" / "leaderboard.md").is_file()

"""The notebooks run top to bottom against the real sample data."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    os.environ["DAQFLOW_WORKDIR"] = str(workdir)
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        del os.environ["DAQFLOW_WORKDIR"]
    return notebook


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


@pytest.mark.slow
def test_build_dataset_notebook_runs(tmp_path):
    notebook = run_notebook("01-build-dataset.ipynb", tmp_path)

    assert "duplicate" in outputs_text(notebook)
    assert any(output.get("output_type") == "display_data" for cell in notebook.cells for output in cell.get("outputs", []))


@pytest.mark.slow
def test_nightly_retrain_notebook_runs(tmp_path):
    notebook = run_notebook("02-nightly-retrain.ipynb", tmp_path)

    assert "published" in outputs_text(notebook)
    assert (tmp_path / "edge" / "trusted_keys").is_dir()

"""The notebooks run top to bottom through the Python API (on a 60-image subset of the sample),
so they never rot; and they are stored without outputs."""
from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
N_IMAGES = 60


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_art_history.ipynb"])
def test_notebook_is_stored_without_outputs(name):
    for cell in _read(name).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip outputs before committing"


def _run(name: str, out: Path, monkeypatch) -> nbformat.NotebookNode:
    # The kernel inherits the environment: a small subset, decoding in the kernel process.
    monkeypatch.setenv("STYLECLUSTER_NB_IMAGES", str(N_IMAGES))
    monkeypatch.setenv("STYLECLUSTER_NB_WORKERS", "0")
    monkeypatch.setenv("STYLECLUSTER_NB_OUT", str(out))
    notebook = _read(name)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(out.parent)}}).execute()
    print(f"{name}: {time.perf_counter() - start:.0f} s")
    return notebook


def _text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") or str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_quickstart_then_art_history(tmp_path, monkeypatch):
    out = tmp_path / "nb"
    quick = _run("01_quickstart.ipynb", out, monkeypatch)
    text = _text(quick)
    assert f"rows in the store: {N_IMAGES}" in text and "NMI" in text
    assert (out / "map.html").is_file() and (out / "clusters.model.npz").is_file()
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for c in quick.cells for o in c.get("outputs", []))

    history = _run("02_art_history.ipynb", out, monkeypatch)  # reuses the store (embedding resumes)
    text = _text(history)
    assert f"already in the store (resumed): {N_IMAGES}" in text
    assert "blurs into" in text and "outside the store" in text
    images = [o for c in history.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # paintings and their DoG patch strips
    assert (out / "report" / "index.html").is_file() and (out / "similar.html").is_file()

"""notebooks/benchmark.ipynb runs from top to bottom (the kernel inherits
this process's environment, so it sees the same modelbench)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "benchmark.ipynb"


def test_benchmark_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel (and the server it starts) runs in tmp_path: a relative
    # PYTHONPATH (build/.../python:python) would miss the dev build there and
    # silently import an installed modelbench instead.
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(str(Path(e).resolve()) for e in entries if e))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = "".join(
        o.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
    )
    assert "served / in process throughput" in outputs and "p99 TTFT (ms)" in outputs
    assert outputs.count(": 16 requests,") == 2  # every request of both runs completed
    streams = [
        o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("name") == "stderr"
    ]
    assert not streams, streams  # warnings or progress bars would clutter the notebook
    images = [
        o
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) == 4

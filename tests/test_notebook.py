"""The tutorial notebook runs top to bottom (at a short setting), so it cannot rot."""

import importlib.util

import pytest
from conftest import REPO


@pytest.mark.slow
@pytest.mark.skipif(
    not importlib.util.find_spec("nbclient") or not importlib.util.find_spec("ipykernel"),
    reason="the docs extra is not installed (nbclient, ipykernel)",
)
def test_the_tutorial_runs_top_to_bottom(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MDNLAB_TUTORIAL_EPOCHS", "2")
    monkeypatch.setenv("MDNLAB_TUTORIAL_STEPS", "50")
    monkeypatch.setenv("MDNLAB_TUTORIAL_DIR", str(tmp_path))
    path = REPO / "notebooks" / "tutorial.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells)  # outputs are not committed
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()  # raises CellExecutionError on the first cell that fails
    printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "test NLL" in printed and "evaluated here" in printed
    assert (tmp_path / "notebook_run" / "metrics.json").is_file()
    figures = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "display_data"]
    assert len(figures) == 5 and all("image/png" in f["data"] for f in figures)

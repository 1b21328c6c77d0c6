"""The tutorial notebook (docs/tutorial.ipynb) runs from start to end in a real Jupyter kernel
(nbclient), and its cells print what its text says they show. Slow: about 70 s on 2 CPU cores."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("transformer_lens")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def _printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")


def test_the_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_the_tutorial_runs_and_shows_what_it_says(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()  # raises CellExecutionError on any failing cell
    printed = _printed(nb)
    assert "answer accuracy 1.000" in printed or "answer accuracy 0.9" in printed
    assert "signal stream off: accuracy 0.0" in printed  # the copy is the signal stream's
    assert "of the way back" in printed and "explore.html" in printed
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the head maps and the patching grid

"""Every "Try this" works under the profile it is read with: each notebook executed top to
bottom on a fresh kernel under ``DDPM_PROFILE=smoke`` (nbclient), and every exercise's code cell
(tagged ``try-this``) and its check (``try-this-check``: the expected result, asserted) ran without an
error. The shape of each exercise (code, collapsed expected result, check) is checked by
``test_notebooks_format.py``.

Like ``make notebooks``, the kernels use the repository's data and runs folders, so the smoke runs
trained by one are reused by the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

pytestmark = pytest.mark.slow  # every notebook, executed again: minutes on 2 cores

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
WITH_EXERCISES = ("00_diffusion_theory", "01_eda", "02_preprocessing", "03_baseline_unet", "04_small_unet",
                  "05_ddim_cosine", "06_evaluation", "07_conditional")


def exercise_cells(notebook) -> list[tuple[int, object]]:
    return [(i, cell) for i, cell in enumerate(notebook.cells)
            if {"try-this", "try-this-check"} & set(cell.get("metadata", {}).get("tags", []))]


@pytest.mark.parametrize("name", WITH_EXERCISES)
def test_every_exercise_runs_and_meets_its_expectation_under_smoke(name):
    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    cells = exercise_cells(notebook)
    assert len(cells) >= 2, f"{name}: no exercises tagged try-this / try-this-check"
    client = NotebookClient(notebook, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    env = {**os.environ, "DDPM_PROFILE": "smoke", "WANDB_MODE": "disabled"}
    try:
        client.execute(env=env)
    except CellExecutionError as error:
        failed = next((f"cell {i} ({', '.join(c.metadata.get('tags', [])) or 'untagged'})"
                       for i, c in enumerate(notebook.cells) if c.cell_type == "code"
                       and any(o.get("output_type") == "error" for o in c.get("outputs", []))), "a cell")
        pytest.fail(f"{name}: {failed} failed under smoke:\n{str(error)[-3000:]}", pytrace=False)
    for index, cell in exercise_cells(notebook):
        assert cell.get("execution_count"), f"{name}: exercise cell {index} did not run"
        assert not any(o.get("output_type") == "error" for o in cell.get("outputs", [])), f"{name}: cell {index}"

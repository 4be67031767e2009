"""The notebooks as stored: no outputs, the shared skeleton, a papermill parameters cell of literals."""

import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_six_notebooks_exist_in_order():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    stored = [i for i, c in enumerate(cells)
              if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not stored, f"{path.name}: cells {stored} hold outputs; strip them (nbstripout, see .pre-commit-config.yaml)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_skeleton_and_parameters_cell(path):
    cells = json.loads(path.read_text())["cells"]
    title = "".join(cells[0]["source"]).split("\n\n", 1)  # the Colab badge, then the title
    assert cells[0]["cell_type"] == "markdown" and title[0].startswith("[![Open In Colab]")
    assert title[1].startswith("# ")
    assert "what you will learn" in "".join(cells[0]["source"]).lower()
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(tagged[0]["source"]))
    for statement in tree.body:  # literals only, so papermill and nbval see the same thing
        assert isinstance(statement, ast.Assign), f"{path.name}: parameters cell holds {type(statement).__name__}"
        ast.literal_eval(statement.value)
    values = {s.targets[0].id: ast.literal_eval(s.value) for s in tree.body}
    assert values.get("PROFILE", "missing") is None, f"{path.name}: PROFILE must stay None ($DDPM_PROFILE decides)"
    assert "written_files()" in "".join(cells[-1]["source"]), f"{path.name}: the last cell lists what it wrote"

"""The notebooks as stored: no outputs, the shared skeleton, a papermill parameters cell of literals,
the equations, exercises, and no number in prose that the profile decides."""

import ast
import json
import re
from pathlib import Path

import pytest

from ddpm_lib.pipeline import NOTEBOOKS as PIPELINE

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# Numbers Markdown may state: the study's own (its Table 1 and 2, its resolution and split), and facts
# of the real dataset. Anything a profile decides (image size, steps, parameter counts, sample counts)
# is printed by a code cell instead.
ALLOWED = {"64x64", "64 px", "299 px", "28,000 steps", "1000 steps", "5 steps", "8 hours", "9,430 / 2,350",
           "11,788", "5,994 / 5,794", "200 species", "200 epochs", "1.95M parameters", "60 images", "1x1", "3x3"}
PROFILE_NUMBERS = re.compile(
    r"(?<![-\w/])\d[\d,.]*\s*(?:x\s*\d+|px\b|pixels\b|steps\b|parameters\b|M parameters\b|samples\b|images\b|epochs\b)",
    re.IGNORECASE)


def markdown(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"]


def test_the_notebooks_exist_in_order_and_the_pipeline_runs_them_all():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06", "07"]
    assert [p.stem for p in NOTEBOOKS] == list(PIPELINE)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_equations_and_try_this(path):
    text = "\n".join(markdown(path))
    assert re.search(r"\$\$.+?\$\$|\$[^$\n]+\$", text, re.DOTALL), f"{path.name}: no LaTeX equation"
    assert "## Try this" in text, f"{path.name}: no 'Try this' section"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_profile_number_is_typed_in_markdown(path):
    found = []
    for cell in markdown(path):
        for match in PROFILE_NUMBERS.finditer(cell):
            literal = " ".join(match.group(0).split())
            if not any(literal.startswith(allowed) or allowed.startswith(literal) for allowed in ALLOWED):
                found.append(literal)
    assert not found, f"{path.name}: numbers the profile decides, typed in Markdown (print them instead): {found}"


def test_the_format_check_catches_a_typed_number():
    assert PROFILE_NUMBERS.search("resize to 32x32 pixels") and PROFILE_NUMBERS.search("416,307 parameters")
    assert PROFILE_NUMBERS.search("after 900 steps")


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


def test_the_evaluation_notebook_is_calls_not_methods():
    """The evaluation method lives in the library (evaluation.scoring.evaluate); notebook 06 calls it,
    so no code cell there is longer than 25 lines."""
    path = next(p for p in NOTEBOOKS if p.stem == "06_evaluation")
    cells = json.loads(path.read_text())["cells"]
    lengths = {i: len("".join(c["source"]).splitlines()) for i, c in enumerate(cells) if c["cell_type"] == "code"}
    assert max(lengths.values()) <= 25, {i: n for i, n in lengths.items() if n > 25}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_import_the_public_names(path):
    """``from ddpm_lib import ...`` only (the Colab set-up cell aside), so a module can move without
    breaking a notebook."""
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    deep = [line for line in code.splitlines()
            if re.match(r"\s*(from|import) ddpm_lib\.", line) and "ddpm_lib.colab" not in line]
    assert not deep, f"{path.name}: import the public names from ddpm_lib instead: {deep}"

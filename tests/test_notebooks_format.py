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
    # papermill sees every parameter too (it gives up on a line whose comment holds "=", silently)
    from nbformat.v4 import new_code_cell
    from papermill.translators import PythonTranslator

    seen = {p.name for p in PythonTranslator.inspect(new_code_cell("".join(tagged[0]["source"])))}
    assert seen == set(values), f"{path.name}: papermill cannot read {set(values) - seen}; no '=' in their comments"
    assert "written_files()" in "".join(cells[-1]["source"]), f"{path.name}: the last cell lists what it wrote"


def test_the_evaluation_notebook_is_calls_not_methods():
    """The evaluation method lives in the library (evaluation.scoring.evaluate); notebook 06 calls it,
    so no code cell there is longer than 25 lines (the cell of imports aside)."""
    path = next(p for p in NOTEBOOKS if p.stem == "06_evaluation")
    cells = json.loads(path.read_text())["cells"]
    code = {i: "".join(c["source"]) for i, c in enumerate(cells) if c["cell_type"] == "code"}
    lengths = {i: len(source.splitlines()) for i, source in code.items()
               if not all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in ast.parse(source).body)}
    assert max(lengths.values()) <= 25, {i: n for i, n in lengths.items() if n > 25}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_import_the_public_names(path):
    """``from ddpm_lib import ...`` only (the Colab set-up cell aside), so a module can move without
    breaking a notebook."""
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    deep = [line for line in code.splitlines()
            if re.match(r"\s*(from|import) ddpm_lib\.", line) and "ddpm_lib.colab" not in line]
    assert not deep, f"{path.name}: import the public names from ddpm_lib instead: {deep}"


# ----- "Try this": every exercise has its code, its expected result in a collapsed cell, and a check ---------


def exercises(cells: list[dict]) -> list[dict]:
    """The numbered exercises of the "## Try this" section, each with the cells that follow it: its code
    (tagged ``try-this``), its expected result (tagged ``expected``) and its check (``try-this-check``)."""
    start = next(i for i, c in enumerate(cells)
                 if c["cell_type"] == "markdown" and "## Try this" in "".join(c["source"]))
    found = []
    for cell in cells[start:]:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] == "markdown" and "expected" not in tags:
            for number in re.findall(r"^(\d+)\. ", "".join(cell["source"]), re.MULTILINE):
                found.append({"number": int(number), "parts": []})
        elif found and {"try-this", "expected", "try-this-check"} & set(tags):
            kind = next(tag for tag in ("try-this", "expected", "try-this-check") if tag in tags)
            found[-1]["parts"].append((kind, cell))
    return found


def exercise_problems(cells: list[dict]) -> list[str]:
    problems = []
    found = exercises(cells)
    if [e["number"] for e in found] != list(range(1, len(found) + 1)) or not found:
        problems.append(f"exercises numbered {[e['number'] for e in found]}, expected 1..n")
    for exercise in found:
        kinds = [kind for kind, _ in exercise["parts"]]
        if kinds != ["try-this", "expected", "try-this-check"]:
            problems.append(f"exercise {exercise['number']}: cells {kinds}, expected its code, its expected result, "
                            "its check")
            continue
        (_, code), (_, result), (_, check) = exercise["parts"]
        hidden = lambda cell: cell.get("metadata", {}).get("jupyter", {}).get("source_hidden") is True  # noqa: E731
        if code["cell_type"] != "code" or hidden(code):
            problems.append(f"exercise {exercise['number']}: its code must be a visible code cell")
        if result["cell_type"] != "markdown" or not hidden(result) or not "".join(result["source"]).startswith(
                "**Expected:**"):
            problems.append(f"exercise {exercise['number']}: its expected result must be a collapsed Markdown cell "
                            "starting with **Expected:**")
        if check["cell_type"] != "code" or not hidden(check) or "assert" not in "".join(check["source"]):
            problems.append(f"exercise {exercise['number']}: its check must be a collapsed code cell that asserts")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_code_a_collapsed_expected_result_and_a_check(path):
    problems = exercise_problems(json.loads(path.read_text())["cells"])
    assert not problems, f"{path.name}: {problems}"


def test_the_exercise_check_catches_a_bare_exercise_and_a_visible_answer():
    def cell(kind, source, tags=(), hidden=False):
        metadata = {"tags": list(tags), **({"jupyter": {"source_hidden": True}} if hidden else {})}
        return {"cell_type": kind, "source": [source], "metadata": metadata}

    good = [cell("markdown", "## Try this\n\n1. Do it."), cell("code", "x = 1", ["try-this"]),
            cell("markdown", "**Expected:** 1", ["expected"], hidden=True),
            cell("code", "assert x == 1", ["try-this-check"], hidden=True)]
    assert exercise_problems(good) == []
    assert exercise_problems(good + [cell("markdown", "2. And this, without code.")])
    shown_answer = good[:2] + [cell("markdown", "**Expected:** 1", ["expected"])] + good[3:]
    assert exercise_problems(shown_answer)
    assert exercise_problems(good[:3])  # no check

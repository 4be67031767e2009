"""README's performance numbers against their raw files: the sources table in README's Training section
names, for each measured number, a file under benchmarks/results/ and the key that holds it; each is
read back here, and the performance paragraphs may state only those numbers (or ratios of them),
besides the targets, the cards' datasheet figures and the labelled estimates listed below."""

import itertools
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = (ROOT / "README.md").read_text()
TABLE_HEADER = "| what (one H100 unless named) | measured | file under `benchmarks/results/` | key |"
PARAGRAPHS = (  # (first words, last words) of each performance paragraph
    ("Measured on one H100 SXM", "not DDP."),
    ("Measured on one H100 (the table in", "not comparable case for case."),
    ("No T4 has run this code yet.", "a T4 has 15 GB."),
)
# Numbers the paragraphs may state without a results file, by what they are:
CONTEXT = {"2.11", "2026", "11", "26", "1", "8", "32", "128", "256", "2,350", "4,000", "28,000", "26.6", "16", "10",
           "20", "50"}  # torch, date, 1-process, 8 hours, batches, images, steps, parameters, 10 to 16, sampler steps
TARGETS = {"6,000", "1.5", "0.7"}  # the targets
DATASHEETS = {"65", "989", "0.32", "3.35", "1.43", "15"}  # T4 / H100 peaks and bandwidths, their ratio, T4 memory
ESTIMATES = {"330", "530", "140", "230"}  # the T4 estimate, derived in the text: H100 rate / 16 .. / 10
NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?=x\b|[^\w.]|\.(?!\d)|$)")  # 1.20x counts as 1.20


def sources() -> list[dict]:
    table = README[README.index(TABLE_HEADER):].split("\n\n")[0].splitlines()[2:]
    rows = []
    for text in table:
        what, measured, path, key = (cell.strip() for cell in text.strip("|").split(" | "))
        rows.append({"what": what, "measured": measured, "file": path.strip("`"), "key": key})
    return rows


def rows_of(path: Path) -> list:
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return data.get("rows", [data])
    if path.suffix == ".txt":
        return path.read_text().splitlines()
    return [json.loads(text) for text in path.read_text().splitlines() if text.startswith("{")]  # a log


def lookup(path: Path, key: str):
    """The value ``key`` names in ``path``: a field of the one row matching every ``name=value`` filter,
    or, in a text file, the line containing the given words."""
    tokens = re.findall(r"`([^`]*)`", key)
    fields = [token for token in tokens if "=" not in token]
    filters = [token.split("=", 1) for token in tokens if "=" in token]
    rows = rows_of(path)
    if path.suffix == ".txt":
        return next(text for text in rows if fields[0] in text)
    matching = [r for r in rows if all(str(r.get(name)).lower() == value.lower() for name, value in filters)]
    assert len(matching) == 1, (path, key, len(matching))
    return matching[0][fields[0]]


def shown(text: str) -> tuple[float, int]:
    """The first number of ``text`` and its decimals."""
    match = NUMBER.search(text)
    digits = match.group().replace(",", "")
    return float(digits), len(digits.split(".")[1]) if "." in digits else 0


def test_the_sources_table_covers_the_paragraphs():
    assert len(sources()) >= 25


@pytest.mark.parametrize("row", sources(), ids=lambda row: row["what"][:60])
def test_each_number_is_in_the_file_and_key_the_readme_names(row):
    path = RESULTS / row["file"]
    assert path.exists(), path
    value = lookup(path, row["key"])
    if row["measured"].startswith("failed"):
        assert re.search(r'"([^"]+)"', row["measured"]).group(1) in value
        return
    number, decimals = shown(row["measured"])
    if path.suffix == ".txt":
        assert row["measured"] in value
        return
    if "%" in row["measured"] and row["key"].startswith("`share"):
        value *= 100  # a share shown as a percentage
    assert abs(float(value) - number) <= 0.5 * 10 ** -decimals + 1e-9, (row["what"], value, row["measured"])


def paragraph_numbers() -> list[str]:
    found = []
    for first, last in PARAGRAPHS:
        start = README.index(first)
        text = README[start:README.index(last, start) + len(last)]
        text = re.sub(r"`[^`]*`", "", text)  # names in code (Unet(64, (1, 2, 4, 8)), DDIM-50, ...) are no numbers
        found += [m.group().rstrip(",") for m in NUMBER.finditer(text)]
    return found


def test_the_performance_paragraphs_state_only_sourced_numbers():
    measured = [shown(row["measured"]) for row in sources() if not row["measured"].startswith("failed")]
    allowed = {f"{abs(value):,.{decimals}f}" for value, decimals in measured}
    values = [value for value, _ in measured if value]
    for a, b in itertools.permutations(values, 2):  # ratios (1.20x) and differences in % (5%) of two of them
        allowed |= {f"{a / b:.2f}", f"{abs(a / b - 1) * 100:.0f}"}
    allowed |= CONTEXT | TARGETS | DATASHEETS | ESTIMATES
    stray = [number for number in paragraph_numbers() if number.lstrip("-") not in allowed]
    assert not stray, f"numbers without a source in README's performance paragraphs: {stray}"


def test_the_check_catches_an_unsourced_number(monkeypatch):
    monkeypatch.setattr(__import__(__name__), "README", README.replace("5,282\nimages/s at batch 32", "5,999\n"
                                                                       "images/s at batch 32", 1))
    with pytest.raises(AssertionError, match="5,999"):
        test_the_performance_paragraphs_state_only_sourced_numbers()

"""Figures and tables: one folder per profile, real data too, and a visible stamp on each."""

import pytest

from ddpm_lib import paths
from ddpm_lib.config import get_profile
from ddpm_lib.show import reporting


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "FIGURES_DIR", tmp_path / "figures")
    monkeypatch.setattr(paths, "REPORT_DIR", tmp_path / "report")
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    return tmp_path


def test_each_profile_writes_its_own_folder_real_data_too(folders):
    colab, full, demo = get_profile("colab"), get_profile("full"), get_profile("demo")
    for config in (colab, full, demo):
        reporting.save_table([{"a": 1.23456, "b": None}], "table2_results", config, caption="results")
    assert (folders / "report" / "tables" / "colab" / "table2_results.tex").exists()
    assert (folders / "report" / "tables" / "full" / "table2_results.tex").exists()
    assert (folders / "report" / "tables" / "synthetic" / "demo" / "table2_results.tex").exists()
    figures = {paths.figures_dir(p, s) for p, s in (("colab", "cub"), ("full", "cub"), ("full", "synthetic"))}
    assert len(figures) == 3
    reporting.write_report_inputs(colab, {"BestRun": "x"})
    settings = (folders / "report" / "generated" / "colab" / "settings.tex").read_text()
    assert r"\TableDir}{tables/colab}" in settings and r"\FigDir}{../figures/colab}" in settings
    assert not (folders / "report" / "generated" / "full").exists()  # full's inputs untouched


def test_every_table_carries_a_visible_stamp_with_profile_commit_and_date(folders):
    config = get_profile("full")
    tex = reporting.save_table([{"network": "small_unet", "FID": 12.3456}], "t", config)[1].read_text()
    stamp_line = next(line for line in tex.splitlines() if "color{gray}" in line)
    assert not stamp_line.startswith("%")  # printed, not a comment
    assert "profile: full" in stamp_line and "commit" in stamp_line and "real CUB-200-2011" in stamp_line
    assert "12.35" in tex and r"\toprule" in tex


def test_tables_in_notebooks_are_plain_text_without_reprs():
    text = reporting.text_table([{"run": "a", "FID": 1.234567, "n": 12_000, "ok": True, "none": None}])
    assert "1.235" in text and "12,000" in text and "yes" in text and "np.float64" not in text
    assert text.splitlines()[1].startswith("---")


def test_every_figure_and_table_records_what_made_it(folders):
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ddpm_lib.identity import read_manifest

    config = get_profile("demo")
    reporting.save_table([{"run": "a", "FID": 1.0}], "table2_results", config, inputs={"run a": "0123456789abcdef"})
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    reporting.save_figure(fig, "fig6_best_samples", config, formats=("png",), inputs={"run": "0123456789abcdef"})
    table = folders / "report" / "tables" / "synthetic" / "demo" / "table2_results.manifest.json"
    figure = paths.figures_dir("demo", "synthetic") / "fig6_best_samples.manifest.json"
    for path, what in ((table, "table"), (figure, "figure")):
        record = json.loads(path.read_text())
        assert record["kind"] == "report" and record["settings"]["what"] == what and record["commit"]
        assert record["settings"]["profile"] == "demo" and record["settings"]["data"]["source"] == "synthetic"
        assert "0123456789abcdef" in json.dumps(record["inputs"]) and record["identity"] == read_manifest(path).identity
    first = read_manifest(table).identity
    reporting.save_table([{"run": "a", "FID": 1.0}], "table2_results", config, inputs={"run a": "ffff"})
    assert read_manifest(table).identity != first  # another run scored: another identity

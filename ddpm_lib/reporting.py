"""Saving figures and tables for the report, each stamped with the profile and data source.

Real-data (CUB) outputs go to ``figures/`` and ``report/tables/``; synthetic-data outputs go under
``figures/synthetic/<profile>/`` and ``report/tables/synthetic/<profile>/``, so a demo or CI run
never overwrites what a real run wrote. Every saved path is remembered, so a notebook's last cell
can list what it wrote (:func:`written_files`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from . import paths

_WRITTEN: list[Path] = []


def data_label(source: str) -> str:
    """Human words for a data source."""
    return "real CUB-200-2011" if source == "cub" else "synthetic CUB-format replica (not real birds)"


def stamp(config) -> str:
    """``"profile: demo | data: synthetic CUB-format replica (not real birds)"``."""
    return f"profile: {config.profile} | data: {data_label(config.data.source)}"


def _remember(path: Path) -> Path:
    if path not in _WRITTEN:
        _WRITTEN.append(path)
    return path


def save_figure(fig, name: str, config, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save a matplotlib figure as ``<figures dir>/<name>.<fmt>`` with the stamp in its lower corner.

    Args:
        fig: the figure.
        name: file stem, e.g. ``"fig1_dataset_samples"``.
        config: the run's ``Config`` (its profile and data source choose the folder and the stamp).
    """
    folder = paths.figures_dir(config.profile, config.data.source)
    folder.mkdir(parents=True, exist_ok=True)
    # below the figure's bottom edge (the tight bounding box grows to hold it): never over a label
    fig.text(0.995, 0.0, stamp(config), ha="right", va="top", fontsize=6, color="0.4")
    written = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        written.append(_remember(path))
    return written


def tables_dir(config) -> Path:
    """``report/tables/`` for real data, ``report/tables/synthetic/<profile>/`` otherwise."""
    base = paths.REPORT_DIR / "tables"
    return base if config.data.source == "cub" else base / "synthetic" / config.profile


def save_table(rows: list[dict], name: str, config, caption: str = "") -> list[Path]:
    """Write ``rows`` (dicts with the same keys) as CSV and as a booktabs LaTeX table."""
    if not rows:
        raise ValueError(f"table {name!r} has no rows")
    folder = tables_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    csv_path = folder / f"{name}.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    def cell(value) -> str:
        if value is None:
            return "--"
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")

    lines = [r"\begin{tabular}{" + "l" * len(columns) + "}", r"\toprule",
             " & ".join(cell(c) for c in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(row[c]) for c in columns) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", f"% {caption} ({stamp(config)})".rstrip()]
    tex_path = folder / f"{name}.tex"
    tex_path.write_text("\n".join(lines) + "\n")
    return [_remember(csv_path), _remember(tex_path)]


def written_files() -> list[Path]:
    """Every path saved through this module in this session, in order."""
    return list(_WRITTEN)


def _tex_escape(text: str) -> str:
    return str(text).replace("\\", "/").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def write_report_inputs(config, numbers: dict) -> Path:
    """Point the LaTeX report at this profile's figures and tables, and give it its numbers.

    Writes ``report/generated/<profile>/settings.tex`` (``\\ProfileName``, ``\\DataSource``,
    ``\\FigDir``, ``\\TableDir``, ``\\ifSynthetic`` and one macro per entry of ``numbers``, e.g.
    ``{"BestFID": "12.3"}`` -> ``\\BestFID``) and ``report/generated/active.tex``, which the report
    reads first. Returns the settings file.
    """
    folder = paths.REPORT_DIR / "generated" / config.profile
    folder.mkdir(parents=True, exist_ok=True)
    figures = paths.figures_dir(config.profile, config.data.source)
    lines = [
        f"% written by ddpm_lib.reporting for profile {config.profile}; do not edit",
        rf"\newcommand{{\ProfileName}}{{{_tex_escape(config.profile)}}}",
        rf"\newcommand{{\DataSource}}{{{_tex_escape(data_label(config.data.source))}}}",
        rf"\newcommand{{\FigDir}}{{{Path('..') / figures.relative_to(paths.REPO_ROOT)}}}",
        rf"\newcommand{{\TableDir}}{{{tables_dir(config).relative_to(paths.REPORT_DIR)}}}",
        r"\newif\ifSynthetic",
        r"\Synthetictrue" if config.data.source != "cub" else r"\Syntheticfalse",
    ]
    for name, value in numbers.items():
        if not name.isalpha():
            raise ValueError(f"report macro names must be letters only, got {name!r}")
        lines.append(rf"\newcommand{{\{name}}}{{{_tex_escape(value)}}}")
    settings = folder / "settings.tex"
    settings.write_text("\n".join(lines) + "\n")
    (paths.REPORT_DIR / "generated" / "active.tex").write_text(
        f"% the profile the report is built from (set by notebook 06 or `make report PROFILE=...`)\n"
        f"\\input{{generated/{config.profile}/settings.tex}}\n")
    return _remember(settings)

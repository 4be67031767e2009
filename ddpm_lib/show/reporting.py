"""Saving figures and tables for the report, each stamped with where it came from.

Every output goes to its profile's own folder (``paths.figures_dir`` / ``paths.tables_dir``: real
CUB under ``figures/<profile>/``, synthetic data under ``figures/synthetic/<profile>/``), so no run
overwrites another profile's, and carries a visible stamp: profile, data, commit and date (under a
figure, beneath a table). Every saved path is remembered, so a notebook's last cell can list what it
wrote (:func:`written_files`).
"""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import time
from functools import lru_cache
from pathlib import Path

from ddpm_lib import paths
from ddpm_lib.identity import manifest, write_manifest

_WRITTEN: list[Path] = []


def data_label(source: str) -> str:
    """Human words for a data source."""
    return "real CUB-200-2011" if source == "cub" else "synthetic CUB-format replica (not real birds)"


@lru_cache(maxsize=1)
def commit() -> str:
    """The repository's commit (``abc1234``, with ``+changes`` when the working tree differs), or
    ``unknown`` outside a git checkout."""
    try:
        run = lambda *args: subprocess.run(["git", *args], cwd=paths.REPO_ROOT, capture_output=True, text=True,  # noqa: E731
                                           timeout=10)
        head = run("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stamp(config) -> str:
    """``"profile: demo | data: synthetic CUB-format replica (not real birds) | commit 1a2b3c4 | 2026-11-26"``."""
    return (f"profile: {config.profile} | data: {data_label(config.data.source)} | commit {commit()} | "
            f"{time.strftime('%Y-%m-%d')}")


def _remember(path: Path) -> Path:
    if path not in _WRITTEN:
        _WRITTEN.append(path)
    return path


def figures_dir(config) -> Path:
    return paths.figures_dir(config.profile, config.data.source)


def tables_dir(config) -> Path:
    return paths.tables_dir(config.profile, config.data.source)


# ----- laying a figure's text out so that nothing overlaps ----------------------------------------------
# Measured with matplotlib's own renderer (fig.canvas.draw(), artist.get_window_extent()), in display
# pixels; tests/test_figure_layout.py checks the result with the same measure, written independently.


def _overlap(a, b, tolerance: float = 0.5) -> bool:
    """Whether two display-space boxes share more than a hairline."""
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > tolerance) and (min(a.y1, b.y1) - max(a.y0, b.y0) > tolerance)


def _shown_tick_labels(axis, renderer) -> list:
    """The tick labels of one x or y axis that are drawn (inside the view, with text), as (label, box)."""
    if not axis.get_visible() or not axis.axes.axison:
        return []
    low, high = sorted(axis.get_view_interval())
    shown = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        label = tick.label1
        if label.get_visible() and label.get_text() and low <= tick.get_loc() <= high:
            shown.append((label, label.get_window_extent(renderer)))
    return shown


def _thin_tick_labels(fig, renderer) -> None:
    """Where tick labels of one axis collide (log axes label their minor ticks over a short range), drop
    the minor labels, then ask for fewer major ticks until they stand apart."""
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter

    for axes in fig.axes:
        for axis in (axes.xaxis, axes.yaxis):
            for attempt in range(6):
                boxes = [box for _, box in _shown_tick_labels(axis, renderer)]
                if not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]):
                    break
                if attempt == 0 and any(t.label1.get_text() for t in axis.get_minor_ticks()):
                    axis.set_minor_formatter(NullFormatter())
                elif axis.get_scale() == "log":
                    axis.set_major_locator(LogLocator(numticks=max(2, 6 - attempt)))
                else:
                    axis.set_major_locator(MaxNLocator(nbins=max(2, 7 - 2 * attempt)))
                fig.canvas.draw()


def separate_annotations(fig) -> None:
    """Move each annotation that lands on an earlier one (points close together, labelled "w=2", "w=3")
    to the nearest free offset above or below its point."""
    from matplotlib.text import Annotation

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for axes in fig.axes:
        placed = []
        for text in axes.texts:
            box = text.get_window_extent(renderer)
            if isinstance(text, Annotation) and any(_overlap(box, other) for other in placed):
                height = box.height * 72 / fig.dpi + 1  # points
                for step in range(1, 30):
                    offset = (3, (step + 1) // 2 * height * (1 if step % 2 else -1))
                    text.set_anncoords("offset points")
                    text.xyann = offset
                    box = text.get_window_extent(renderer)
                    if not any(_overlap(box, other) for other in placed):
                        break
            placed.append(box)


def lay_out(fig) -> None:
    """Lay a figure's text out so that nothing overlaps: the subplots fitted around their labels and
    the suptitle (``tight_layout``, unless the figure uses constrained layout), colliding tick
    labels thinned, annotations that land on each other moved apart. Called by :func:`save_figure`."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    if not isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):  # constrained layout lays out at draw
        fig.tight_layout()  # again where it ran before a suptitle was added (image_grid, then fig.suptitle)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    _thin_tick_labels(fig, renderer)
    separate_annotations(fig)
    fig.canvas.draw()


def add_stamp(fig, text: str):
    """Write ``text`` right-aligned under everything the figure shows (its tight bounding box), so it
    never covers a label; ``savefig(bbox_inches="tight")`` then grows to hold it. Returns the Text."""
    fig.canvas.draw()
    content = fig.get_tightbbox(fig.canvas.get_renderer())  # inches, from the figure's lower left corner
    gap = 2 / 72  # 2 points
    return fig.text(content.x1 / fig.get_figwidth(), (content.y0 - gap) / fig.get_figheight(), text,
                    ha="right", va="top", fontsize=6, color="0.4")


def record_made(folder: Path, name: str, what: str, config, inputs: dict | None) -> Path:
    """Write ``<folder>/<name>.manifest.json``: what made a figure or table (``identity.py``): the
    identities of its ``inputs`` (e.g. ``{"run": run.identity}``), the profile and data settings, the
    report stage's version, and the commit."""
    settings = {"name": name, "what": what, "profile": config.profile, "data": dataclasses.asdict(config.data)}
    return write_manifest(folder / f"{name}.manifest.json", manifest("report", inputs or {}, settings),
                          commit=commit(), made=time.strftime("%Y-%m-%d %H:%M:%S"))


def save_figure(fig, name: str, config, formats: tuple[str, ...] = ("png", "pdf"),
                inputs: dict | None = None) -> list[Path]:
    """Save a matplotlib figure as ``<figures dir>/<name>.<fmt>``, laid out (:func:`lay_out`) with the
    stamp below everything (:func:`add_stamp`), and its manifest beside it (:func:`record_made`).

    Args:
        fig: the figure.
        name: file stem, e.g. ``"fig1_dataset_samples"``.
        config: the run's ``Config`` (its profile and data source choose the folder and the stamp).
        inputs: the identities of what it shows (e.g. ``{"run": run.identity}``), for its manifest.
    """
    folder = figures_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    lay_out(fig)
    add_stamp(fig, stamp(config))
    written = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        written.append(_remember(path))
    record_made(folder, name, "figure", config, inputs)
    return written


def _tex_escape(text: str) -> str:
    return str(text).replace("\\", "/").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace(
        "#", r"\#").replace("~", r"\textasciitilde{}")


def format_value(value) -> str:
    """A table cell as people read it: ``--`` for nothing, 4 significant digits for floats, thousands
    separators for large integers."""
    if value is None or value == "":
        return "--" if value is None else ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def text_table(rows: list[dict]) -> str:
    """Rows as plain aligned text, for notebooks (no raw dicts, no reprs)."""
    columns = list(rows[0])
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(str(c)), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(str(v).ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line("-" * w for w in widths), *(line(r) for r in cells)])


def save_table(rows: list[dict], name: str, config, caption: str = "", inputs: dict | None = None) -> list[Path]:
    """Write ``rows`` (dicts with the same keys) as CSV and as a booktabs LaTeX table with the stamp
    printed beneath it (the .tex is one box, so ``\\resizebox`` can scale it whole), and its manifest
    beside them (:func:`record_made`; ``inputs``: the identities of what it scores)."""
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
    lines = [f"% {caption} -- written by ddpm_lib.show.reporting; do not edit".replace("\n", " "),
             r"\begin{tabular}{@{}c@{}}", r"\begin{tabular}{" + "l" * len(columns) + "}", r"\toprule",
             " & ".join(_tex_escape(c) for c in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_escape(format_value(row.get(c))) for c in columns) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}\\[2pt]",
              r"{\tiny\color{gray}" + _tex_escape(stamp(config)) + "}", r"\end{tabular}"]
    tex_path = folder / f"{name}.tex"
    tex_path.write_text("\n".join(lines) + "\n")
    record_made(folder, name, "table", config, inputs)
    return [_remember(csv_path), _remember(tex_path)]


def written_files() -> list[Path]:
    """Every path saved through this module in this session, in order."""
    return list(_WRITTEN)


def write_report_inputs(config, numbers: dict) -> Path:
    """Point the LaTeX report at this profile's figures and tables, and give it its numbers.

    Writes ``report/generated/<profile>/settings.tex`` (``\\ProfileName``, ``\\DataSource``,
    ``\\FigDir``, ``\\TableDir``, ``\\Stamp``, ``\\ifSynthetic`` and one macro per entry of
    ``numbers``, e.g. ``{"BestFID": "12.3"}`` -> ``\\BestFID``) and ``report/generated/active.tex``,
    which the report reads first. Returns the settings file.
    """
    folder = paths.REPORT_DIR / "generated" / config.profile
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f"% written by ddpm_lib.show.reporting for profile {config.profile}; do not edit",
        rf"\newcommand{{\ProfileName}}{{{_tex_escape(config.profile)}}}",
        rf"\newcommand{{\DataSource}}{{{_tex_escape(data_label(config.data.source))}}}",
        rf"\newcommand{{\FigDir}}{{{Path('..') / figures_dir(config).relative_to(paths.REPO_ROOT)}}}",
        rf"\newcommand{{\TableDir}}{{{tables_dir(config).relative_to(paths.REPORT_DIR)}}}",
        rf"\newcommand{{\Stamp}}{{{_tex_escape(stamp(config))}}}",
        r"\newif\ifSynthetic",
        r"\Synthetictrue" if config.data.source != "cub" else r"\Syntheticfalse",
    ]
    for key, value in numbers.items():
        if not key.isalpha():
            raise ValueError(f"report macro names must be letters only, got {key!r}")
        lines.append(rf"\newcommand{{\{key}}}{{{_tex_escape(value)}}}")
    settings = folder / "settings.tex"
    settings.write_text("\n".join(lines) + "\n")
    (paths.REPORT_DIR / "generated" / "active.tex").write_text(
        f"% the profile the report is built from (set by notebook 06 or `make report PROFILE=...`)\n"
        f"\\input{{generated/{config.profile}/settings.tex}}\n")
    return _remember(settings)

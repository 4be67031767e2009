"""Running the notebooks in order (papermill) and summarising what a run of them wrote.

``python -m ddpm_lib notebooks --profile demo`` executes ``notebooks/00..07`` with the profile (and
``PROGRESS = "lines"``: one plain line per logging step instead of a progress bar) injected into
each notebook's ``parameters`` cell, and writes the executed copies to ``runs/<profile>/executed/``;
``make demo`` and ``make full`` then build the report.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ddpm_lib import paths

NOTEBOOKS = ("00_diffusion_theory", "01_eda", "02_preprocessing", "03_baseline_unet", "04_small_unet",
             "05_ddim_cosine", "06_evaluation", "07_conditional")

# Notebook parameters that keep a profile within its time budget (a 2-core CPU for "demo"), beside what
# the profile's config already says (the side runs' lengths, train.comparison_steps; what notebook 06
# scores, the evaluation section): the timing table draws fewer images, and the conditional network
# is fine-tuned from the small U-Net instead of trained from scratch.
PROFILE_PARAMETERS = {
    "demo": {
        "05_ddim_cosine": {"NUM_TIMED": 12},
        "07_conditional": {"FINE_TUNE_STEPS": 600},
    },
}


class _ProgressLines:
    """Passes on only the training's progress lines (``step N/M ...``) of what the kernels print, so
    the terminal shows one line per notebook and per logging step; everything else is in the executed
    notebooks."""

    def __init__(self, stream):
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> None:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.startswith("step "):
                self.stream.write(f"      {line}\n")

    def flush(self) -> None:
        self.stream.flush()


def executed_dir(profile: str) -> Path:
    return paths.RUNS_DIR / profile / "executed"


def run_notebooks(profile: str, only: list[str] | None = None, progress: bool = True) -> list[Path]:
    """Execute the notebooks in order under ``profile``; returns the executed copies' paths."""
    import papermill

    out_dir = executed_dir(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [n for n in NOTEBOOKS if not only or n in only]
    written, started = [], time.perf_counter()
    for index, name in enumerate(names, start=1):
        parameters = {"PROFILE": profile, "PROGRESS": "lines", **PROFILE_PARAMETERS.get(profile, {}).get(name, {})}
        print(f"[{index}/{len(names)}] {name} (profile {profile}) ...", flush=True)
        notebook_started = time.perf_counter()
        output = out_dir / f"{name}.ipynb"
        papermill.execute_notebook(str(paths.REPO_ROOT / "notebooks" / f"{name}.ipynb"), str(output),
                                   parameters=parameters, kernel_name="python3", progress_bar=False,
                                   log_output=False, stdout_file=_ProgressLines(sys.stdout) if progress else None,
                                   cwd=str(paths.REPO_ROOT / "notebooks"),
                                   # the local kernel's TCP-without-encryption warning is noise here
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"])
        print(f"      done in {time.perf_counter() - notebook_started:.0f} s -> {output}", flush=True)
        written.append(output)
    print(f"all notebooks done in {time.perf_counter() - started:.0f} s")
    return written


def summary(profile: str, source: str) -> str:
    """A one-screen account of what a run of the notebooks wrote, and where."""
    figures = paths.figures_dir(profile, source)
    tables = paths.tables_dir(profile, source)
    runs = paths.RUNS_DIR / profile
    pdf = paths.REPORT_DIR / "main.pdf"
    lines = [f"=== what the {profile} run wrote ({'real CUB' if source == 'cub' else 'synthetic data'}) ==="]
    executed = sorted(executed_dir(profile).glob("*.ipynb"))
    lines.append(f"executed notebooks ({len(executed)}): {executed_dir(profile)}")
    lines.append(f"figures ({len(list(figures.glob('*.png')))} PNG + PDF): {figures}")
    lines.append(f"tables ({len(list(tables.glob('*.tex')))} LaTeX + CSV): {tables}")
    trained = sorted(p.name for p in runs.iterdir() if (p / "checkpoints").is_dir()) if runs.is_dir() else []
    lines.append(f"trained runs: {', '.join(trained) or 'none'} in {runs}")
    logged = sorted(runs.glob("*/wandb/*run-*")) if runs.is_dir() else []
    if logged:
        lines.append(f"Weights & Biases: {len(logged)} local run folder(s) under {runs}/<run>/wandb/ "
                     "(`wandb sync <folder>` uploads an offline one)")
    lines.append(f"data cache: {paths.PROCESSED_DIR}")
    lines.append(f"report: {pdf}" if pdf.exists() else "report: not built (install TeX: see README)")
    return "\n".join(lines)

"""Repository-root-relative paths, so nothing depends on the current folder.

The root is this package's parent folder (an editable install, as ``requirements.txt`` makes it),
or ``$DDPM_ROOT`` when set. Outputs of synthetic-data runs live under their own sub-folders, so they
never overwrite what a real-data run wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(os.environ.get("DDPM_ROOT", Path(__file__).resolve().parents[1])).resolve()
DATA_DIR = REPO_ROOT / "data"
RAW_DIR = DATA_DIR / "raw"  # downloaded archives, extracted CUB_200_2011/, synthetic replicas
PROCESSED_DIR = DATA_DIR / "processed"  # the 64x64 uint8 caches
FIGURES_DIR = REPO_ROOT / "figures"
RUNS_DIR = Path(os.environ.get("DDPM_RUNS_DIR", REPO_ROOT / "runs")).expanduser().resolve()  # one folder per run
REPORT_DIR = REPO_ROOT / "report"


def run_dir(profile: str, name: str) -> Path:
    """Where a run's checkpoints, metrics and samples go: ``<runs>/<profile>/<name>/``, where ``<runs>``
    is ``runs/`` in the repository, or ``$DDPM_RUNS_DIR`` / ``--runs-dir`` (e.g. a Google Drive folder)."""
    return RUNS_DIR / profile / name


def _outputs(base: Path, profile: str, source: str) -> Path:
    """One folder per profile, and synthetic-data outputs apart from real ones: ``base/<profile>/``
    for real CUB, ``base/synthetic/<profile>/`` otherwise (so a demo never overwrites a real run's
    outputs, and a colab run never mixes with a full run's)."""
    return base / profile if source == "cub" else base / "synthetic" / profile


def figures_dir(profile: str, source: str) -> Path:
    """Where a profile's figures go: ``figures/<profile>/`` or ``figures/synthetic/<profile>/``."""
    return _outputs(FIGURES_DIR, profile, source)


def tables_dir(profile: str, source: str) -> Path:
    """Where a profile's tables go: ``report/tables/<profile>/`` or ``report/tables/synthetic/<profile>/``."""
    return _outputs(REPORT_DIR / "tables", profile, source)

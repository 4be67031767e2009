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
RUNS_DIR = REPO_ROOT / "runs"
REPORT_DIR = REPO_ROOT / "report"


def run_dir(profile: str, name: str) -> Path:
    """Where a run's checkpoints, metrics and samples go: ``runs/<profile>/<name>/``."""
    return RUNS_DIR / profile / name


def figures_dir(profile: str, source: str) -> Path:
    """Where figures go: ``figures/`` for real CUB, ``figures/synthetic/<profile>/`` otherwise."""
    if source == "cub":
        return FIGURES_DIR
    return FIGURES_DIR / "synthetic" / profile

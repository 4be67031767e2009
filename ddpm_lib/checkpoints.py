"""Checkpoints: written atomically, the last N kept, the newest readable one found on resume.

A checkpoint is one ``ckpt_<step>.pt`` file holding everything a run needs to continue exactly:
model, EMA, optimizer, grad scaler, step, RNG states, config and the metrics so far. It is written
to a temporary file and renamed, so a run killed mid-save never leaves half a checkpoint under the
real name; if the newest file is unreadable anyway (a truncated copy, a full disk), loading falls
back to the previous one with a warning.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

PATTERN = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_path(folder: str | Path, step: int) -> Path:
    """``folder/ckpt_<step, 8 digits>.pt``."""
    return Path(folder) / f"ckpt_{step:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """The checkpoints in ``folder``, oldest first (by step)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict, folder: str | Path, step: int, keep: int = 3) -> Path:
    """Write ``state`` atomically as step ``step`` and delete all but the newest ``keep`` checkpoints."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    temporary.replace(path)  # atomic on POSIX: the old name never points at a partial file
    if keep > 0:
        for old in list_checkpoints(folder)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_latest(folder: str | Path, map_location="cpu") -> tuple[dict, Path] | tuple[None, None]:
    """The newest readable checkpoint in ``folder`` and its path, or (None, None) when there is none.

    Unreadable files are skipped, newest first, each with a warning naming it.
    """
    for path in reversed(list_checkpoints(folder)):
        try:
            state = torch.load(path, map_location=map_location, weights_only=False)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("not a training checkpoint")
            return state, path
        except Exception as error:  # truncated zip, unpickling errors, wrong content
            warnings.warn(f"checkpoint {path} is unreadable ({type(error).__name__}: {error}); "
                          "falling back to the previous one", stacklevel=2)
    return None, None

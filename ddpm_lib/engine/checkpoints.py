"""Checkpoints: written durably and atomically, the last N kept, the newest readable one found on resume.

A checkpoint is one ``ckpt_<step>.pt`` file holding everything a run needs to continue exactly:
model, EMA, optimizer, grad scaler, step, RNG states, config, W&B run id and the metrics so far. It
is written to a temporary file, flushed to the disk (``fsync``) and renamed, and the folder is
synced too, so neither a killed run nor a power cut leaves half a checkpoint under the real name; a
failed write (a full disk) removes its temporary file. Each file carries a digest of its tensors. If
the newest file is corrupt anyway (a truncated copy, a flipped byte), loading falls back to the
previous one with a warning; a file that cannot be read for another reason (a dropped mount) is tried
again and then stops the run with an error naming it, never mistaken for a missing checkpoint.

Pruning keeps the newest ``keep`` checkpoints *of the current run* and never deletes the file just
written; checkpoints that do not belong to the current line of training (those of an earlier run
when a run starts afresh, unreadable ones above the step a run resumed from) are moved aside into
``set-aside/<time>/`` rather than deleted (:func:`set_aside`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import time
import warnings
import zipfile
from pathlib import Path

import torch

PATTERN = re.compile(r"^ckpt_(\d+)\.pt$")
SET_ASIDE = "set-aside"


def checkpoint_path(folder: str | Path, step: int) -> Path:
    """``folder/ckpt_<step, 8 digits>.pt``."""
    return Path(folder) / f"ckpt_{step:08d}.pt"


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint file's name records."""
    match = PATTERN.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named like a checkpoint (ckpt_<step>.pt)")
    return int(match.group(1))


def list_checkpoints(folder: str | Path) -> list[Path]:
    """The checkpoints in ``folder``, oldest first (by step)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def _fsync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders: the rename is still atomic
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def save_checkpoint(state: dict, folder: str | Path, step: int, keep: int = 3) -> Path:
    """Write ``state`` durably as step ``step``, then delete all but the newest ``keep`` checkpoints
    at or below ``step`` (never the file just written)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    temporary = path.with_name(path.name + ".tmp")
    state = {**state, "digest": state_digest(state)}
    try:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)  # atomic on POSIX: the name never points at a partial file
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)
    current = [p for p in list_checkpoints(folder) if checkpoint_step(p) <= step and p != path]
    for old in current[: max(len(current) - (max(keep, 1) - 1), 0)]:
        old.unlink(missing_ok=True)
    return path


def set_aside(paths: list[Path], folder: str | Path) -> Path | None:
    """Move checkpoint files into ``folder/set-aside/<time>/`` (kept, but no longer "latest" for a
    resume, ``sample`` or ``evaluate``). Returns where they went (None when there was nothing)."""
    paths = [Path(p) for p in paths]
    if not paths:
        return None
    target = Path(folder) / SET_ASIDE / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        path.replace(target / path.name)
    return target


def set_aside_beyond(folder: str | Path, step: int | None) -> tuple[int, Path | None]:
    """Move aside the checkpoints that are not part of the line of training resumed at ``step`` (all of
    them when a run starts afresh, ``step`` None): an earlier run's, or an unreadable tail. Returns how
    many moved and where."""
    stale = [p for p in list_checkpoints(folder) if step is None or checkpoint_step(p) > step]
    return len(stale), set_aside(stale, folder)


class CheckpointReadError(OSError):
    """A checkpoint could not be read for a reason other than its content (a dropped mount, EIO, memory)."""


class CorruptCheckpoint(ValueError):
    """A checkpoint's content is broken: truncated, not a zip or pickle, or its tensors fail their digest."""


READ_ATTEMPTS = 3  # a read that fails for another reason than a corrupt file is tried this often


def state_digest(state) -> str:
    """A SHA-256 over every tensor of ``state`` (with its path, dtype and shape) and every plain value, in
    a fixed order: torch's files carry no checksum of their data, so a flipped byte would load silently."""
    digest = hashlib.sha256()

    def walk(path: str, value) -> None:
        if torch.is_tensor(value):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{path}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                if path or key != "digest":
                    walk(f"{path}/{key}", value[key])
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(f"{path}/{index}", item)
        else:
            digest.update(f"{path}={value!r}".encode())

    walk("", state)
    return digest.hexdigest()


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """One checkpoint file. Raises :class:`CorruptCheckpoint` when its content is broken (truncated, not a
    checkpoint, a failed digest); any other error (an I/O error, memory) propagates as it is."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as error:
        raise CorruptCheckpoint(f"{type(error).__name__}: {error}") from error
    except RuntimeError as error:
        if isinstance(error, torch.cuda.OutOfMemoryError) or "PytorchStreamReader" not in str(error):
            raise
        raise CorruptCheckpoint(f"{type(error).__name__}: {str(error)[:120]}") from error
    if not isinstance(state, dict) or "step" not in state:
        raise CorruptCheckpoint("not a training checkpoint")
    if "digest" in state and state_digest(state) != state["digest"]:
        raise CorruptCheckpoint("its tensors do not match the digest written with them")
    return state


def load_latest(folder: str | Path, map_location="cpu", warn: bool = True,
                pause: float = 1.0) -> tuple[dict, Path] | tuple[None, None]:
    """The newest readable checkpoint in ``folder`` and its path, or (None, None) when there is none.

    A corrupt file is skipped, newest first, each with a warning naming it. Any other failure (EIO on a
    dropped network mount, running out of memory while loading) is tried :data:`READ_ATTEMPTS` times,
    ``pause`` seconds apart, and then stops with :class:`CheckpointReadError` naming the file: it is never
    taken for "no checkpoint", so nothing is set aside and no run restarts from step 0 because of it.
    """
    for path in reversed(list_checkpoints(folder)):
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return load_checkpoint(path, map_location), path
            except CorruptCheckpoint as error:
                if warn:
                    warnings.warn(f"checkpoint {path} is unreadable ({error}); falling back to the previous one",
                                  stacklevel=2)
                break
            except Exception as error:
                if attempt == READ_ATTEMPTS:
                    raise CheckpointReadError(
                        f"could not read the checkpoint {path} ({type(error).__name__}: {error}) after {attempt} "
                        "tries; it is left as it is. Check the disk or mount (a Drive that dropped: mount it again) "
                        "and the free memory, then run the same command again") from error
                time.sleep(pause * attempt)
    return None, None


# ----- what a checkpoint holds, and putting it back -------------------------------------------------
def rng_state(device: torch.device) -> dict:
    """The CPU generator's state, and the device's on CUDA: what makes a resumed run draw as the
    uninterrupted one would."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore :func:`rng_state`'s output (the CUDA part only on CUDA: a GPU run resumes on the CPU)."""
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def training_state(trainer) -> dict:
    """Everything a :class:`~ddpm_lib.engine.train.Trainer` needs to continue exactly: step counts,
    model, EMA (rank 0), optimizer, grad scaler, generators, config, W&B id, metrics so far, the data
    statistics, the run's metadata, how it trained (``trainer.engine()``), its identity (the run's
    manifest) and the learning rate's planned segments."""
    return {
        "step": trainer.step, "applied_steps": trainer.applied_steps,
        "model": trainer.model.state_dict(), "ema": trainer.ema.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
        "rng": rng_state(trainer.device), "config": trainer.config.to_dict(), "wandb_id": trainer.wandb_id,
        "history": trainer.logger.history, "mean": trainer.mean.cpu(), "std": trainer.std.cpu(),
        "metadata": trainer.metadata, "engine": trainer.engine(),
        "manifest": trainer.manifest.to_dict(), "lr_segments": trainer.lr_segments,
    }


def restore_training_state(trainer, state: dict) -> list[dict]:
    """Put :func:`training_state`'s ``state`` back into ``trainer``, in the trainer's own mode
    (:func:`apply_mode`); returns the metrics history so far."""
    trainer.model.load_state_dict(state["model"])
    if trainer.ema is not None:
        trainer.ema.load_state_dict(state["ema"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    apply_mode(trainer.optimizer, graph=trainer.use_graph, lr=trainer.settings.lr,
               weight_decay=trainer.settings.weight_decay, device=trainer.device)
    if trainer.scaler is not None and state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"], trainer.device)
    trainer.step = int(state["step"])
    trainer.applied_steps = int(state.get("applied_steps", trainer.step))
    trainer.wandb_id = state.get("wandb_id")
    trainer.lr_segments = state.get("lr_segments")
    return list(state.get("history", []))


def apply_mode(optimizer: torch.optim.Optimizer, graph: bool, lr: float, weight_decay: float,
               device: torch.device) -> None:
    """Make a loaded AdamW state fit the mode this trainer runs in, whatever mode saved it (a
    CUDA-graph run resumed on the CPU; an fp16, DDP or eager run resumed by a graph trainer):
    ``capturable``, ``lr`` as a device tensor (graph) or a float, each step counter where that mode
    keeps it. The learning rate and weight decay come from the config, not the checkpoint
    (``load_state_dict`` restores the saved param groups, flags included)."""
    for group in optimizer.param_groups:
        group["capturable"] = graph
        group["lr"] = torch.tensor(lr, device=device) if graph else lr
        group["weight_decay"] = weight_decay
        for parameter in group["params"]:
            step = optimizer.state.get(parameter, {}).get("step")
            if torch.is_tensor(step):
                where = parameter.device if graph else torch.device("cpu")
                optimizer.state[parameter]["step"] = step.detach().to(where, torch.float32)


def save_on_main(make_state, folder: str | Path, step: int, keep: int, context) -> Path | None:
    """Rank 0 writes ``make_state()`` as step ``step``; every process then learns whether it worked, so a
    failure there (a full disk, a lost mount) stops every rank with the error instead of a hang."""
    from ddpm_lib.engine.distributed import all_ok

    path, error = None, None
    if context.is_main:
        try:
            path = save_checkpoint(make_state(), folder, step, keep)
        except Exception as failure:
            error = failure
    if not all_ok(error is None, context):
        if error is not None:
            raise error
        raise RuntimeError(f"rank 0 could not write the checkpoint of step {step}; stopping")
    return path

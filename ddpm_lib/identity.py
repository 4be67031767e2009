"""Every artefact knows what made it: the one rule for manifests, identities, reuse, locks and moving aside.

An artefact (an extraction, a data cache, a classifier, a run, a feature cache, an evaluation row, a
report table or figure) is written with a :class:`Manifest`: its kind, the identities of its inputs,
every setting that shaped it, and the version of the code stage that made it. Its identity is a hash
of exactly that. Everything that reuses an artefact asks :func:`reuse_differences` (or
:func:`require_same`) first: reuse needs an equal identity; otherwise the differing entries are named,
with the ways forward.

**Code versions** are per-stage constants (:data:`STAGE_VERSIONS`), bumped by the commit that changes
what a stage produces, rather than a hash of the stage's source: a source hash changes with every
comment and refactor (the reorganisation that moved every module of this package left every result
bit for bit the same, ``tests/test_reference.py``), so it would throw away valid caches and runs on
every edit. A bump is a decision a reviewer sees in the diff.

Also here, because every stage needs them: :func:`file_lock` (one process prepares, the others wait
and then reuse), :func:`temporary_path` (unique per process, so two writers never share a file),
:func:`move_aside` (nothing of the user's is deleted) and :func:`made_here` / :func:`mark_made_here`
(the code removes only folders it made itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import time
import uuid
from pathlib import Path

# The version of each code stage; bump one in the commit that changes what the stage produces.
STAGE_VERSIONS = {
    "extraction": 1,  # an extracted CUB_200_2011 folder (data/download.py)
    "data_cache": 3,  # the uint8 cache (data/cub.py; 2: the stratified split, 3: manifests with identities)
    "classifier": 3,  # the species classifier (evaluation/classifier.py; 2: with a manifest and a version;
    # 3: K + 1 outputs with "not a bird", no label smoothing, calibrated by temperature scaling)
    "run": 1,  # a training run (engine/, experiment.py)
    "features": 1,  # a real set's cached features (evaluation/metrics.py, evaluation/classifier.py)
    "evaluation": 1,  # a row of scores (evaluation/scoring.py)
    "report": 1,  # a figure or table (show/reporting.py)
}
MARKER = ".made-by-ddpm_lib"  # in a folder this code made (and so may remove)
SET_ASIDE = "set-aside"


class IdentityMismatch(ValueError):
    """An artefact was asked for whose identity differs from the one found (one line: what and why)."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What made an artefact: its ``kind`` (a key of :data:`STAGE_VERSIONS`), the identities of its
    ``inputs`` (name -> identity string), every ``setting`` that shaped it (JSON values) and the code
    stage's ``version``. Its :attr:`identity` is a hash of exactly these four."""

    kind: str
    inputs: dict
    settings: dict
    version: int

    @property
    def identity(self) -> str:
        """16 hex digits of the SHA-256 of the manifest's canonical JSON."""
        payload = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "inputs": self.inputs, "settings": self.settings, "version": self.version}

    @classmethod
    def from_dict(cls, values: dict) -> Manifest:
        return cls(values["kind"], dict(values.get("inputs", {})), dict(values.get("settings", {})),
                   int(values.get("version", 0)))


def manifest(kind: str, inputs: dict | None = None, settings: dict | None = None) -> Manifest:
    """The manifest of a ``kind`` artefact made now, by this code (its stage's current version)."""
    if kind not in STAGE_VERSIONS:
        raise ValueError(f"unknown artefact kind {kind!r}; use one of {sorted(STAGE_VERSIONS)}")
    return Manifest(kind, json.loads(json.dumps(inputs or {}, default=str)),
                    json.loads(json.dumps(settings or {}, default=str)), STAGE_VERSIONS[kind])


def _flatten(prefix: str, value) -> dict:
    if isinstance(value, dict):
        flat = {}
        for key, inner in value.items():
            flat.update(_flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return flat or {prefix: {}}
    return {prefix: value}


def reuse_differences(found: Manifest | dict | None, wanted: Manifest) -> list[str]:
    """The entries in which ``found`` (the artefact on disk) differs from ``wanted`` (what is asked
    for), each as ``"<entry>: <found> found, <wanted> asked for"``; [] when the identities are equal.
    An artefact without a manifest (made before identities were recorded) differs in everything."""
    if found is None:
        return ["no record of what made it (made before identities were recorded)"]
    found = found if isinstance(found, Manifest) else Manifest.from_dict(found)
    if found.identity == wanted.identity:
        return []
    old, new = _flatten("", found.to_dict()), _flatten("", wanted.to_dict())
    return [f"{key}: {old.get(key, 'nothing')!r} found, {new.get(key, 'nothing')!r} asked for"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def require_same(found: Manifest | dict | None, wanted: Manifest, what: str, ways_forward: str) -> None:
    """Raise :class:`IdentityMismatch` naming ``what``, every differing entry and the ways forward,
    unless ``found`` and ``wanted`` have the same identity."""
    differences = reuse_differences(found, wanted)
    if differences:
        raise IdentityMismatch(f"{what} was made from something else: {'; '.join(differences)}. {ways_forward}")


def write_manifest(path: str | Path, record: Manifest, **extra) -> Path:
    """Write ``record`` (with its identity and ``extra`` facts beside it) as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    temporary.write_text(json.dumps({**record.to_dict(), "identity": record.identity, **extra}, indent=2,
                                    default=str) + "\n")
    os.replace(temporary, path)
    return path


def read_manifest(path: str | Path) -> Manifest | None:
    """The manifest written by :func:`write_manifest`, or None (missing or unreadable)."""
    try:
        return Manifest.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ----- writing safely beside other processes ----------------------------------------------------------
def temporary_path(path: str | Path) -> Path:
    """A temporary name beside ``path``, unique to this process and call: ``.<name>.<pid>-<random>.tmp``,
    so two processes writing the same artefact never write into one file."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def file_lock(path: str | Path, what: str, poll: float = 0.5):
    """Hold an exclusive lock on ``path`` (a ``.lock`` file) for the block: a second process that wants
    the same ``what`` waits, says so once, and goes on when the first is done (and then finds its work
    done). Where the file system has no locks (some network mounts), the block runs unlocked: the
    writers' unique temporary names and atomic renames still keep every file whole."""
    import fcntl

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError:  # a read-only place: nothing can be written there anyway
        yield
        return
    locked, said = False, False
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if not said:
                    print(f"waiting for another process that is preparing {what} ({path})", flush=True)
                    said = True
                time.sleep(poll)
            except OSError as error:
                if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    break  # no locks on this file system
                raise
        yield
    finally:
        if locked:
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


# ----- nothing of the user's is deleted -----------------------------------------------------------------
def mark_made_here(folder: str | Path, record: Manifest | None = None) -> None:
    """Mark ``folder`` as made by this code (so :func:`made_here` lets it be removed or replaced)."""
    payload = {"made": time.strftime("%Y-%m-%d %H:%M:%S")}
    if record is not None:
        payload.update(record.to_dict(), identity=record.identity)
    (Path(folder) / MARKER).write_text(json.dumps(payload, default=str) + "\n")


def made_here(folder: str | Path) -> bool:
    """Whether ``folder`` carries :func:`mark_made_here`'s marker."""
    return (Path(folder) / MARKER).is_file()


def move_aside(path: str | Path, into: str | Path | None = None) -> Path:
    """Move ``path`` (a file or folder) into ``<into>/set-aside/<time>/`` (``into`` defaults to its
    parent), keeping it whole; returns where it went. Used instead of deleting anything not made here."""
    path = Path(path)
    target_dir = Path(into if into is not None else path.parent) / SET_ASIDE / time.strftime("%Y%m%d-%H%M%S")
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    while target.exists():
        target = target_dir / f"{path.name}-{uuid.uuid4().hex[:4]}"
    os.replace(path, target)
    return target

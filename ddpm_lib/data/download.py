"""Fetching and unpacking the CUB-200-2011 archive: resumable download, MD5 check, safe extraction.

Every step is idempotent: a verified archive is not fetched again (a note under ``data/notes/``
records its size, mtime and checksum, so a second run does not even re-hash 1.1 GB; notes never go
beside the archive, which may sit on a read-only mount), and an archive already extracted (a marker
file records which one) is not extracted again.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ddpm_lib import paths
from ddpm_lib.identity import file_lock, manifest, move_aside

CUB_URLS = (
    "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",  # current
    "http://www.vision.caltech.edu/visipedia-data/CUB-200-2011/CUB_200_2011.tgz",  # legacy
)
CUB_MD5 = "97eceeb196236b17998738112f37df78"
ARCHIVE_NAME = "CUB_200_2011.tgz"
EXTRACTED_MARKER = ".extracted_from.json"


class DownloadError(RuntimeError):
    """The archive could not be fetched from any URL."""


class ChecksumError(RuntimeError):
    """The archive's MD5 differs from the expected one."""


class UnsafeArchiveError(RuntimeError):
    """The archive holds a member that would land outside the target folder, or a link."""


def md5sum(path: str | Path, chunk_size: int = 1 << 22) -> str:
    """The MD5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _note_path(archive: Path) -> Path:
    """Where the MD5 note of ``archive`` lives: ``data/notes/<hash of its absolute path>.json``."""
    key = hashlib.sha1(str(Path(archive).resolve()).encode()).hexdigest()[:16]
    return paths.DATA_DIR / "notes" / f"md5-{key}.json"


def verified_md5(archive: Path) -> str:
    """The archive's MD5, from its note when size and mtime still match, else computed (and noted)."""
    archive = Path(archive)
    stat = archive.stat()
    note = _note_path(archive)
    if note.exists():
        try:
            saved = json.loads(note.read_text())
            if saved["size"] == stat.st_size and saved["mtime_ns"] == stat.st_mtime_ns:
                return saved["md5"]
        except (ValueError, KeyError):
            pass  # an unreadable note is recomputed
    checksum = md5sum(archive)
    try:
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(json.dumps({"path": str(archive.resolve()), "size": stat.st_size,
                                    "mtime_ns": stat.st_mtime_ns, "md5": checksum}))
    except OSError:
        pass  # no note (a read-only checkout): the next run hashes again, nothing else changes
    return checksum


def check_md5(archive: Path, expected: str | None) -> str:
    """Verify ``archive`` against ``expected`` (None: no check). On a mismatch the file is moved
    aside to ``<name>.bad`` (never used again) and a :class:`ChecksumError` says what to do."""
    checksum = verified_md5(archive)
    if expected is not None and checksum != expected.lower():
        bad = archive.with_name(archive.name + ".bad")
        note = _note_path(archive)
        archive.replace(bad)
        note.unlink(missing_ok=True)
        raise ChecksumError(
            f"{archive.name}: MD5 {checksum} does not match the expected {expected}; the file was moved "
            f"to {bad} and will not be used. Delete it and run again to download afresh, or pass an "
            "archive you trust."
        )
    return checksum


def _fetch(url: str, partial: Path, timeout: float, progress: bool) -> None:
    """Fetch ``url`` into ``partial``: the rest of it over HTTP Range when part of it is already there.

    A server that ignores the Range request (status 200) sends the whole file: it goes to a
    separate ``.fresh`` file, which replaces ``partial`` only once it holds more, so a partial
    archive is never truncated by an answer that is not the archive. An HTML answer (an error page
    or a landing page, as the legacy CUB URL is known to give) is refused without touching anything.
    """
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "ddpm_lib"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to fetch: the partial file is complete
            return
        raise
    with response:
        kind = response.headers.get("Content-Type", "")
        if kind.split(";")[0].strip().lower() == "text/html":
            raise DownloadError(f"{url} answered with a web page ({kind}), not the archive")
        resume = bool(have) and response.status == 206
        target = partial if resume else partial.with_name(partial.name + ".fresh")
        length = response.headers.get("Content-Length")
        total = (have if resume else 0) + int(length) if length is not None else None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=have if resume else 0, unit="B", unit_scale=True,
                       desc=partial.name.split(".")[0])
        try:
            with open(target, "ab" if resume else "wb") as handle:
                while block := response.read(1 << 20):
                    handle.write(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
            if not resume and target.exists():  # keep whichever of the two holds more
                if target.stat().st_size > have:
                    target.replace(partial)
                else:
                    target.unlink()
        if total is not None and partial.stat().st_size < total:
            raise DownloadError(f"connection closed at {partial.stat().st_size:,} of {total:,} bytes")


def download(
    destination: str | Path,
    urls: Sequence[str] = CUB_URLS,
    md5: str | None = CUB_MD5,
    attempts: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download the archive to ``destination``, resuming a partial file, and verify its MD5.

    Each URL is tried in turn, up to ``attempts`` times each; an interrupted transfer resumes
    where it stopped (HTTP Range). A file that fails the checksum counts as that URL's failure (it
    is kept aside as ``*.bad``) and the next URL is tried. A full disk stops at once. A verified
    archive already at ``destination`` is reused.

    Args:
        destination: the archive's path, e.g. ``data/raw/CUB_200_2011.tgz``.
        urls: where to fetch it from, in order (the current CaltechDATA URL, then the legacy one).
        md5: the expected checksum (injectable for tests); None skips the check.
    Returns:
        ``destination`` (where a link points, when it is one).

    A ``destination`` that is a symbolic link (as Colab's setup makes it, to Google Drive) is followed:
    the partial file and the archive land where the link points, so both survive a runtime reset.
    """
    destination = Path(destination)
    if destination.is_symlink():
        destination = destination.resolve()
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        check_md5(destination, md5)
        return destination
    partial = destination.with_name(destination.name + ".part")
    failures = []
    for url in urls:
        for attempt in range(1, attempts + 1):
            try:
                _fetch(url, partial, timeout, progress)
                partial.replace(destination)
                check_md5(destination, md5)
                return destination
            except ChecksumError as error:
                failures.append(f"{url}: {error}")
                break  # this URL serves something else: try the next one
            except OSError as error:
                if error.errno == errno.ENOSPC:
                    raise DownloadError(
                        f"the disk holding {destination.parent} is full ({error}); free at least 1.2 GB there "
                        f"(the partial file {partial} is kept) and run again") from error
                failures.append(f"{url} (try {attempt}): {error}")
            except (DownloadError, http.client.HTTPException) as error:
                failures.append(f"{url} (try {attempt}): {type(error).__name__}: {error}")
            time.sleep(min(0.5 * attempt, 2.0))
    kept = f"; the partial file {partial} is kept for a resume" if partial.exists() else ""
    raise DownloadError(
        f"could not download {destination.name}{kept}. "
        "Tried:\n  " + "\n  ".join(failures) + "\nWith no internet, copy the archive (or the extracted "
        "CUB_200_2011 folder) to this machine and pass its path, or set DDPM_DATA_DIR."
    )


def _check_member(member: tarfile.TarInfo, target: Path) -> None:
    name = member.name
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"refusing link {name!r} -> {member.linkname!r} in the archive")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"refusing special file {name!r} in the archive")
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith(("/", "\\")) or ".." in pure.parts:
        raise UnsafeArchiveError(f"refusing member {name!r}: it would land outside {target}")
    resolved = (target / name).resolve()
    if target.resolve() not in resolved.parents and resolved != target.resolve():
        raise UnsafeArchiveError(f"refusing member {name!r}: it would land outside {target}")


def extracted_md5(folder: str | Path) -> str | None:
    """The MD5 of the archive a finished extraction came from (its marker), or None."""
    marker = Path(folder) / EXTRACTED_MARKER
    try:
        return json.loads(marker.read_text()).get("md5")
    except (OSError, ValueError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(target: str | Path) -> list[Path]:
    """Delete ``.extracting-<pid>`` folders that a killed extraction left in ``target`` (about 1.2 GB
    each with real CUB); a folder whose process still runs is left alone. Returns what was removed."""
    removed = []
    for folder in Path(target).glob(".extracting-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def extract(archive: str | Path, target: str | Path) -> Path:
    """Extract a CUB-shaped archive into ``target`` safely and return ``target/CUB_200_2011``.

    Members with absolute paths, ``..``, links or special files are refused before anything is
    written. Extraction goes to a folder of this process's own that is renamed at the end, so a killed
    run leaves no half-extracted dataset; a second call with the same archive does nothing. One process
    extracts at a time (a file lock); one that waited finds the work done. A ``CUB_200_2011`` folder
    already there that this code did not extract (a copy of yours) is moved aside into
    ``target/set-aside/<time>/``, never deleted.
    """
    archive, target = Path(archive), Path(target)
    folder = target / "CUB_200_2011"
    checksum = verified_md5(archive)
    if extracted_md5(folder) == checksum:
        return folder
    target.mkdir(parents=True, exist_ok=True)
    with file_lock(target / ".extract.lock", f"the extraction of {archive.name}"):
        if extracted_md5(folder) == checksum:  # another process finished it while this one waited
            return folder
        remove_stale_staging(target)
        staging = target / f".extracting-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)  # this process's own name: nobody else's files
        staging.mkdir()
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member, staging)
                if not any(PurePosixPath(m.name).parts[:1] == ("CUB_200_2011",) for m in members):
                    raise UnsafeArchiveError(f"{archive.name} has no CUB_200_2011/ folder at its top")
                tar.extractall(staging, members=members,
                               **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            record = manifest("extraction", {"archive": checksum})
            (staging / "CUB_200_2011" / EXTRACTED_MARKER).write_text(
                json.dumps({"archive": archive.name, "md5": checksum, "identity": record.identity}))
            if folder.exists():
                if extracted_md5(folder) is not None:  # an extraction of another archive, made here
                    shutil.rmtree(folder)
                else:  # not made here: the user's copy, kept whole
                    moved = move_aside(folder)
                    warnings.warn(f"{folder} was not extracted here; moved it aside to {moved}", stacklevel=2)
            (staging / "CUB_200_2011").replace(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder

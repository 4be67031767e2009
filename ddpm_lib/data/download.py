"""Fetching and unpacking the CUB-200-2011 archive: resumable download, MD5 check, safe extraction.

Every step is idempotent: a verified archive is not fetched again (a ``.md5`` note beside it
records size, mtime and checksum, so a second run does not even re-hash 1.1 GB), and an archive
already extracted (a marker file records which one) is not extracted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

CUB_URLS = (
    "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",  # current
    "http://www.vision.caltech.edu/visipedia-data/CUB-200-2011/CUB_200_2011.tgz",  # legacy
)
CUB_MD5 = "97eceeb196236b17998738112f37df78"
CUB_SIZE = 1_150_585_339
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
    return archive.with_name(archive.name + ".md5")


def verified_md5(archive: Path) -> str:
    """The archive's MD5, from its note when size and mtime still match, else computed (and noted)."""
    stat = archive.stat()
    note = _note_path(archive)
    if note.exists():
        try:
            saved = json.loads(note.read_text())
            if saved["size"] == stat.st_size and saved["mtime"] == stat.st_mtime:
                return saved["md5"]
        except (ValueError, KeyError):
            pass  # an unreadable note is recomputed
    checksum = md5sum(archive)
    note.write_text(json.dumps({"size": stat.st_size, "mtime": stat.st_mtime, "md5": checksum}))
    return checksum


def check_md5(archive: Path, expected: str | None) -> str:
    """Verify ``archive`` against ``expected`` (None: no check). On a mismatch the file is moved
    aside to ``<name>.bad`` (never used again) and a :class:`ChecksumError` says what to do."""
    checksum = verified_md5(archive)
    if expected is not None and checksum != expected.lower():
        bad = archive.with_name(archive.name + ".bad")
        archive.replace(bad)
        _note_path(archive).unlink(missing_ok=True)
        raise ChecksumError(
            f"{archive.name}: MD5 {checksum} does not match the expected {expected}; the file was moved "
            f"to {bad} and will not be used. Delete it and run again to download afresh, or pass an "
            "archive you trust."
        )
    return checksum


def _fetch(url: str, partial: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``partial`` (HTTP Range when part of it is already there)."""
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
        if have and response.status != 206:  # the server ignored Range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=partial.name.split(".")[0])
        try:
            with open(partial, "ab" if have else "wb") as handle:
                while block := response.read(1 << 20):
                    handle.write(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
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
    where it stopped (HTTP Range). A verified archive already at ``destination`` is reused.

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
            except ChecksumError:
                raise
            except (OSError, DownloadError, urllib.error.URLError) as error:
                failures.append(f"{url} (try {attempt}): {error}")
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


def extract(archive: str | Path, target: str | Path) -> Path:
    """Extract a CUB-shaped archive into ``target`` safely and return ``target/CUB_200_2011``.

    Members with absolute paths, ``..``, links or special files are refused before anything is
    written. Extraction goes to a temporary folder that is renamed at the end, so a killed run
    leaves no half-extracted dataset; a second call with the same archive does nothing.
    """
    archive, target = Path(archive), Path(target)
    folder = target / "CUB_200_2011"
    marker = folder / EXTRACTED_MARKER
    checksum = verified_md5(archive)
    if marker.exists() and json.loads(marker.read_text()).get("md5") == checksum:
        return folder
    target.mkdir(parents=True, exist_ok=True)
    staging = target / f".extracting-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, staging)
            if not any(PurePosixPath(m.name).parts[:1] == ("CUB_200_2011",) for m in members):
                raise UnsafeArchiveError(f"{archive.name} has no CUB_200_2011/ folder at its top")
            tar.extractall(staging, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        (staging / "CUB_200_2011" / EXTRACTED_MARKER).write_text(json.dumps({"archive": archive.name, "md5": checksum}))
        if folder.exists():
            shutil.rmtree(folder)
        (staging / "CUB_200_2011").replace(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder

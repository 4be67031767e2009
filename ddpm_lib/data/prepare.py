"""``prepare()``: from wherever the data are (or the internet, or the synthetic replica) to the cache.

Sources, in order of precedence:
1. ``data_dir`` (argument) or ``$DDPM_DATA_DIR``: an archive you already have (``.tgz``), a folder
   holding it, or an extracted ``CUB_200_2011`` folder (a GCP bucket copy, a Drive folder). It is
   remembered (``data/notes/data_location.json``) with the identity of what it holds, so later
   commands need neither the path nor the network; a location given later replaces it;
2. ``source="cub"`` with nothing given: the remembered location, checked against its recorded
   identity (changed: an error naming both identities; gone: the cache made from it, else an error,
   never a silent download); with nothing remembered, a finished extraction in
   ``data/raw/CUB_200_2011``, else the archive in ``data/raw/``, else a download (current URL, then
   the legacy one);
3. ``source="synthetic"``: the procedural replica, written as an archive in the same layout and
   then run through the very same extraction and preprocessing. A data location is an error here.

The cache is named by its identity (the source's checksum and the options, ``cub.cache_manifest``)
and found *before* anything is extracted: with the cache in place (on Google Drive, say), a reset
runtime does not unpack 1.1 GB again. Every write is locked against a second process and goes
through a name of its own, so two notebooks (or two runtimes) preparing at once both finish.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ddpm_lib import paths
from ddpm_lib.data.cub import SOURCES, PreprocessOptions, build_cache, cache_path, folder_checksum
from ddpm_lib.data.download import ARCHIVE_NAME, CUB_MD5, CUB_URLS, download, extract, extracted_md5, verified_md5
from ddpm_lib.data.synthetic import RENDER_VERSION, make_synthetic_archive
from ddpm_lib.identity import IdentityMismatch, file_lock, temporary_path


def locate_source(path: str | Path) -> tuple[str, Path]:
    """Classify a user-given data location: ``("archive", file)`` or ``("folder", CUB_200_2011 dir)``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data location {path} does not exist (check the path or DDPM_DATA_DIR)")
    if path.is_file():
        if path.name.endswith((".tgz", ".tar.gz", ".tar")):
            return "archive", path
        raise ValueError(f"{path} is not a .tgz/.tar archive; pass the CUB archive or its extracted folder")
    for folder in (path, path / "CUB_200_2011"):
        if (folder / "images.txt").exists():
            return "folder", folder
    if (path / ARCHIVE_NAME).exists():
        return "archive", path / ARCHIVE_NAME
    raise ValueError(
        f"{path} holds neither {ARCHIVE_NAME} nor an extracted CUB_200_2011 folder (with images.txt)"
    )


def _location_note() -> Path:
    return paths.DATA_DIR / "notes" / "data_location.json"


def remembered_location() -> dict | None:
    """The data location an earlier ``prepare --data-dir`` used: {"kind", "path", "checksum"}, or None."""
    try:
        return json.loads(_location_note().read_text())
    except (OSError, ValueError):
        return None


class DataLocationGone(FileNotFoundError):
    """The data location remembered from an earlier ``--data-dir`` no longer exists."""


def _remember(kind: str, location: Path, checksum: str) -> None:
    try:
        note = _location_note()
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(json.dumps({"kind": kind, "path": str(Path(location).resolve()), "checksum": checksum}) + "\n")
    except OSError:
        pass  # a read-only checkout: the path must be given again next time, nothing else changes


@dataclass
class RawSource:
    """Where the data are and their checksum (the cache key's source part), before any extraction.

    ``kind`` is ``"folder"`` (``location`` is an extracted ``CUB_200_2011``) or ``"archive"`` (a
    checked archive, to be extracted into ``extract_to`` when the cache needs building).
    """

    kind: str
    location: Path
    checksum: str
    extract_to: Path | None = None

    def folder(self) -> Path:
        """The extracted ``CUB_200_2011`` folder (extracting the archive when needed)."""
        if self.kind == "folder":
            return self.location
        return extract(self.location, self.extract_to)


def _check_archive(location: Path, expected: str | None) -> str:
    checksum = verified_md5(location)
    if expected is not None and checksum != expected:
        raise ValueError(
            f"{location}: MD5 {checksum} is not the CUB archive's {expected}; pass the real "
            "CUB_200_2011.tgz, or its extracted folder"
        )
    return checksum


def find_source(
    source: str = "cub",
    data_dir: str | Path | None = None,
    raw_dir: str | Path | None = None,
    urls: Sequence[str] = CUB_URLS,
    md5: str | None = CUB_MD5,
    synthetic_images: int = 600,
    synthetic_classes: int = 10,
    synthetic_seed: int = 0,
    progress: bool = True,
) -> RawSource:
    """Find (or make, or download) the data and their checksum without extracting anything.

    Arguments as in :func:`prepare`. The checksum is the archive's MD5, or for an extracted folder
    the MD5 of its metadata and of every listed image's size and modification time.
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: use one of {SOURCES}")
    raw_dir = Path(raw_dir) if raw_dir is not None else paths.RAW_DIR
    say = print if progress else (lambda *args, **kwargs: None)
    if source == "synthetic":
        if data_dir:
            raise ValueError(f"a data location ({data_dir}) is for real CUB data, but data.source is 'synthetic' (the "
                             "replica); drop the location, or use real data (a colab or full profile)")
        # the renderer's version is part of the name: an archive drawn by another renderer is other data
        folder = raw_dir / (f"synthetic-{synthetic_images}x{synthetic_classes}-seed{synthetic_seed}"
                            f"-renderer{RENDER_VERSION}")
        archive = folder / ARCHIVE_NAME
        with file_lock(raw_dir / f".{folder.name}.lock", "the synthetic archive"):
            if not archive.exists():
                say(f"writing a synthetic CUB-format archive ({synthetic_images} images) to {archive}")
                _write_synthetic_archive(archive, synthetic_images, synthetic_classes, synthetic_seed)
        return RawSource("archive", archive, verified_md5(archive), folder)
    data_dir = data_dir or os.environ.get("DDPM_DATA_DIR")
    if data_dir:
        kind, location = locate_source(data_dir)
        checksum = folder_checksum(location) if kind == "folder" else _check_archive(location, md5)
        _remember(kind, location, checksum)
        return RawSource(kind, location, checksum, raw_dir)
    remembered = remembered_location()
    if remembered is not None:
        return _remembered_source(remembered, raw_dir, say)
    extracted = raw_dir / "CUB_200_2011"
    checksum = extracted_md5(extracted)
    if checksum is not None:  # a finished extraction of an archive checked when it was extracted
        return RawSource("folder", extracted, checksum)
    archive = raw_dir / ARCHIVE_NAME
    if not archive.exists():
        say(f"downloading {ARCHIVE_NAME} to {raw_dir} (skipped when already verified)")
    location = download(archive, urls=urls, md5=md5, progress=progress)  # verifies; no network if present
    return RawSource("archive", location, verified_md5(location), raw_dir)


def _remembered_source(remembered: dict, raw_dir: Path, say) -> RawSource:
    """The remembered location, if it still holds what it held when it was given (its identity)."""
    path = Path(remembered["path"])
    if not path.exists():
        raise DataLocationGone(
            f"the data location {path}, given earlier with --data-dir (or DDPM_DATA_DIR), is gone; pass "
            "--data-dir with where the data are now (an unmounted drive: mount it and run again)")
    kind, location = locate_source(path)
    checksum = folder_checksum(location) if kind == "folder" else verified_md5(location)  # checked when given
    if checksum != remembered["checksum"]:
        raise IdentityMismatch(
            f"the data location {path} holds other data than when it was given (identity {checksum} now, "
            f"{remembered['checksum']} recorded); if these are the data you want, pass --data-dir {path} to use "
            "and remember them, otherwise put the original data back")
    say(f"using the data location given before: {path}")
    return RawSource(kind, location, checksum, raw_dir)


def _write_synthetic_archive(archive: Path, images: int, classes: int, seed: int) -> None:
    """The replica's archive, written in a folder of this process's own and renamed into place."""
    staging = temporary_path(archive.parent)
    staging.mkdir(parents=True)
    try:
        written = make_synthetic_archive(staging, num_images=images, num_classes=classes, seed=seed)
        archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(written, archive)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # this process's own folder


def ensure_raw(source: str = "cub", data_dir=None, raw_dir=None, urls: Sequence[str] = CUB_URLS,
               md5: str | None = CUB_MD5, synthetic_images: int = 600, synthetic_classes: int = 10,
               synthetic_seed: int = 0, progress: bool = True) -> tuple[Path, str]:
    """Make sure an extracted ``CUB_200_2011`` folder exists; return it and its source checksum."""
    raw = find_source(source, data_dir, raw_dir, urls, md5, synthetic_images, synthetic_classes, synthetic_seed,
                      progress)
    if raw.kind == "archive" and progress:
        print(f"extracting {raw.location.name} to {raw.extract_to} (skipped when already extracted)")
    return raw.folder(), raw.checksum


def prepare(
    source: str = "cub",
    data_dir: str | Path | None = None,
    options: PreprocessOptions | None = None,
    raw_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    urls: Sequence[str] = CUB_URLS,
    md5: str | None = CUB_MD5,
    synthetic_images: int = 600,
    synthetic_classes: int = 10,
    synthetic_seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Make sure the preprocessed cache exists and return its path (a second call does nothing).

    Args:
        source: ``"cub"`` (the real data) or ``"synthetic"`` (the embedded replica).
        data_dir: a local archive or folder to use instead of downloading (default ``$DDPM_DATA_DIR``,
            then the location an earlier call was given).
        options: crop, size, non-RGB policy and split (``PreprocessOptions``).
        raw_dir, cache_dir: where archives / extracted folders and caches go (``data/raw``,
            ``data/processed`` by default).
        urls, md5: download locations and the expected checksum (injectable for tests).
        synthetic_*: size and seed of the replica when ``source="synthetic"``.
    """
    options = options or PreprocessOptions()
    cache_dir = Path(cache_dir) if cache_dir is not None else paths.PROCESSED_DIR
    try:
        raw = find_source(source, data_dir, raw_dir, urls, md5, synthetic_images, synthetic_classes, synthetic_seed,
                          progress)
    except DataLocationGone:
        reusable = _cache_of_remembered_location(source, data_dir, options, cache_dir)
        if reusable is None:
            raise
        return reusable
    existing = cache_path(cache_dir, options, raw.checksum, source)
    if existing.exists() and existing.with_suffix(".json").exists():
        return existing
    if raw.kind == "archive" and progress:
        print(f"extracting {raw.location.name} to {raw.extract_to} (skipped when already extracted)")
    root = raw.folder()
    if progress:
        print(f"preprocessing {root} -> {cache_dir}")
    return build_cache(root, cache_dir, options, raw.checksum, source, workers)


def _cache_of_remembered_location(source, data_dir, options, cache_dir) -> Path | None:
    """The cache built from the remembered data location when that location is gone (an unmounted
    Drive, a deleted copy): the same checksum and options, so the same data. None otherwise."""
    remembered = remembered_location()
    if source != "cub" or data_dir or os.environ.get("DDPM_DATA_DIR") or remembered is None:
        return None
    path = cache_path(cache_dir, options, remembered["checksum"], source)
    if not (path.exists() and path.with_suffix(".json").exists()):
        return None
    warnings.warn(f"the data location {remembered['path']} is not reachable; using the cache built from it, "
                  f"{path}", stacklevel=3)
    return path


def options_from_config(data, **overrides) -> PreprocessOptions:
    """The preprocessing options a ``DataConfig`` asks for (``overrides``: options to replace)."""
    options = PreprocessOptions(image_size=data.image_size, crop=data.crop, margin=data.margin,
                                non_rgb=data.non_rgb, split_seed=data.seed)
    return dataclasses.replace(options, **{k: v for k, v in overrides.items() if v is not None})


def raw_root_from_config(data, progress: bool = True, **kwargs) -> Path:
    """The extracted ``CUB_200_2011`` folder a ``DataConfig`` names (fetched or made when missing)."""
    root, _ = ensure_raw(source=data.source, synthetic_images=data.num_synthetic_images,
                         synthetic_classes=data.num_synthetic_classes, synthetic_seed=data.seed,
                         progress=progress, **kwargs)
    return root


def prepare_from_config(data, progress: bool = True, **kwargs) -> Path:
    """``prepare()`` for a ``DataConfig``: the real data or the synthetic replica it names."""
    return prepare(
        source=data.source,
        options=options_from_config(data),
        synthetic_images=data.num_synthetic_images,
        synthetic_classes=data.num_synthetic_classes,
        synthetic_seed=data.seed,
        progress=progress,
        **kwargs,
    )

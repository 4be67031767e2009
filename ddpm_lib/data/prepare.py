"""``prepare()``: from wherever the data are (or the internet, or the synthetic replica) to the cache.

Sources, in order of precedence:
1. ``data_dir`` (argument) or ``$DDPM_DATA_DIR``: an archive you already have (``.tgz``), a folder
   holding it, or an extracted ``CUB_200_2011`` folder (a GCP bucket copy, a Drive folder);
2. ``source="cub"``: the archive downloaded to ``data/raw/`` (current URL, then the legacy one);
3. ``source="synthetic"``: the procedural replica, written as an archive in the same layout and
   then run through the very same extraction and preprocessing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .. import paths
from .cub import PreprocessOptions, build_cache, metadata_checksum
from .download import ARCHIVE_NAME, CUB_MD5, CUB_URLS, download, extract, verified_md5
from .synthetic import make_synthetic_archive


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


def ensure_raw(
    source: str = "cub",
    data_dir: str | Path | None = None,
    raw_dir: str | Path | None = None,
    urls: Sequence[str] = CUB_URLS,
    md5: str | None = CUB_MD5,
    synthetic_images: int = 600,
    synthetic_classes: int = 10,
    synthetic_seed: int = 0,
    progress: bool = True,
) -> tuple[Path, str]:
    """Make sure an extracted ``CUB_200_2011`` folder exists; return it and its source checksum.

    Arguments as in :func:`prepare`. The checksum is the archive's MD5, or an MD5 over the metadata
    files when the user gave an extracted folder.
    """
    if source not in ("cub", "synthetic"):
        raise ValueError(f"source={source!r}: use 'cub' or 'synthetic'")
    raw_dir = Path(raw_dir) if raw_dir is not None else paths.RAW_DIR
    say = print if progress else (lambda *args, **kwargs: None)
    if source == "synthetic":
        folder = raw_dir / f"synthetic-{synthetic_images}x{synthetic_classes}-seed{synthetic_seed}"
        archive = folder / ARCHIVE_NAME
        if not archive.exists():
            say(f"writing a synthetic CUB-format archive ({synthetic_images} images) to {archive}")
            make_synthetic_archive(folder, num_images=synthetic_images, num_classes=synthetic_classes,
                                   seed=synthetic_seed)
        kind, location, expected = "archive", archive, None
    else:
        data_dir = data_dir or os.environ.get("DDPM_DATA_DIR")
        folder = raw_dir
        if data_dir:
            kind, location = locate_source(data_dir)
            expected = md5
        else:
            say(f"downloading {ARCHIVE_NAME} to {raw_dir} (skipped when already verified)")
            location = download(raw_dir / ARCHIVE_NAME, urls=urls, md5=md5, progress=progress)
            kind, expected = "archive", None  # download() verified it
    if kind == "folder":
        return location, metadata_checksum(location)
    checksum = verified_md5(location)
    if expected is not None and checksum != expected:
        raise ValueError(
            f"{location}: MD5 {checksum} is not the CUB archive's {expected}; pass the real "
            "CUB_200_2011.tgz, or its extracted folder"
        )
    say(f"extracting {location.name} to {folder} (skipped when already extracted)")
    return extract(location, folder), checksum


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
        data_dir: a local archive or folder to use instead of downloading (default ``$DDPM_DATA_DIR``).
        options: crop, size, non-RGB policy and split (``PreprocessOptions``).
        raw_dir, cache_dir: where archives / extracted folders and caches go (``data/raw``,
            ``data/processed`` by default).
        urls, md5: download locations and the expected checksum (injectable for tests).
        synthetic_*: size and seed of the replica when ``source="synthetic"``.
    """
    options = options or PreprocessOptions()
    root, checksum = ensure_raw(source, data_dir, raw_dir, urls, md5, synthetic_images, synthetic_classes,
                                synthetic_seed, progress)
    cache_dir = Path(cache_dir) if cache_dir is not None else paths.PROCESSED_DIR
    if progress:
        print(f"preprocessing {root} -> {cache_dir} (reused when the options are unchanged)")
    return build_cache(root, cache_dir, options, checksum, source, workers)


def options_from_config(data) -> PreprocessOptions:
    """The preprocessing options a ``DataConfig`` asks for."""
    return PreprocessOptions(image_size=data.image_size, crop=data.crop, margin=data.margin,
                             non_rgb=data.non_rgb, split_seed=data.seed)


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

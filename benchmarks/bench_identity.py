"""``python benchmarks/bench_identity.py``: what the identity checks cost a command on a CUB-sized layout.

Every command that reuses the data checks its identity first: an extracted folder by its metadata and
the size and modification time of each of its 11,788 listed images (``cub.folder_checksum``; the
images are not read), an archive by its MD5 note (``download.verified_md5``; the 1.1 GB are read only
when the note is missing or the file's size or time changed). The target: under a second per command.
Prints one JSON line per case.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddpm_lib import paths  # noqa: E402
from ddpm_lib.data.cub import folder_checksum  # noqa: E402
from ddpm_lib.data.download import verified_md5  # noqa: E402

IMAGES, CLASSES, ARCHIVE_BYTES = 11_788, 200, 1_150_585_339  # CUB-200-2011's


def cub_sized_folder(root: Path) -> Path:
    """A CUB_200_2011 layout with 11,788 small image files and its metadata."""
    folder = root / "CUB_200_2011"
    lines = {"images.txt": [], "bounding_boxes.txt": [], "train_test_split.txt": [], "image_class_labels.txt": []}
    for index in range(1, IMAGES + 1):
        species = (index - 1) % CLASSES + 1
        name = f"{species:03d}.Species_{species}/Bird_{index:05d}.jpg"
        (folder / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "images" / name).write_bytes(b"\xff\xd8" + index.to_bytes(4, "little"))
        lines["images.txt"].append(f"{index} {name}")
        lines["bounding_boxes.txt"].append(f"{index} 1.0 1.0 10.0 10.0")
        lines["train_test_split.txt"].append(f"{index} {index % 2}")
        lines["image_class_labels.txt"].append(f"{index} {species}")
    for name, rows in lines.items():
        (folder / name).write_text("\n".join(rows) + "\n")
    (folder / "classes.txt").write_text("\n".join(f"{c} {c:03d}.Species_{c}" for c in range(1, CLASSES + 1)) + "\n")
    return folder


def timed(call, repeats: int = 5) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        paths.DATA_DIR = root / "data"  # checksum notes go here, not into the repository
        folder = cub_sized_folder(root)
        rows = [{"case": "folder_checksum, CUB-sized folder (11,788 listed images)",
                 "seconds_median": round(timed(lambda: folder_checksum(folder)), 3)}]
        archive = root / "CUB_200_2011.tgz"
        with open(archive, "wb") as handle:  # a sparse file of the real archive's size
            handle.truncate(ARCHIVE_BYTES)
        started = time.perf_counter()
        verified_md5(archive)
        rows.append({"case": "verified_md5, 1.1 GB archive, first time (read once, note written)",
                     "seconds": round(time.perf_counter() - started, 3)})
        rows.append({"case": "verified_md5, 1.1 GB archive, with its note (not read again)",
                     "seconds_median": round(timed(lambda: verified_md5(archive)), 4)})
    machine = f"{os.cpu_count()} CPU cores"
    for row in rows:
        print(json.dumps({**row, "machine": machine}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

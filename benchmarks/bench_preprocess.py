"""Preprocessing speed on a full-size synthetic replica of CUB (11,788 JPEGs at CUB-like sizes).

Times what a user waits for after the archive is on disk: safe extraction, then crop + resize of
every image on all cores into the uint8 cache; then the second, no-op run. Prints JSON and writes
it to ``benchmarks/results/preprocess_<host>.json``.

    python benchmarks/bench_preprocess.py [--images 11788] [--classes 200] [--workdir /tmp/cub-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from ddpm_lib.data.cub import PreprocessOptions, build_cache, load_cache
from ddpm_lib.data.download import extract, verified_md5
from ddpm_lib.data.synthetic import make_synthetic_archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=11_788)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--workdir", default="/tmp/cub-bench")
    args = parser.parse_args()
    work = Path(args.workdir)
    archive = work / "CUB_200_2011.tgz"
    started = time.perf_counter()
    if not archive.exists():
        make_synthetic_archive(work, num_images=args.images, num_classes=args.classes, seed=0)
    generate_s = time.perf_counter() - started
    shutil.rmtree(work / "extract", ignore_errors=True)
    shutil.rmtree(work / "cache", ignore_errors=True)

    t0 = time.perf_counter()
    checksum = verified_md5(archive)
    t1 = time.perf_counter()
    root = extract(archive, work / "extract")
    t2 = time.perf_counter()
    cache = build_cache(root, work / "cache", PreprocessOptions(), checksum, "synthetic")
    t3 = time.perf_counter()
    again_root = extract(archive, work / "extract")
    build_cache(again_root, work / "cache", PreprocessOptions(), checksum, "synthetic")
    t4 = time.perf_counter()
    kept = load_cache(cache).manifest["counts"]["kept"]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU only)",
        "images": args.images, "kept": kept, "archive_bytes": archive.stat().st_size,
        "generate_replica_s (not counted)": round(generate_s, 1),
        "md5_s": round(t1 - t0, 2), "extract_s": round(t2 - t1, 2), "preprocess_and_cache_s": round(t3 - t2, 2),
        "end_to_end_s": round(t3 - t0, 2), "second_run_s": round(t4 - t3, 3),
        "images_per_s": round(kept / (t3 - t2), 1),
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"preprocess_{platform.node() or 'host'}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

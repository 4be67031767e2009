"""The summary of one ``benchmarks/gpu_checks.sh`` run: each target as measured / target, naming the card.

    python benchmarks/gpu_summary.py benchmarks/results/<date>_<card>
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path


def load(folder: Path, pattern: str) -> list[dict]:
    """The rows of the JSON files matching ``pattern``; for a step cut short before it wrote its JSON,
    the rows it printed to its log, one JSON object per line."""
    rows = []
    for log in sorted(folder.glob(pattern.replace(".json", ".log"))):
        path = log.with_suffix(".json")
        try:
            rows += json.loads(path.read_text()).get("rows", [])
            continue
        except (OSError, ValueError):
            pass
        for text in log.read_text(errors="replace").splitlines():
            if text.startswith("{"):
                try:
                    row = json.loads(text)
                except ValueError:
                    continue
                if "top_kernels" not in row or "mode" in row:
                    rows.append(row)
    return rows


def best(rows: list[dict], network: str, batch: int) -> dict | None:
    cases = [r for r in rows
             if r.get("network") == network and r.get("batch_size") == batch and "images_per_s_median" in r]
    return max(cases, key=lambda r: r["images_per_s_median"], default=None)


def sampling(rows: list[dict], case: str) -> float | None:
    """Seconds of a ``bench sample`` case (a name of SAMPLE_CASES in benchmarks/bench.py)."""
    for row in rows:
        if row.get("case") == case and "seconds_median" in row:
            return row["seconds_median"]
    return None


def median_rate(path: Path) -> float | None:
    try:
        with open(path) as handle:
            rates = [float(r["images_per_s"]) for r in csv.DictReader(handle)][1:]  # the first holds the capture
        return statistics.median(rates) if rates else None
    except (OSError, KeyError, ValueError):
        return None


def meets(value, predicate) -> bool | None:
    """None when nothing was measured, else whether ``predicate(value)`` holds."""
    return None if value is None else bool(predicate(value))


def line(name: str, value, target: str, ok: bool | None) -> str:
    verdict = "n/a" if ok is None else ("met" if ok else "MISSED")
    shown = "not measured" if value is None else value
    return f"{name:52s} {shown!s:>24s}   target {target:14s} {verdict}"


def main(folder: str) -> int:
    folder = Path(folder)
    known = folder / "environment.json"
    environment = json.loads(known.read_text()) if known.exists() else {}
    card = environment.get("device", "unknown device")
    print(f"=== GPU checks on {card} (torch {environment.get('torch')}, driver {environment.get('driver', '?')}, "
          f"TF32 matmul {environment.get('tf32_matmul')}, cudnn {environment.get('tf32_cudnn')}) ===")
    steps = (folder / "steps.txt").read_text().splitlines() if (folder / "steps.txt").exists() else []
    print("steps: " + "; ".join(steps))
    log = folder / "gpu_tests.log"
    tests = log.read_text().strip().splitlines()[-1:] if log.exists() else []
    print("tests/test_gpu.py: " + (tests[0] if tests else "not run"))
    train = load(folder, "bench_train_*.json")
    small = best(train, "SmallUNet", 32)
    shown = small and f"{small['images_per_s_median']:,.0f} ({small['mode']})"
    print(line("SmallUNet, batch 32, images/s (best mode)", shown, ">= 6,000",
               meets(small, lambda r: r["images_per_s_median"] >= 6000)))
    ours = best(train, "BaselineUNet", 128)
    peer = best(train, "ddpm-pytorch Unet(64,(1,2,4,8))", 128)
    other = best(train, "diffusers UNet2DModel (DDPM CIFAR-10 config)", 128)
    if ours and peer:
        ratio = ours["images_per_s_median"] / peer["images_per_s_median"]
        print(line("BaselineUNet / ddpm-pytorch Unet, batch 128, best/best", f"{ratio:.2f}x", ">= 2.5x", ratio >= 2.5))
    else:
        print(line("BaselineUNet / ddpm-pytorch Unet, batch 128, best/best", None, ">= 2.5x", None))
    if ours and other:
        ratio = ours["images_per_s_median"] / other["images_per_s_median"]
        print(line("BaselineUNet / diffusers UNet2DModel, batch 128", f"{ratio:.2f}x", "> 1x", ratio > 1))
    else:
        print(line("BaselineUNet / diffusers UNet2DModel, batch 128", None, "> 1x", None))
    for row in (ours, peer, other, best(train, "SmallUNet conditional (200 species)", 32)):
        if row:
            print(f"    {row['network']}: {row['images_per_s_median']:,.0f} images/s ({row['mode']}), "
                  f"{row.get('gflop_per_image_fwd_bwd')} GFLOP/image, {row.get('achieved_tflops')} TFLOP/s, "
                  f"{row.get('peak_memory_gb')} GB")
    sample = load(folder, "bench_sample.json")
    ddim, solver = sampling(sample, "ddim-compiled"), sampling(sample, "dpmpp-compiled")
    print(line("DDIM-50, 2,350 images, compiled (s)", ddim, "<= 1.5", meets(ddim, lambda v: v <= 1.5)))
    print(line("DPM-Solver++-20, 2,350 images, compiled (s)", solver, "<= 0.7", meets(solver, lambda v: v <= 0.7)))
    guided, unguided = sampling(sample, "guided-compiled"), sampling(sample, "conditional-compiled")
    for name, base in (("guided DDIM-50 / conditional DDIM-50, one network", unguided),
                       ("guided DDIM-50 / unconditional DDIM-50", ddim)):
        ratio = guided / base if guided and base else None
        print(line(name, ratio and f"{ratio:.2f}x", "<= 2x", meets(ratio, lambda v: v <= 2)))
    for row in sample:
        if row.get("case") in ("ddim-compiled-one-batch", "ddpm-compiled") and "seconds_median" in row:
            print(f"    {row['sampler']}, compiled, batch {row['batch_size']}: {row['seconds_median']} s")
    evaluate = load(folder, "bench_evaluate.json")
    seconds = evaluate[0].get("seconds_total") if evaluate else None
    print(line("evaluate, 2,350 samples (s; stand-in Inception)", seconds, "<= 30", meets(seconds, lambda v: v <= 30)))
    plain = median_rate(folder / "torchrun_plain_metrics.csv")
    launched = median_rate(folder / "torchrun_torchrun_metrics.csv")
    overhead = (plain / launched - 1) if plain and launched else None
    print(line("1-process torchrun overhead (images/s)", None if overhead is None else f"{overhead:+.1%}", "<= 2%",
               meets(overhead, lambda v: v <= 0.02)))
    fit = load(folder, "bench_fit.json")
    if fit:
        print(f"Trainer.fit, study settings: {fit[0]['steps']:,} steps in {fit[0]['seconds']} s; 28,000 steps "
              f"extrapolated: {fit[0]['study_28000_steps_s_extrapolated']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

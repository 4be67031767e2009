"""The summary of one ``benchmarks/gpu_checks.sh`` run: each target as measured / target, naming the card;
like-for-like ratios; the clocks during the headline windows; the top kernels; and every planned case
that was not run, with why.

    python benchmarks/gpu_summary.py benchmarks/results/<date>_<card>
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import best, ratio_lines  # noqa: E402

BASELINE, DDPM_PYTORCH = "BaselineUNet", "ddpm-pytorch Unet(64,(1,2,4,8))"
DIFFUSERS = "diffusers UNet2DModel (BaselineUNet shape)"
COMPILED_MODES = ("compile", "graph+compile")


def load(folder: Path, *patterns: str) -> list[dict]:
    """The rows of the JSON files matching ``patterns``; for a step cut short before it wrote its JSON,
    the rows it appended to ``<json>.rows.jsonl`` (or, in older folders, printed to its log)."""
    rows, seen = [], set()
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            stem = path.name.split(".json")[0].removesuffix(".log")
            if stem in seen:
                continue
            seen.add(stem)
            json_path, lines = folder / f"{stem}.json", folder / f"{stem}.json.rows.jsonl"
            try:
                rows += json.loads(json_path.read_text()).get("rows", [])
                continue
            except (OSError, ValueError):
                pass
            source = lines if lines.exists() else folder / f"{stem}.log"
            for text in (source.read_text(errors="replace").splitlines() if source.exists() else []):
                if text.startswith("{"):
                    try:
                        row = json.loads(text)
                    except ValueError:
                        continue
                    if "top_kernels" not in row or "mode" in row:
                        rows.append(row)
    return rows


def sampling(rows: list[dict], case: str) -> dict | None:
    """The measured row of a ``bench sample`` case (a name of SAMPLE_CASES in benchmarks/bench.py)."""
    return next((r for r in rows if r.get("case") == case and "seconds_median" in r), None)


def seconds(rows: list[dict], *cases: str) -> tuple[float | None, str | None]:
    """The first measured case of ``cases``: (seconds per draw, its case name)."""
    for case in cases:
        row = sampling(rows, case)
        if row:
            return row["seconds_median"], case
    return None, None


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
    return f"{name:66s} {shown!s:>24s}   target {target:14s} {verdict}"


def windows_note(row: dict) -> str:
    """How a headline case was timed: windows, their spread and the SM clock during them."""
    count = row.get("repeats", row.get("windows"))
    clock = (f"SM {row['sm_clock_mhz_min']}-{row['sm_clock_mhz_max']} MHz ({row.get('clock_samples')} samples), "
             f"{row.get('power_w_median')} W, <= {row.get('temperature_c_max')} C"
             if "sm_clock_mhz_min" in row else row.get("clocks", "clocks not recorded"))
    return f"{count} windows of >= {row.get('window_s')} s, spread {row.get('window_spread')}; {clock}"


def not_run(folder: Path, train: list[dict], sample: list[dict]) -> list[str]:
    """Every planned case that produced no measurement, with why."""
    plan = [text.split(" ", 1) for text in _lines(folder / "plan.txt")]
    outcome = {text.split()[0]: text for text in _lines(folder / "steps.txt") if text.split()}
    out = []
    for stage, name in plan:
        done = outcome.get(name)
        if done is None:
            out.append(f"{name} ({stage}): not requested (STAGES or ONLY)")
        elif "skipped" in done:
            out.append(f"{name} ({stage}): {done.split(' ', 1)[1]}")
        elif " rc=0 " not in done + " ":
            out.append(f"{name} ({stage}): {done.split(' ', 1)[1]} (124: cut at its time limit); see {name}.log")
    for row in train + sample:
        what = row.get("network") or row.get("case")
        if "error" in row:
            out.append(f"{what} {row.get('batch_size', '')} {row.get('mode', '')}: failed: {row['error'][:160]}")
        elif "skipped" in row:
            out.append(f"{what} {row.get('batch_size') or ''} {row.get('mode', '')}: {row['skipped']}")
    return out


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def main(folder: str) -> int:
    folder = Path(folder)
    known = folder / "environment.json"
    environment = json.loads(known.read_text()) if known.exists() else {}
    card = environment.get("device", "unknown device")
    print(f"=== GPU checks on {card} (torch {environment.get('torch')}, driver {environment.get('driver', '?')}, "
          f"TF32 matmul {environment.get('tf32_matmul')}, cudnn {environment.get('tf32_cudnn')}) ===")
    print("protocol: " + "; ".join(_lines(folder / "protocol.txt")))
    print("steps: " + "; ".join(_lines(folder / "steps.txt")))
    tests = [text for text in _lines(folder / "gpu_tests.log") if text.strip()][-1:]
    print("tests/test_gpu.py: " + (tests[0] if tests else "not run"))
    train = load(folder, "train_*.json*", "bench_train_*.json*", "bench_train_*.log")
    sample = load(folder, "sample_*.json*", "bench_sample*.json*", "bench_sample*.log")

    print(f"--- targets on {card} ---")
    ddim, ddim_case = seconds(sample, "ddim-graph", "ddim-compiled")
    print(line(f"DDIM-50, 2,350 images ({ddim_case or 'compiled + graph'}) (s)", ddim, "<= 1.5",
               meets(ddim, lambda v: v <= 1.5)))
    solver, solver_case = seconds(sample, "dpmpp-graph", "dpmpp-compiled")
    print(line(f"DPM-Solver++-20, 2,350 images ({solver_case or 'compiled + graph'}) (s)", solver, "<= 0.7",
               meets(solver, lambda v: v <= 0.7)))
    for mode in ("graph", "compiled"):  # each ratio within one mode, the graph one where measured
        guided, unguided = seconds(sample, f"guided-{mode}")[0], seconds(sample, f"conditional-{mode}")[0]
        ratio = guided / unguided if guided and unguided else None
        if ratio or mode == "compiled":
            print(line(f"guided w=3 / unguided DDIM-50, one conditional network ({mode})",
                       ratio and f"{ratio:.2f}x", "<= 2.1x", meets(ratio, lambda v: v <= 2.1)))
            break
    for mode in ("graph", "compiled"):
        plain, conditional = seconds(sample, f"ddim-{mode}")[0], seconds(sample, f"conditional-{mode}")[0]
        ratio = plain / conditional if plain and conditional else None
        if ratio or mode == "compiled":
            print(line(f"unconditional / conditional network, DDIM-50 ({mode})", ratio and f"{ratio:.2f}x",
                       "<= 1x", meets(ratio, lambda v: v <= 1.0)))
            break
    small = best(train, "SmallUNet", 32)
    print(line("SmallUNet, batch 32, images/s (best mode)", small and f"{small['images_per_s_median']:,.0f} "
               f"({small['mode']})", ">= 6,000", meets(small, lambda r: r["images_per_s_median"] >= 6000)))
    ours, other = best(train, BASELINE, 128), best(train, DIFFUSERS, 128)
    both = ours and other and ours.get("mfu_percent") and other.get("mfu_percent")
    shown = both and (f"{ours['mfu_percent']}% / {other['mfu_percent']}% ({ours['gflop_per_image_fwd_bwd']} / "
                      f"{other['gflop_per_image_fwd_bwd']} GFLOP)")
    print(line("BaselineUNet MFU / diffusers' at matched FLOPs, batch 128, best", shown or None, ">= 1x",
               meets(shown or None, lambda _: ours["mfu_percent"] >= other["mfu_percent"])))
    compiled = [r for r in train if r.get("network") == DDPM_PYTORCH and r.get("batch_size") == 128
                and r.get("mode") in COMPILED_MODES and "images_per_s_median" in r]
    peer = max(compiled, key=lambda r: r["images_per_s_median"], default=None)
    ratio = ours["images_per_s_median"] / peer["images_per_s_median"] if ours and peer else None
    print(line("BaselineUNet best / ddpm-pytorch best compiled, batch 128", ratio and f"{ratio:.2f}x "
               f"({ours['mode']} / {peer['mode']})", ">= 1.5x", meets(ratio, lambda v: v >= 1.5)))
    if peer and "gradient_check" in peer:
        print(f"    ddpm-pytorch compiled via the '{peer.get('workaround')}' workaround: compiled vs plain gradients "
              f"differ by {peer['gradient_check']:.1e} (relative L2, bf16)")
    evaluate = load(folder, "bench_evaluate.json*", "bench_evaluate.log")
    total = evaluate[0].get("seconds_total") if evaluate else None
    print(line("evaluate, 2,350 samples (s; stand-in Inception)", total, "<= 30", meets(total, lambda v: v <= 30)))
    plain = median_rate(folder / "torchrun_plain_metrics.csv")
    launched = median_rate(folder / "torchrun_torchrun_metrics.csv")
    overhead = (plain / launched - 1) if plain and launched else None
    print(line("1-process torchrun launcher overhead (plain path)", None if overhead is None else f"{overhead:+.1%}",
               "<= 2%", meets(overhead, lambda v: v <= 0.02)))
    fit = load(folder, "bench_fit.json*", "bench_fit.log")
    if fit:
        print(f"Trainer.fit, study settings: {fit[0]['steps']:,} steps in {fit[0]['seconds']} s; 28,000 steps "
              f"extrapolated (not measured): {fit[0]['study_28000_steps_s_extrapolated']} s")

    print("--- like for like (images/s; MFU) ---")
    for text in ratio_lines(train, BASELINE, [DDPM_PYTORCH, DIFFUSERS], 128) or ["no pair measured"]:
        print("    " + text)
    print("--- how the headline cases were timed ---")
    for row in [sampling(sample, c) for c in ("ddim-graph", "dpmpp-graph", "conditional-graph", "guided-graph")] + [
            small, ours, peer, other]:
        if row:
            name = row.get("case") or f"{row['network']} batch {row['batch_size']} {row['mode']}"
            extra = f"; compiled graphs {row['dynamo_graphs']}" if "dynamo_graphs" in row else ""
            print(f"    {name}: {windows_note(row)}{extra}")
    profiles = load(folder, "profile_*.json*")
    if profiles:
        print("--- top kernels (profile stage) ---")
    for row in profiles:
        if "top" not in row:
            continue
        print(f"    {row['network']} batch {row['batch_size']} ({row['mode']}): {row['total_ms_per_step']} ms/step; "
              f"layout conversions {row['layout_conversions']}")
        for entry in row["top"][:4]:
            site = entry["sites"][0] if entry["sites"] else {}
            print(f"      {entry['share']:.1%} {entry['calls_per_step']}/step {entry['name'][:60]} <- {site.get('op')} "
                  f"{site.get('shapes')} strides {site.get('strides')} {(site.get('stack') or [''])[0]}")
    missing = not_run(folder, train, sample)
    print(f"--- not run ({len(missing)}) ---")
    for text in missing:
        print("    " + text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

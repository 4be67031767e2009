"""What ``bench.py`` and ``gpu_summary.py`` print from measured rows: tables and like-for-like ratios.

A ratio between two networks is only stated mode against the same mode (eager / eager, graph /
graph, compile / compile, graph+compile / graph+compile) and best against best, each with the
modes it compares, so a compiled network is never set against an uncompiled one unsaid.
"""

from __future__ import annotations

MODES = ("eager", "graph", "compile", "graph+compile")


def measured(row: dict) -> bool:
    return "images_per_s_median" in row


def best(rows: list[dict], network: str, batch: int) -> dict | None:
    """The fastest measured mode of ``network`` at ``batch``."""
    cases = [r for r in rows if r.get("network") == network and r.get("batch_size") == batch and measured(r)]
    return max(cases, key=lambda r: r["images_per_s_median"], default=None)


def like_for_like(rows: list[dict], ours: str, peer: str, batch: int) -> list[dict]:
    """``ours`` / ``peer`` images/s at ``batch``: per mode both measured, then best / best.

    Each entry: {"compared": "eager / eager" | "best / best", "ours", "peer", "ratio", "ours_mode", "peer_mode",
    "mfu_ours", "mfu_peer"}.
    """
    def find(network, mode):
        return next((r for r in rows if r.get("network") == network and r.get("batch_size") == batch
                     and r.get("mode") == mode and measured(r)), None)

    pairs = [(f"{mode} / {mode}", find(ours, mode), find(peer, mode)) for mode in MODES]
    pairs.append(("best / best", best(rows, ours, batch), best(rows, peer, batch)))
    out = []
    for compared, a, b in pairs:
        if a and b:
            out.append({"compared": compared, "ours": a["images_per_s_median"], "peer": b["images_per_s_median"],
                        "ratio": round(a["images_per_s_median"] / b["images_per_s_median"], 3),
                        "ours_mode": a["mode"], "peer_mode": b["mode"],
                        "mfu_ours": a.get("mfu_percent"), "mfu_peer": b.get("mfu_percent")})
    return out


def _number(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def train_table(rows: list[dict]) -> str:
    """One line per (network, batch, mode): images/s (min-max), GFLOP/image, TFLOP/s, MFU, SM clock,
    or why the case was not measured."""
    lines = [f"{'network':44s} {'batch':>5s} {'mode':13s} {'images/s (min-max)':>22s} {'GFLOP/img':>9s} "
             f"{'TFLOP/s':>8s} {'MFU %':>6s} {'SM MHz':>11s}  note"]
    for row in rows:
        name, mode = row.get("network", "?")[:44], row.get("mode", "")
        batch = row.get("batch_size") or "-"
        if measured(row):
            rate = (f"{_number(row['images_per_s_median'])} ({_number(row.get('images_per_s_min'))}-"
                    f"{_number(row.get('images_per_s_max'))})")
            clock = (f"{row['sm_clock_mhz_min']}-{row['sm_clock_mhz_max']}" if "sm_clock_mhz_min" in row else "-")
            note = row.get("clocks", "")
            if "gradient_check" in row:
                note = f"{note}; compiled vs plain gradients {row['gradient_check']:.1e}".lstrip("; ")
            lines.append(f"{name:44s} {batch!s:>5s} {mode:13s} {rate:>22s} "
                         f"{_number(row.get('gflop_per_image_fwd_bwd'), 2):>9s} "
                         f"{_number(row.get('achieved_tflops'), 1):>8s} {_number(row.get('mfu_percent'), 1):>6s} "
                         f"{clock:>11s}  {note}")
        else:
            why = row.get("skipped") or row.get("error", "not measured")
            lines.append(f"{name:44s} {batch!s:>5s} {mode:13s} {'-':>22s} "
                         f"{_number(row.get('gflop_per_image_fwd_bwd'), 2):>9s} {'-':>8s} {'-':>6s} {'-':>11s}  "
                         f"{why}")
    return "\n".join(lines)


def sample_table(rows: list[dict]) -> str:
    """One line per sampling case: seconds per draw (min-max), or why it was not measured."""
    lines = [f"{'case':26s} {'sampler':30s} {'mode':9s} {'images':>6s} {'batch':>5s} {'px':>3s} "
             f"{'seconds (min-max)':>20s} {'setup s':>7s}  note"]
    for row in rows:
        head = (f"{row.get('case', '?'):26s} {row.get('sampler', ''):30s} {row.get('mode', ''):9s} "
                f"{row.get('num_samples', '')!s:>6s} {row.get('batch_size', '')!s:>5s} "
                f"{row.get('image_size', '')!s:>3s}")
        if "seconds_median" in row:
            seconds = f"{row['seconds_median']:.3f} ({row['seconds_min']:.3f}-{row['seconds_max']:.3f})"
            note = row.get("clocks", "")
            if row.get("dynamo_graphs") is not None:
                note = f"compiled graphs {row['dynamo_graphs']}; {note}".rstrip("; ")
            lines.append(f"{head} {seconds:>20s} {row.get('setup_s', '-')!s:>7s}  {note}")
        else:
            lines.append(f"{head} {'-':>20s} {'-':>7s}  {row.get('skipped') or row.get('error', 'not measured')}")
    return "\n".join(lines)


def ratio_lines(rows: list[dict], ours: str, peers: list[str], batch: int) -> list[str]:
    """Like-for-like ratio lines of ``ours`` against each peer at ``batch``."""
    lines = []
    for peer in peers:
        for entry in like_for_like(rows, ours, peer, batch):
            modes = entry["compared"] if entry["compared"] != "best / best" else (
                f"best / best = {entry['ours_mode']} / {entry['peer_mode']}")
            lines.append(f"{ours} / {peer}, batch {batch}, {modes}: {entry['ours']:,.0f} / {entry['peer']:,.0f} = "
                         f"{entry['ratio']:.2f}x (MFU {_number(entry['mfu_ours'], 1)}% / "
                         f"{_number(entry['mfu_peer'], 1)}%)")
    return lines

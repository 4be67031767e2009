"""The prepared GPU check, rehearsed on the CPU: every step of benchmarks/gpu_checks.sh at toy size
(GPU_CHECKS_DRY_RUN=1), so a lent GPU's minutes are never spent on a script error; and the protocol
the real run follows (its windows, sizes and order), read from the commands it would start."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import child_env

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = ["gpu_tests", "sample_ddim-graph", "sample_dpmpp-graph", "sample_conditional-graph", "sample_guided-graph",
            "train_SmallUNet_b32_graph+compile", "train_BaselineUNet_b128_graph+compile",
            "train_ddpm-pytorch_Unet_64_1_2_4_8_b128_graph+compile",
            "train_diffusers_UNet2DModel_BaselineUNet_shape_b128_graph+compile"]


def run_script(results: Path, timeout: int, python: str = sys.executable, **settings) -> subprocess.CompletedProcess:
    """benchmarks/gpu_checks.sh into ``results`` with ``python``, with extra environment ``settings``."""
    env = child_env(RESULTS=str(results), PYTHONPATH=str(ROOT), PYTHON=python, **settings)
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_checks.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def dry_run(results: Path, timeout: int, **settings) -> subprocess.CompletedProcess:
    return run_script(results, timeout, GPU_CHECKS_DRY_RUN="1", **settings)


def steps_of(results: Path) -> list[str]:
    return (results / "steps.txt").read_text().splitlines()


@pytest.mark.slow  # the whole protocol at toy size: minutes on 2 cores
def test_the_gpu_check_script_runs_every_planned_case_in_order_at_toy_size(tmp_path):
    results = tmp_path / "results"
    done = dry_run(results, 1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    plan = [text.split(" ", 1)[1] for text in (results / "plan.txt").read_text().splitlines()]
    steps = steps_of(results)
    assert [text.split()[0] for text in steps] == plan and plan[:len(HEADLINE)] == HEADLINE  # importance order
    assert all(" rc=0 " in text for text in steps), steps
    assert json.loads((results / "environment.json").read_text())["device"].startswith("CPU")
    for name in plan:  # a fresh process per case: each wrote its own rows, none failed
        if name.startswith(("sample_", "train_", "profile_", "bench_")):
            rows = json.loads((results / f"{name}.json").read_text())["rows"]
            assert rows and not any("error" in row for row in rows), (name, rows)
    train = json.loads((results / "train_BaselineUNet_b128_eager.json").read_text())["rows"]
    assert [(r["network"], r["mode"]) for r in train] == [("BaselineUNet", "eager")]
    assert "images_per_s_median" in train[0] and train[0]["clocks"].startswith("not sampled")
    assert (results / "torchrun_plain_metrics.csv").exists() and (results / "torchrun_torchrun_metrics.csv").exists()
    summary = (results / "summary.txt").read_text()
    for part in ("GPU checks on CPU", "SmallUNet, batch 32", "evaluate, 2,350", "--- like for like",
                 "--- top kernels", "--- not run", "skipped: CUDA graphs need CUDA", "extrapolated (not measured)"):
        assert part in summary, part


def test_steps_past_the_deadline_are_skipped_and_listed_as_not_run(tmp_path):
    results = tmp_path / "results"
    done = dry_run(results, 300, STAGES="fit sampling bogus", DEADLINE="30")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    steps = steps_of(results)
    assert [text.split()[0] for text in steps] == ["bench_fit", "sample_ddim-graph", "sample_dpmpp-graph",
                                                   "sample_conditional-graph", "sample_guided-graph", "unknown"]
    assert all("skipped: no time left" in text for text in steps[:5]) and "stage bogus" in steps[5]
    summary = (results / "summary.txt").read_text()
    assert "GPU checks on CPU" in summary
    not_run = summary.split("--- not run")[1]
    assert "bench_fit (fit): skipped: no time left" in not_run
    assert "gpu_tests (tests): not requested" in not_run and "train_SmallUNet_b32_graph+compile" in not_run


def test_only_runs_the_cases_it_names(tmp_path):
    results = tmp_path / "results"
    done = dry_run(results, 300, STAGES="peers", ONLY="BaselineUNet_b128_(eager|graph)$")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert [text.split()[0] for text in steps_of(results)] == ["train_BaselineUNet_b128_eager",
                                                               "train_BaselineUNet_b128_graph"]
    rows = json.loads((results / "train_BaselineUNet_b128_graph.json").read_text())["rows"]
    assert [row["skipped"] for row in rows] == ["skipped: CUDA graphs need CUDA"]  # a row saying why, on the CPU


def test_a_folder_holding_an_earlier_run_is_refused(tmp_path):
    # the summary reads every JSON in the folder: a second run into it would mix the two
    results = tmp_path / "results"
    results.mkdir()
    (results / "train_SmallUNet_b32_eager.json").write_text('{"rows": []}')
    done = dry_run(results, 120, STAGES="fit")
    assert done.returncode == 2 and "already holds files" in done.stderr
    assert sorted(path.name for path in results.iterdir()) == ["train_SmallUNet_b32_eager.json"]


def test_the_real_run_times_each_headline_case_in_its_own_process_with_the_protocol_s_windows(tmp_path):
    """The commands the GPU run would start, recorded by a stand-in python: 2,350 images at 64 px, at
    least 5 windows of at least 2 s, one process per case, the deadline the 10-minute rental needs."""
    log = tmp_path / "commands.jsonl"
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
case "$*" in
  *gpu_summary.py*) exec {sys.executable} "$@" ;;
  -c*) echo "NVIDIA H100 80GB HBM3" ;;
  -) cat > /dev/null; echo '{{"device": "NVIDIA H100 80GB HBM3"}}' ;;
  *) {sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> {log} ;;
esac
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    results = tmp_path / "results"
    environment = {k: v for k, v in os.environ.items() if k not in ("DEADLINE", "WINDOW", "REPEATS", "STAGES")}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_checks.sh")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**environment, "RESULTS": str(results), "PYTHON": str(fake),
                                                       "OUT": ""})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    commands = [json.loads(text) for text in log.read_text().splitlines()]
    bench = [c for c in commands if c and c[0] == "benchmarks/bench.py"]
    assert commands[0][:2] == ["-m", "pytest"]  # the tests first
    headline = bench[:8]
    assert [c[1] for c in headline] == ["sample"] * 4 + ["train"] * 4
    for command in headline:
        window, repeats = float(command[command.index("--window") + 1]), int(command[command.index("--repeats") + 1])
        assert window >= 2 and repeats >= 5
    for command in headline[:4]:  # one sampling case per process, as evaluate draws
        assert len(command[command.index("--cases") + 1:command.index("--num-samples")]) == 1
        assert command[command.index("--num-samples") + 1] == "2350"
    for command in headline[4:]:  # one (network, batch, mode) per process
        assert command[command.index("--modes") + 1:command.index("--window")] == ["graph+compile"]
        assert command[command.index("--image-size") + 1] == "64"
    protocol = (results / "protocol.txt").read_text()
    assert protocol.startswith("deadline 420s;") and "windows: 5 x 2 s" in protocol  # 420 s + start-up < 10 min
    assert "protocol: deadline 420s" in (results / "summary.txt").read_text()

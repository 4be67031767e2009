"""The prepared GPU check, rehearsed on the CPU: every step of benchmarks/gpu_checks.sh at toy size
(GPU_CHECKS_DRY_RUN=1), so a lent GPU's minutes are never spent on a script error."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import child_env

ROOT = Path(__file__).resolve().parents[1]


def dry_run(results: Path, timeout: int, **settings) -> subprocess.CompletedProcess:
    """benchmarks/gpu_checks.sh rehearsed on the CPU into ``results``, with extra environment ``settings``."""
    env = child_env(GPU_CHECKS_DRY_RUN="1", RESULTS=str(results), PYTHONPATH=str(ROOT), PYTHON=sys.executable,
                    **settings)
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_checks.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_gpu_check_script_runs_every_step_at_toy_size(tmp_path):
    results = tmp_path / "results"
    done = dry_run(results, 600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    steps = (results / "steps.txt").read_text().splitlines()
    names = [line.split()[0] for line in steps]
    assert names == ["gpu_tests", "bench_sample", "bench_evaluate", "bench_train_SmallUNet", "torchrun_plain",
                     "torchrun_torchrun", "bench_fit"]
    assert all(" rc=0 " in line for line in steps), steps
    assert json.loads((results / "environment.json").read_text())["device"].startswith("CPU")
    for name in ("bench_sample", "bench_evaluate", "bench_fit", "bench_train_SmallUNet"):
        rows = json.loads((results / f"{name}.json").read_text())["rows"]
        assert rows and not any("error" in row for row in rows), (name, rows)
    assert (results / "torchrun_plain_metrics.csv").exists() and (results / "torchrun_torchrun_metrics.csv").exists()
    summary = (results / "summary.txt").read_text()
    assert "GPU checks on CPU" in summary and "SmallUNet, batch 32" in summary and "evaluate, 2,350" in summary


def test_steps_past_the_deadline_are_skipped_and_the_summary_still_comes(tmp_path):
    results = tmp_path / "results"
    done = dry_run(results, 300, STAGES="fit sample bogus", DEADLINE="30")
    assert done.returncode == 0
    steps = (results / "steps.txt").read_text().splitlines()
    assert [line.split()[0] for line in steps] == ["bench_fit", "bench_sample", "unknown"]  # in the order given
    assert all("skipped: no time left" in line for line in steps[:2]) and "stage bogus" in steps[2]
    assert "GPU checks on CPU" in (results / "summary.txt").read_text()


def test_a_network_can_name_its_own_modes(tmp_path):
    # "name=modes" limits that network to those modes; on the CPU only "eager" runs, so a network
    # asked for "graph" alone measures nothing while the one asked for "eager" measures one case
    results = tmp_path / "results"
    done = dry_run(results, 300, STAGES="train", NETWORKS="SmallUNet=graph|SmallUNet conditional (200 species)=eager")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads((results / "bench_train_SmallUNet.json").read_text())["rows"] == []
    rows = json.loads((results / "bench_train_SmallUNet_conditional__2.json").read_text())["rows"]
    assert [row["mode"] for row in rows] == ["eager"] and "error" not in rows[0]


def test_a_folder_holding_an_earlier_run_is_refused(tmp_path):
    # the summary reads every JSON in the folder: a second run into it would mix the two
    results = tmp_path / "results"
    results.mkdir()
    (results / "bench_train_SmallUNet.json").write_text('{"rows": []}')
    done = dry_run(results, 120, STAGES="fit")
    assert done.returncode == 2 and "already holds files" in done.stderr
    assert sorted(path.name for path in results.iterdir()) == ["bench_train_SmallUNet.json"]

"""The benchmark script (benchmarks/bench.py) on the CPU: every case reports what it measured."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench  # noqa: E402


def test_bench_train_reports_each_case_with_repeats_and_the_environment(tmp_path):
    out = tmp_path / "bench.json"
    assert bench.main(["train", "--networks", "SmallUNet", "SmallUNet conditional (200 species)", "--batch-sizes",
                 "4", "--window", "0.05", "--repeats", "2", "--image-size", "16", "--device", "cpu", "--out",
                 str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"].startswith("CPU") and "tf32_cudnn" in result and "torch" in result
    plain, conditional = result["rows"]  # on the CPU only the eager mode runs
    assert plain["parameters"] == 1_950_627 and plain["mode"] == "eager" and plain["repeats"] == 2
    assert plain["images_per_s_min"] <= plain["images_per_s_median"] <= plain["images_per_s_max"]
    assert plain["precision"] == "fp32" and plain["cuda_graph"] is False and plain["compiled"] is False
    assert plain["gflop_per_image_fwd_bwd"] > 0 and plain["achieved_tflops"] >= 0
    assert conditional["parameters"] > plain["parameters"] and "error" not in conditional


def test_bench_sample_times_every_sampler_as_evaluate_draws(tmp_path):
    out = tmp_path / "sample.json"
    assert bench.main(["sample", "--num-samples", "3", "--image-size", "16", "--repeats", "1", "--device", "cpu",
                 "--cases", "ddim", "dpmpp", "conditional", "guided", "ddim-compiled", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]  # compiled cases are skipped on the CPU
    assert [row["sampler"] for row in rows] == ["DDIM-50", "DPM-Solver++-20", "conditional DDIM-50",
                                                "conditional DDIM-50 w=3"]
    assert all(row["seconds_median"] > 0 and "error" not in row and row["batch_size"] == 256 for row in rows)
    with pytest.raises(SystemExit):  # a misspelt case is refused before anything runs
        bench.main(["sample", "--cases", "ddim-compield", "--device", "cpu"])

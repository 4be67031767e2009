"""The benchmark script (benchmarks/bench.py) on the CPU: what it measures, what it says it skipped and
why, where it writes, and the arithmetic of its reports (MFU, like-for-like ratios, the profile)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench  # noqa: E402
import bench_measure  # noqa: E402
import bench_peers  # noqa: E402
import bench_profile  # noqa: E402
import bench_report  # noqa: E402

from ddpm_lib.config import get_profile  # noqa: E402

PEERS_HERE = all(importlib.util.find_spec(name) for name in ("denoising_diffusion_pytorch", "diffusers"))
needs_peers = pytest.mark.skipif(not PEERS_HERE, reason="the peers are not installed (benchmarks/peers.txt)")
TINY = ["--window", "0.05", "--repeats", "2", "--device", "cpu"]


def rows_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"]


def test_train_measures_eager_and_shows_the_modes_it_cannot_run_as_rows(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert bench.main(["train", "--networks", "SmallUNet (demo)", "SmallUNet conditional (200 species)",
                       "--batch-sizes", "4", "--image-size", "16", "--out", str(out), *TINY]) == 0
    result, rows = json.loads(out.read_text()), rows_of(out)
    assert result["device"].startswith("CPU") and "tf32_cudnn" in result and "torch" in result
    measured = [r for r in rows if "images_per_s_median" in r]
    assert [(r["network"], r["mode"]) for r in measured] == [("SmallUNet (demo)", "eager"),
                                                             ("SmallUNet conditional (200 species)", "eager")]
    plain, conditional = measured
    assert plain["repeats"] == 2 and plain["images_per_s_min"] <= plain["images_per_s_median"] <= plain[
        "images_per_s_max"]
    assert plain["precision"] == "fp32" and plain["cuda_graph"] is False and plain["compiled"] is False
    assert plain["gflop_per_image_fwd_bwd"] > 0 and plain["mfu_percent"] is None  # no peak for a CPU
    assert plain["clocks"].startswith("not sampled: no NVML") and conditional["parameters"] > plain["parameters"]
    skipped = {(r["network"], r["mode"]): r["skipped"] for r in rows if "skipped" in r}
    assert len(skipped) == 6 and skipped[("SmallUNet (demo)", "graph")] == bench.SKIP_GRAPH
    assert skipped[("SmallUNet (demo)", "compile")] == bench.SKIP_COMPILE
    # the rows as they came, for a run cut short, and the table and progress for people
    jsonl = [json.loads(line) for line in (tmp_path / "train.json.rows.jsonl").read_text().splitlines()]
    assert jsonl == rows
    printed = capsys.readouterr()
    assert "skipped: CUDA graphs need CUDA" in printed.out and "images/s (min-max)" in printed.out
    assert "[1/2 " in printed.err and "ETA" in printed.err and "[2/2 " in printed.err


def test_the_default_run_is_sized_for_the_machine(tmp_path):
    cpu, gpu = bench.machine_defaults(torch.device("cpu")), bench.machine_defaults(torch.device("cuda"))
    demo = get_profile("demo")
    assert cpu["networks"] == ("SmallUNet (demo)", "BaselineUNet (demo)") and cpu["image_size"] == demo.data.image_size
    assert cpu["batch_sizes"] == (demo.train.batch_size,)
    assert gpu["image_size"] == 64 and gpu["window"] >= 2 and gpu["repeats"] >= 5  # the protocol's windows
    assert set(gpu["networks"]) >= {"BaselineUNet", bench_peers.DDPM_PYTORCH, bench_peers.DIFFUSERS}
    # the CPU default: the demo networks; every peer a row saying why it did not run here
    out = tmp_path / "train.json"
    assert bench.main(["train", "--batch-sizes", "2", "--image-size", "8", "--window", "0.01", "--repeats", "1",
                       "--modes", "eager", "--device", "cpu", "--out", str(out)]) == 0
    rows = rows_of(out)
    assert [r["network"] for r in rows if "images_per_s_median" in r] == list(cpu["networks"])
    peers = {r["network"]: r["skipped"] for r in rows if r["network"] in bench_peers.PEERS}
    assert set(peers) == set(bench_peers.PEERS)
    assert all("not installed" in why or "not in the CPU default" in why for why in peers.values())


def test_sample_honours_the_image_size_and_writes_under_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bench.main(["sample", "--num-samples", "3", "--image-size", "8", "--window", "0", "--repeats", "2",
                       "--device", "cpu", "--cases", "ddim", "guided", "ddim-graph", "guided-compiled"]) == 0
    written = list((tmp_path / "outputs" / "bench").glob("sample_CPU*.json"))
    assert len(written) == 1  # not beside bench.py
    rows = rows_of(written[0])
    ddim, guided = (r for r in rows if "seconds_median" in r)
    assert ddim["sampler"] == "DDIM-50" and guided["sampler"] == "conditional DDIM-50 w=3"
    assert ddim["image_size"] == guided["image_size"] == 8  # measured on the drawn images
    assert ddim["windows"] == 2 and ddim["seconds_min"] <= ddim["seconds_median"] <= ddim["seconds_max"]
    assert ddim["dynamo_graphs"] == 0 and guided["gflop_per_image"] == pytest.approx(2 * ddim["gflop_per_image"])
    skipped = {r["case"]: r["skipped"] for r in rows if "skipped" in r}
    assert skipped == {"ddim-graph": bench.SKIP_GRAPH, "guided-compiled": bench.SKIP_COMPILE}
    with pytest.raises(SystemExit):  # a misspelt case is refused before anything runs
        bench.main(["sample", "--cases", "ddim-compield", "--device", "cpu"])


def test_mfu_uses_the_card_s_dense_bf16_peak():
    assert bench_measure.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench_measure.peak_tflops("NVIDIA H100 PCIe") == 756.0  # not the SXM card's
    assert bench_measure.peak_tflops("NVIDIA L40S") == 362.0 and bench_measure.peak_tflops("NVIDIA L4") == 121.0
    assert bench_measure.peak_tflops("CPU (x86_64, 2 threads)") is None
    # the H100 run's BaselineUNet: 53.96 GFLOP x 2,258.6 images/s = 121.9 TFLOP/s = 12.3% of 989
    assert bench_measure.mfu(53.96, 2258.6, 989.0) == pytest.approx(12.32, abs=0.01)
    assert bench_measure.mfu(None, 100.0, 989.0) is None


def test_like_for_like_ratios_compare_a_mode_with_the_same_mode_and_best_with_best():
    def row(network, mode, rate):
        return {"network": network, "batch_size": 128, "mode": mode, "images_per_s_median": rate}

    rows = [row("ours", "eager", 1186.3), row("ours", "graph+compile", 2258.6), row("peer", "eager", 988.3),
            row("peer", "graph", 1021.4), {"network": "peer", "batch_size": 128, "mode": "graph+compile",
                                           "error": "failed"}]
    entries = {e["compared"]: e for e in bench_report.like_for_like(rows, "ours", "peer", 128)}
    assert set(entries) == {"eager / eager", "best / best"}  # no mode measured on one side only
    assert entries["eager / eager"]["ratio"] == pytest.approx(1186.3 / 988.3, abs=1e-3)  # 1.20x
    best = entries["best / best"]
    assert (best["ours_mode"], best["peer_mode"]) == ("graph+compile", "graph")
    assert best["ratio"] == pytest.approx(2258.6 / 1021.4, abs=1e-3)
    assert "best / best = graph+compile / graph" in bench_report.ratio_lines(rows, "ours", ["peer"], 128)[-1]


def test_progress_counts_the_cases_and_estimates_the_rest(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(bench_measure.time, "perf_counter", lambda: now[0])
    lines = []
    progress = bench_measure.Progress(4, guess=7.0, stream=type("S", (), {"write": lambda s, t: lines.append(t),
                                                                           "flush": lambda s: None})())
    progress.show("first")
    assert lines[0].startswith("[1/4 0:00 elapsed, ETA 0:28] first")  # 4 cases x the 7 s guess
    now[0] += 10.0
    progress.finish()
    progress.show("second")
    assert lines[-2].startswith("[2/4 0:10 elapsed, ETA 0:30] second")  # 3 left at the 10 s measured


def test_the_profile_attributes_the_step_to_operators_shapes_and_lines(tmp_path):
    out = tmp_path / "profile.json"
    assert bench.main(["profile", "--networks", "SmallUNet (demo)", "--batch-sizes", "2", "--image-size", "8",
                       "--steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    (row,) = rows_of(out)
    assert row["what"] == "cpu operators" and row["mode"] == "eager" and 0 < len(row["top"]) <= 8
    assert sum(entry["share"] for entry in row["top"]) <= 1.0 + 1e-6
    sites = [site for entry in row["top"] for site in entry["sites"]]
    assert all(site["op"].startswith("aten::") for site in sites)
    assert any("ddpm_lib" in line for site in sites for line in site["stack"])  # the project's source lines


def test_layout_conversions_are_counted_and_other_copies_are_not():
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(4, 8, 16, 16)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3):
            x.contiguous(memory_format=torch.channels_last)  # one NCHW -> NHWC conversion per step
            x.clone()  # a copy that keeps the layout
    report = bench_profile.attribute(prof.events(), 3, "cpu")
    if not any(getattr(e, "structured_input_strides", None) for e in prof.events()):
        pytest.skip("this torch's profiler records no strides")
    assert report["layout_conversions"]["calls_per_step"] == 1.0


@needs_peers
def test_diffusers_at_the_baseline_s_shape_matches_its_flops_within_ten_percent():
    diffusion = bench.build_diffusion(get_profile("full").diffusion)
    counted = {}
    for name in ("BaselineUNet", bench_peers.DIFFUSERS):
        torch.manual_seed(0)
        model = bench.build_network(name, 32)
        counted[name] = (bench.flops_per_image(model, diffusion, torch.device("cpu"), 32),
                         bench.count_parameters(model))
    (ours, our_parameters), (theirs, their_parameters) = counted["BaselineUNet"], counted[bench_peers.DIFFUSERS]
    assert abs(theirs / ours - 1) < 0.10 and their_parameters == our_parameters


@needs_peers
def test_the_peer_s_compile_workaround_keeps_its_outputs_and_gradients():
    import copy

    from denoising_diffusion_pytorch import Unet

    torch.manual_seed(0)
    shipped = Unet(dim=8, dim_mults=(1, 2))
    for module in shipped.modules():  # gains away from 1, so a wrong view would show
        if isinstance(module._parameters.get("g"), torch.nn.Parameter):
            module.g.data.uniform_(0.5, 1.5)
    patched = copy.deepcopy(shipped)
    assert bench_peers.reparametrize_channel_gains(patched) > 0
    x, t = torch.randn(2, 3, 8, 8), torch.rand(2) * 1000
    shipped(x, t).square().mean().backward()
    patched(x, t).square().mean().backward()
    assert torch.allclose(patched(x, t), shipped(x, t), atol=1e-6)
    gains = [(name, p) for name, p in shipped.named_parameters() if name.endswith(".g")]
    by_name = dict(patched.named_parameters())
    for name, gain in gains:
        original = by_name[name[: -len(".g")] + ".parametrizations.g.original"]
        assert original.shape == (gain.shape[1],) and torch.allclose(original.grad, gain.grad.reshape(-1))
    assert copy.deepcopy(patched) is not None  # the EMA keeps a deep copy


@needs_peers
def test_the_gradient_check_catches_a_network_that_computes_other_gradients():
    from ddpm_lib.engine.train import Trainer

    torch.manual_seed(0)
    model = bench_peers.PeerAdapter(__import__("denoising_diffusion_pytorch").Unet(dim=8, dim_mults=(1, 2)))
    config = bench.engine_config(2, "eager")
    trainer = Trainer(model, bench.build_diffusion(config.diffusion), torch.randint(0, 256, (8, 3, 8, 8),
                      dtype=torch.uint8), torch.full((3,), 0.5), torch.full((3,), 0.25), config, device="cpu",
                      progress=False)
    assert bench_peers.gradient_error(trainer) == 0.0  # the same network twice

    class Scaled(torch.nn.Module):  # what a miscompiled network could do: 10% off
        conditioning = "timestep"

        def forward(self, x, t):
            return 1.1 * model(x, t)

    trainer.network = Scaled()
    assert bench_peers.gradient_error(trainer) > 0.05


def test_a_busy_cpu_is_said_and_an_idle_one_is_not():
    assert "load 6.5 on 2 cores" in bench_measure.busy_warning({"cpu_cores": 2, "cpu_load_1min": 6.5})
    assert bench_measure.busy_warning({"cpu_cores": 2, "cpu_load_1min": 1.0}) is None
    assert bench_measure.busy_warning({"device": "NVIDIA H100 80GB HBM3"}) is None  # a GPU run has no CPU load


def test_the_graph_cases_run_the_recorded_path_when_graphs_exist(monkeypatch, tmp_path):
    """The GPU's sampling cases rehearsed on the CPU: the CUDA graph stubbed (graphed.ReplayStub), the
    case no longer skipped; the warm-up records one graph, every timed draw replays it."""
    from ddpm_lib import experiment
    from ddpm_lib.math import graphed

    monkeypatch.setattr(bench, "compile_supported", lambda device: True)  # not skipped here
    monkeypatch.setattr(experiment, "default_backend", lambda device: graphed.ReplayStub())
    out = tmp_path / "sample.json"
    assert bench.main(["sample", "--num-samples", "5", "--image-size", "8", "--window", "0", "--repeats", "2",
                       "--device", "cpu", "--cases", "guided-graph", "--out", str(out)]) == 0
    (row,) = rows_of(out)
    assert row["mode"] == "graph" and row["image_size"] == 8 and row["draws"] == 2 and "error" not in row
    # one batch of 5 per draw: the warm-up draw records, the two timed draws replay
    assert row["sampling_graphs"] == {"graphs": 1, "captures": 1, "replays": 2, "eager": {}}

"""Training survives what clusters and Colab do to it: interrupts, flaky storage, fp16 overflows, a
graph-mode step count, a fine-tune that starts where it should, runs kept on another drive."""

import errno
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddpm_lib.__main__ import main
from ddpm_lib.build import build_diffusion
from ddpm_lib.config import get_profile
from ddpm_lib.data.synthetic import render_dataset
from ddpm_lib.engine import checkpoints
from ddpm_lib.engine import train as train_module
from ddpm_lib.engine.checkpoints import CheckpointReadError
from ddpm_lib.engine.train import Trainer, TrainingDivergedError
from ddpm_lib.models import BaselineUNet, SmallUNet

from conftest import child_env

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def images():
    pixels, _ = render_dataset(32, 4, image_size=16, seed=0)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def trainer(images, folder, steps=20, resume="latest", **train):
    config = get_profile("smoke").override({"train.steps": steps, "train.log_every": 5, "train.checkpoint_every": 10,
                                            "train.sample_every": 0, **{f"train.{k}": v for k, v in train.items()}})
    torch.manual_seed(0)
    return Trainer(SmallUNet(widths=(8, 16), block_depth=1), build_diffusion(config.diffusion), images,
                   torch.full((3,), 0.5), torch.full((3,), 0.25), config, run_dir=folder, device="cpu",
                   resume=resume, progress=False)


# ----- interrupts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_checkpoints_the_step_reached_and_the_resume_ends_bit_identical(tmp_path, sig, code):
    child = [sys.executable, str(HERE / "train_child.py")]
    env = child_env()
    subprocess.run([*child, str(tmp_path / "whole"), "40"], check=True, env=env, timeout=300)
    stopped = subprocess.Popen([*child, str(tmp_path / "stopped"), "40", "--slow", "0.1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "stopped" / "metrics.csv").exists() or len(
            (tmp_path / "stopped" / "metrics.csv").read_text().splitlines()) < 3:  # past step 10
        assert time.time() < deadline and stopped.poll() is None, "the child never got going"
        time.sleep(0.02)
    time.sleep(0.25)  # somewhere between two checkpoints
    stopped.send_signal(sig)
    out, err = stopped.communicate(timeout=120)
    assert stopped.returncode == code, err[-2000:]
    assert f"{signal.Signals(sig).name}: stopped after step" in err and "Traceback" not in err
    written = checkpoints.list_checkpoints(tmp_path / "stopped" / "checkpoints")
    reached = checkpoints.checkpoint_step(written[-1])
    assert 10 < reached < 40 and reached % 10 != 0  # the step reached, not the last periodic checkpoint
    subprocess.run([*child, str(tmp_path / "stopped"), "40", "--resume"], check=True, env=env, timeout=300)
    whole, resumed = torch.load(tmp_path / "whole" / "final.pt"), torch.load(tmp_path / "stopped" / "final.pt")
    for part in ("model", "ema"):
        assert all(torch.equal(value, resumed[part][key]) for key, value in whole[part].items()), part


def test_the_command_line_exits_with_the_signals_status(monkeypatch, capsys):
    from ddpm_lib import experiment
    from ddpm_lib.engine.train import TrainingStopped

    def stopped(*args, **kwargs):
        raise TrainingStopped(signal.SIGTERM, 7, Path("runs/x/checkpoints/ckpt_00000007.pt"))

    monkeypatch.setattr(experiment, "run_experiment", stopped)
    assert main(["train", "--profile", "smoke"]) == 143
    assert capsys.readouterr().err.strip() == ("SIGTERM: stopped after step 7; checkpoint "
                                               "runs/x/checkpoints/ckpt_00000007.pt; run the same command again to "
                                               "resume")


# ----- flaky storage --------------------------------------------------------------------------------
def flaky_load(monkeypatch, failures: int):
    original, calls = torch.load, []

    def load(*args, **kwargs):
        calls.append(1)
        if len(calls) <= failures:
            raise OSError(errno.EIO, "Input/output error")
        return original(*args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "load", load)
    return calls


def test_a_read_that_fails_once_is_retried_and_the_run_resumes(images, tmp_path, monkeypatch):
    trainer(images, tmp_path, steps=10).fit()
    calls = flaky_load(monkeypatch, failures=1)
    resumed = trainer(images, tmp_path, steps=20)
    assert resumed.step == 10 and len(calls) == 2


def test_a_read_that_always_fails_stops_naming_the_file_and_sets_nothing_aside(images, tmp_path, monkeypatch):
    trainer(images, tmp_path, steps=10).fit()
    monkeypatch.setattr(checkpoints.time, "sleep", lambda seconds: None)
    flaky_load(monkeypatch, failures=100)
    with pytest.raises(CheckpointReadError, match=r"ckpt_00000010.pt .*Input/output error.* after 3 tries"):
        trainer(images, tmp_path, steps=20)
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path / "checkpoints")] == ["ckpt_00000010.pt"]
    assert not (tmp_path / "checkpoints" / "set-aside").exists()


def test_a_flipped_byte_is_corrupt_and_the_previous_checkpoint_serves(images, tmp_path):
    trainer(images, tmp_path, steps=20, keep_checkpoints=3).fit()
    newest = checkpoints.list_checkpoints(tmp_path / "checkpoints")[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a tensor: torch.load itself would not notice
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="do not match the digest"):
        state, path = checkpoints.load_latest(tmp_path / "checkpoints")
    assert path.name == "ckpt_00000010.pt" and state["step"] == 10


# ----- fp16: overflows are counted as skipped steps -----------------------------------------------
def inf_gradients(run, bad_steps):
    parameter = next(run.model.parameters())
    parameter.register_hook(lambda grad: grad * float("inf") if run.step in bad_steps else grad)


def test_fp16_overflows_with_a_finite_loss_are_counted_and_a_run_of_them_stops(images, tmp_path):
    run = trainer(images, tmp_path, steps=15, precision="fp16")
    inf_gradients(run, {3, 7})
    result = run.fit()
    assert sum(row["skipped_steps"] for row in result.history) == 2 and all(
        row["loss"] == row["loss"] for row in result.history)  # the losses stayed finite
    assert run.applied_steps == 13
    stuck = trainer(images, tmp_path / "stuck", steps=40, precision="fp16")
    inf_gradients(stuck, set(range(5, 40)))
    with pytest.raises(TrainingDivergedError, match=r"2\d steps in a row were skipped because the fp16 gradients"):
        stuck.fit()


# ----- the CUDA-graph path, stubbed on the CPU ---------------------------------------------------------
def test_recording_the_graph_applies_no_step(images, tmp_path, monkeypatch):
    class FakeGraph:  # what a CUDA graph does: replaying runs the recorded step
        def __init__(self, step, record):
            self.step, self.record = step, record
            record(step())  # recording runs the step's Python once, as torch.cuda.graph does

        def replay(self):
            self.record(self.step())

    monkeypatch.setattr(train_module, "capture_step", lambda step, record, *args: FakeGraph(step, record))
    run = trainer(images, tmp_path, steps=3)
    run.use_graph = True
    run.train_step()
    assert run.applied_steps == 1 and run.step == 1  # the capture is not counted as a step
    run.train_step()
    assert run.applied_steps == 2


# ----- a fine-tune starts as the network it starts from --------------------------------------------
@pytest.mark.parametrize("network", [
    lambda k: SmallUNet(widths=(8, 16), block_depth=1, num_classes=k),
    lambda k: BaselineUNet(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, image_size=16, num_classes=k),
], ids=["small_unet", "baseline_unet"])
def test_a_conditional_network_loaded_from_an_unconditional_one_is_exactly_that_network(network):
    torch.manual_seed(1)
    plain = network(None)
    with torch.no_grad():  # as after training: no zero-initialised layer (time projections, output) is left
        for parameter in plain.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    conditional = network(4)
    missing, unexpected = conditional.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing
    plain.eval(), conditional.eval()
    x, cond = torch.randn(3, 3, 16, 16), torch.rand(3) * 100
    expected = plain(x, cond)
    for labels in (torch.tensor([0, 1, 3]), torch.full((3,), 4), None):
        assert torch.equal(conditional(x, cond, labels) if labels is not None else conditional(x, cond), expected)


# ----- runs kept on another drive, and conditional runs on the command line -------------------------
@pytest.fixture
def data_here(tmp_path, monkeypatch):
    for name, folder in (("RUNS_DIR", "runs"), ("RAW_DIR", "raw"), ("PROCESSED_DIR", "processed")):
        monkeypatch.setattr(f"ddpm_lib.paths.{name}", tmp_path / folder)


def test_a_runs_folder_elsewhere_serves_train_sample_and_evaluate_alike(data_here, tmp_path, capsys):
    drive = tmp_path / "drive" / "runs"
    assert main(["train", "--profile", "smoke", "--steps", "2", "--runs-dir", str(drive), "--run-name", "a"]) == 0
    assert main(["train", "--profile", "smoke", "--steps", "2", "--runs-dir", str(drive), "--run-name", "b"]) == 0
    assert sorted(p.name for p in (drive / "smoke").iterdir()) == ["a", "b"]  # one folder per run
    assert main(["sample", "--profile", "smoke", "--runs-dir", str(drive), "--run-name", "a", "-n", "2"]) == 0
    assert list((drive / "smoke" / "a" / "samples").glob("DDIM-5_n2_seed0.npz"))
    capsys.readouterr()
    assert main(["evaluate", "--profile", "smoke", "--runs-dir", str(drive), "--run-name", "b", "--steps", "2",
                 "--num-samples", "4"]) in (0,)
    assert (drive / "smoke" / "b" / "evaluation" / "results.jsonl").exists()


def test_conditional_runs_say_what_they_drew_and_refuse_what_they_never_learned(data_here, tmp_path, capsys):
    assert main(["train", "--profile", "smoke", "--num-classes", "4", "--steps", "2", "--run-name", "c"]) == 0
    assert main(["sample", "--profile", "smoke", "--num-classes", "4", "--run-name", "c", "-n", "2"]) == 0
    assert list((tmp_path / "runs" / "smoke" / "c" / "samples").glob("*_unconditional_n2_seed0.npz"))
    assert main(["evaluate", "--profile", "smoke", "--run-name", "c", "--steps", "2", "--num-samples", "8",
                 "--species", "all"]) == 0
    rows = [json.loads(line) for line in
            (tmp_path / "runs" / "smoke" / "c" / "evaluation" / "results.jsonl").read_text().splitlines()]
    assert rows[0]["run"] == "c (all species in turn)" and "accuracy" in rows[0]
    assert main(["train", "--profile", "smoke", "--num-classes", "4", "--steps", "2", "--run-name", "d",
                 "--set", "train.label_dropout=0.0"]) == 0
    capsys.readouterr()
    sample_d = ["sample", "--profile", "smoke", "--run-name", "d", "--species", "1", "-n", "2"]
    assert main([*sample_d, "--guidance", "3"]) == 2
    assert "train.label_dropout = 0" in capsys.readouterr().err
    assert main([*sample_d, "--guidance", "1"]) == 0


def test_sample_grids_follow_sample_every_whatever_the_log_cadence(images, tmp_path):
    saved = []
    config = get_profile("smoke").override({"train.steps": 12, "train.log_every": 5, "train.checkpoint_every": 100,
                                            "train.sample_every": 3})
    torch.manual_seed(0)
    run = Trainer(SmallUNet(widths=(8, 16), block_depth=1), build_diffusion(config.diffusion), images,
                  torch.full((3,), 0.5), torch.full((3,), 0.25), config, device="cpu", progress=False,
                  on_sample=lambda t: saved.append(t.step))
    run.fit()
    assert saved == [0, 3, 6, 9, 12]

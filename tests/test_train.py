"""The training engine: batches, the loop, checkpoints, resume after SIGKILL, NaN and OOM handling."""

import csv
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
from ddpm_lib.engine.train import Trainer, TrainingDivergedError, choose_precision, random_batch
from ddpm_lib.experiment import save_sample_grid
from ddpm_lib.models import SmallUNet
from ddpm_lib.transforms import destandardize, standardize

from conftest import child_env

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def tiny_images():
    images, _ = render_dataset(32, 4, image_size=16, seed=0)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def tiny_trainer(images, run_dir, steps=30, resume=None, **train):
    config = get_profile("smoke")
    config.train.steps, config.train.log_every, config.train.checkpoint_every = steps, 5, 10
    for key, value in train.items():
        setattr(config.train, key, value)
    torch.manual_seed(0)
    model = SmallUNet(widths=(8, 16), block_depth=1)
    pixels = images.float() / 255
    return Trainer(model, build_diffusion(config.diffusion), images, pixels.mean((0, 2, 3)), pixels.std((0, 2, 3)),
                   config, run_dir=run_dir, device="cpu", resume=resume, progress=False, on_sample=save_sample_grid)


def test_standardize_round_trips_and_batches_are_standardized():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    pixels = images.float() / 255
    mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3))
    assert torch.equal(destandardize(standardize(images, mean, std), mean, std), images)
    batch, _ = random_batch(images, 4096, mean, std, g)
    assert torch.allclose(batch.mean((0, 2, 3)), torch.zeros(3), atol=0.02)
    assert torch.allclose(batch.std((0, 2, 3)), torch.ones(3), atol=0.02)
    ramp = torch.arange(8, dtype=torch.uint8).repeat(1, 3, 8, 1) * 30  # every row increases left to right
    flipped, _ = random_batch(ramp, 400, torch.zeros(3), torch.ones(3), g)
    increasing = (flipped[:, 0, 0, 1] > flipped[:, 0, 0, 0]).float().mean()
    assert 0.4 < float(increasing) < 0.6  # about half are mirrored


def test_precision_on_the_cpu_is_fp32():
    assert choose_precision(torch.device("cpu")) == "fp32"
    assert choose_precision(torch.device("cpu"), "bf16") == "bf16"


def test_training_lowers_the_loss_and_writes_its_run_folder(tiny_images, tmp_path):
    trainer = tiny_trainer(tiny_images, tmp_path, steps=120, lr=2e-3, log_every=40, checkpoint_every=60,
                           sample_every=60)
    result = trainer.fit()
    losses = [entry["loss"] for entry in result.history]
    assert [entry["step"] for entry in result.history] == [40, 60, 80, 120]
    assert losses[-1] < 0.8 * losses[0]
    with open(tmp_path / "metrics.csv") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [40, 60, 80, 120]
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path / "checkpoints")] == [
        "ckpt_00000060.pt", "ckpt_00000120.pt"]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "step_00000000.png", "step_00000060.png", "step_00000120.png"]  # start, every 60, end
    state, _ = checkpoints.load_latest(tmp_path / "checkpoints")
    assert state["step"] == 120 and state["config"]["profile"] == "smoke"
    assert all(torch.equal(state["ema"]["model"][k], v) for k, v in result.ema.model.state_dict().items())


def test_only_the_newest_checkpoints_are_kept(tiny_images, tmp_path):
    tiny_trainer(tiny_images, tmp_path, steps=50, keep_checkpoints=2).fit()
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path / "checkpoints")] == [
        "ckpt_00000040.pt", "ckpt_00000050.pt"]


def test_wandb_offline_writes_a_local_run(tiny_images, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tiny_trainer(tiny_images, tmp_path, steps=5, wandb="auto").fit()
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1


@pytest.mark.parametrize("wandb_mode", ["disabled", "offline"])
def test_a_run_killed_with_sigkill_and_resumed_ends_with_the_same_weights(tmp_path, wandb_mode):
    child = [sys.executable, str(HERE / "train_child.py")]
    env = child_env(WANDB_MODE=wandb_mode)
    subprocess.run([*child, str(tmp_path / "whole"), "40"], check=True, env=env, timeout=300)

    killed = subprocess.Popen([*child, str(tmp_path / "killed"), "40", "--slow", "0.1"], env=env)
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "checkpoints" / "ckpt_00000020.pt").exists():
        assert time.time() < deadline and killed.poll() is None, "the child never reached step 20"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "final.pt").exists()  # it really died mid-way
    subprocess.run([*child, str(tmp_path / "killed"), "40", "--resume"], check=True, env=env, timeout=300)

    whole = torch.load(tmp_path / "whole" / "final.pt")
    resumed = torch.load(tmp_path / "killed" / "final.pt")
    for part in ("model", "ema"):
        for key, value in whole[part].items():
            assert torch.equal(value, resumed[part][key]), f"{part}.{key} differs after resume"
    with open(tmp_path / "killed" / "metrics.csv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # no duplicated rows after the resume


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tiny_images, tmp_path):
    tiny_trainer(tiny_images, tmp_path, steps=30).fit()
    newest = checkpoints.list_checkpoints(tmp_path / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"ckpt_00000030.pt is unreadable.*falling back"):
        resumed = tiny_trainer(tiny_images, tmp_path, steps=30, resume="latest")
    assert resumed.step == 20


def test_a_nan_loss_stops_the_run_and_leaves_the_last_checkpoint_intact(tiny_images, tmp_path):
    trainer = tiny_trainer(tiny_images, tmp_path, steps=30)
    original = trainer.diffusion.training_loss

    def poisoned(model, x0, *args, **kwargs):
        loss = original(model, x0, *args, **kwargs)
        return loss * float("nan") if trainer.step >= 12 else loss

    trainer.diffusion.training_loss = poisoned
    with pytest.raises(TrainingDivergedError, match="weights became non-finite by step 15; .*last checkpoint"):
        trainer.fit()
    names = [p.name for p in checkpoints.list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["ckpt_00000010.pt"]
    state, _ = checkpoints.load_latest(tmp_path / "checkpoints")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_out_of_memory_at_start_names_the_batch_size(tiny_images, tmp_path):
    trainer = tiny_trainer(tiny_images, tmp_path, steps=5)

    def out_of_memory():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    trainer.train_step = out_of_memory
    with pytest.raises(RuntimeError, match="train.batch_size=16 .*try train.batch_size=8"):
        trainer.fit()


def test_train_command_reuses_a_finished_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ddpm_lib.paths.RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr("ddpm_lib.paths.RAW_DIR", tmp_path / "raw")
    monkeypatch.setattr("ddpm_lib.paths.PROCESSED_DIR", tmp_path / "processed")
    args = ["train", "--profile", "smoke", "--steps", "6", "--run-name", "tiny"]
    assert main(args) == 0
    assert (tmp_path / "runs" / "smoke" / "tiny" / "checkpoints" / "ckpt_00000006.pt").exists()
    capsys.readouterr()
    assert main(args) == 0
    assert "reusing the finished run" in capsys.readouterr().out
    assert main(["train", "--profile", "smoke", "--batch-size", "0"]) == 2
    assert "train.batch_size=0" in capsys.readouterr().err


def test_demo_command_under_the_smoke_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ddpm_lib.paths.RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr("ddpm_lib.paths.RAW_DIR", tmp_path / "raw")
    monkeypatch.setattr("ddpm_lib.paths.PROCESSED_DIR", tmp_path / "processed")
    assert main(["demo", "--profile", "smoke", "--steps", "4"]) == 0
    from PIL import Image

    samples = Image.open(tmp_path / "runs" / "smoke" / "demo" / "samples.png")
    size = get_profile("smoke").data.image_size
    assert samples.size == (3 * size, 3 * size)  # 8 samples, three to a row
    assert "samples.png" in capsys.readouterr().out
    assert main(["demo", "--profile", "nonsense"]) == 2
    assert "unknown profile 'nonsense'" in capsys.readouterr().err

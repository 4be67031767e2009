"""The minimal training loop and the demo command on tiny synthetic data."""

import csv

import pytest
import torch

from ddpm_lib.__main__ import main
from ddpm_lib.build import build_diffusion
from ddpm_lib.config import get_profile
from ddpm_lib.data.synthetic import render_dataset
from ddpm_lib.models import SmallUNet
from ddpm_lib.train import destandardize, random_batch, standardize, train


def test_standardize_round_trips_and_batches_are_standardized():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    pixels = images.float() / 255
    mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3))
    assert torch.equal(destandardize(standardize(images, mean, std), mean, std), images)
    batch = random_batch(images, 4096, mean, std, g)
    assert torch.allclose(batch.mean((0, 2, 3)), torch.zeros(3), atol=0.02)
    assert torch.allclose(batch.std((0, 2, 3)), torch.ones(3), atol=0.02)
    # flips: every batch image is a training image or its mirror
    ramp = torch.arange(8, dtype=torch.uint8).repeat(1, 3, 8, 1) * 30
    flipped = random_batch(ramp, 200, torch.zeros(3), torch.ones(3), g)
    increasing = (flipped[:, 0, 0, 1] > flipped[:, 0, 0, 0]).float().mean()
    assert 0.35 < float(increasing) < 0.65


def test_training_lowers_the_loss_and_writes_its_run_folder(tmp_path):
    config = get_profile("smoke")
    config.train.steps, config.train.log_every, config.train.lr = 120, 40, 2e-3
    images, _ = render_dataset(32, 4, image_size=16, seed=0)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    pixels = images.float() / 255
    mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3))
    model = SmallUNet(widths=(8, 16), block_depth=1)
    result = train(model, build_diffusion(config.diffusion), images, config, mean, std, run_dir=tmp_path)
    losses = [entry["loss"] for entry in result.history]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0]
    with open(tmp_path / "metrics.csv") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [40, 80, 120]
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 120 and checkpoint["config"]["profile"] == "smoke"
    ema_weights = result.ema.model.state_dict()
    assert all(torch.equal(checkpoint["ema"]["model"][k], ema_weights[k]) for k in ema_weights)


def test_training_refuses_float_images():
    config = get_profile("smoke")
    with pytest.raises(ValueError, match="uint8"):
        train(SmallUNet(widths=(8, 16)), build_diffusion(config.diffusion), torch.zeros(2, 3, 8, 8), config,
              torch.zeros(3), torch.ones(3))


def test_demo_command_under_the_smoke_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ddpm_lib.paths.RUNS_DIR", tmp_path)
    assert main(["demo", "--profile", "smoke", "--steps", "4"]) == 0
    out = tmp_path / "smoke" / "demo"
    from PIL import Image

    samples = Image.open(out / "samples.png")
    size = get_profile("smoke").data.image_size
    assert samples.size == (6 * size, 2 * size)  # 8 samples in rows of 6
    assert "samples.png" in capsys.readouterr().out
    assert main(["demo", "--profile", "nonsense"]) == 2
    assert "unknown profile 'nonsense'" in capsys.readouterr().err

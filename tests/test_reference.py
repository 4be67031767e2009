"""Results do not move: seeded training losses, EMA weights and samples of the smoke networks, bit for bit.

``tests/reference/smoke.json`` was recorded on the CPU (one thread) before the package was reorganised
(commit 348762b, by the then ``tests/reference/record.py``, with the samplers' old keyword API). This
test recomputes every number through today's API and compares the SHA-256 of the bytes: a refactor
that changes a single float of a loss, a weight or a sample fails here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from ddpm_lib.build import build_diffusion, build_model
from ddpm_lib.config import get_profile
from ddpm_lib.engine.train import Trainer
from ddpm_lib.math.sampling import Denoiser, SamplerSpec, sample, standardized_range

REFERENCE = json.loads((Path(__file__).parent / "reference" / "smoke.json").read_text())
CASES = {"small_unet": ("small_unet", None), "baseline_unet": ("baseline_unet", None),
         "small_unet_conditional": ("small_unet", 4), "small_unet_cosine_v_mae": ("small_unet", None)}
SETTINGS = {"ddpm": ("DDPM", 8), "ddim_5": ("DDIM-5", None), "ddim_10_eta1": ("DDIM-10 eta 1", 9),
            "dpm_solver_8": ("DPM-Solver++-8", None)}


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", list(CASES))
def test_losses_weights_and_samples_match_the_recording_bit_for_bit(case, one_thread):
    model_name, num_classes = CASES[case]
    overrides = {"model.num_classes": num_classes, "train.steps": 12, "train.log_every": 1,
                 "train.checkpoint_every": 1000, "train.warmup_steps": 3, "train.lr_schedule": "cosine",
                 "train.grad_clip": 1.0, "train.sample_every": 0}
    if case.endswith("cosine_v_mae"):
        overrides.update({"diffusion.schedule": "cosine", "diffusion.prediction": "v", "diffusion.loss": "mae"})
    config = get_profile("smoke", model=model_name).override(overrides)
    size = config.data.image_size
    images = torch.randint(0, 256, (24, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(123))
    pixels = images.float() / 255
    mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3))
    torch.manual_seed(config.train.seed)
    model, diffusion = build_model(config.model, size), build_diffusion(config.diffusion)
    trainer = Trainer(model, diffusion, images, mean, std, config, device="cpu", progress=False,
                      labels=torch.arange(24) % 4 if num_classes else None)
    result = trainer.fit()
    expected = REFERENCE[case]
    losses = torch.tensor([entry["loss"] for entry in result.history], dtype=torch.float64)
    assert losses.tolist() == expected["loss_values"]
    assert sha256(losses) == expected["losses"]["sha256"]
    network = result.ema.model.eval()
    for key, value in network.state_dict().items():
        assert sha256(value) == expected["ema"][key]["sha256"], f"EMA weight {key} moved"
    noise = torch.randn((4, 3, size, size), generator=torch.Generator().manual_seed(7))
    low, high = standardized_range(mean.tolist(), std.tolist())
    labels, guidance = (torch.tensor([0, 1, 2, 3]), 3.0) if num_classes else (None, 1.0)
    denoiser = Denoiser(network, diffusion, labels, guidance, (low.float(), high.float()))
    for name, (spec, generator_seed) in SETTINGS.items():
        generator = torch.Generator().manual_seed(generator_seed) if generator_seed is not None else None
        out = sample(denoiser, diffusion, noise, SamplerSpec.parse(spec), generator).images
        assert sha256(out) == expected["samples"][name]["sha256"], (
            f"{case} {spec}: sum {float(out.double().sum())} against {expected['samples'][name]['sum']}")

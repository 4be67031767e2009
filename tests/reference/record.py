"""Record seeded results of the smoke networks, so a refactor can show that results do not move.

Run once, with the code as it is before a refactor: ``python tests/reference/record.py``. It writes
``tests/reference/smoke.json``: SHA-256 digests (and sums, to read a difference) of

* the per-step training losses and the final EMA weights of a short CPU training of each smoke network
  (unconditional SmallUNet, BaselineUNet, a conditional SmallUNet with label dropout, a SmallUNet on
  the cosine schedule with v-prediction and the MAE loss), with warm-up,
  a cosine learning-rate decay, EMA warm-up and gradient clipping;
* samples of each trained network from fixed start noise and a fixed generator: DDPM, DDIM (eta 0
  and eta 1), DPM-Solver++ (order 2), with x0 clipping, and for the conditional one with guidance.

``tests/test_reference.py`` recomputes the same numbers through the current API and compares them
bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

HERE = Path(__file__).parent


def digest(tensor: torch.Tensor) -> dict:
    tensor = tensor.detach().cpu().contiguous()
    return {"sha256": hashlib.sha256(tensor.numpy().tobytes()).hexdigest(), "sum": float(tensor.double().sum()),
            "shape": list(tensor.shape)}


def weights_digest(module: torch.nn.Module) -> dict:
    return {key: digest(value) for key, value in module.state_dict().items()}


def main() -> None:
    from ddpm_lib.build import build_diffusion, build_model
    from ddpm_lib.config import get_profile
    from ddpm_lib.sampling import ddim_sample, ddpm_sample, dpm_solver_sample, standardized_range
    from ddpm_lib.train import Trainer

    torch.set_num_threads(1)
    out = {}
    for case, model_name, num_classes in (("small_unet", "small_unet", None), ("baseline_unet", "baseline_unet", None),
                                          ("small_unet_conditional", "small_unet", 4),
                                          ("small_unet_cosine_v_mae", "small_unet", None)):
        config = get_profile("smoke", model=model_name)
        config.model.num_classes = num_classes
        if case.endswith("cosine_v_mae"):
            config.diffusion.schedule, config.diffusion.prediction, config.diffusion.loss = "cosine", "v", "mae"
        config.train.steps, config.train.log_every, config.train.checkpoint_every = 12, 1, 1000
        config.train.warmup_steps, config.train.lr_schedule, config.train.grad_clip = 3, "cosine", 1.0
        config.train.sample_every = 0
        size = config.data.image_size
        generator = torch.Generator().manual_seed(123)
        images = torch.randint(0, 256, (24, 3, size, size), dtype=torch.uint8, generator=generator)
        labels = torch.arange(24) % 4
        pixels = images.float() / 255
        mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3))
        torch.manual_seed(config.train.seed)
        model = build_model(config.model, size)
        diffusion = build_diffusion(config.diffusion)
        trainer = Trainer(model, diffusion, images, mean, std, config, device="cpu", progress=False,
                          labels=labels if num_classes else None)
        result = trainer.fit()
        losses = torch.tensor([entry["loss"] for entry in result.history], dtype=torch.float64)
        network = result.ema.model.eval()
        shape = (4, 3, size, size)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(7))
        low, high = standardized_range(mean.tolist(), std.tolist())
        clip = (low.float(), high.float())
        extra = {"labels": torch.tensor([0, 1, 2, 3]), "guidance": 3.0} if num_classes else {}
        samples = {
            "ddpm": ddpm_sample(network, diffusion, shape, noise=noise, clip_range=clip,
                                generator=torch.Generator().manual_seed(8), **extra).images,
            "ddim_5": ddim_sample(network, diffusion, shape, steps=5, noise=noise, clip_range=clip, **extra).images,
            "ddim_10_eta1": ddim_sample(network, diffusion, shape, steps=10, eta=1.0, noise=noise, clip_range=clip,
                                        generator=torch.Generator().manual_seed(9), **extra).images,
            "dpm_solver_8": dpm_solver_sample(network, diffusion, shape, steps=8, noise=noise, clip_range=clip,
                                              **extra).images,
        }
        out[case] = {"losses": digest(losses), "loss_values": losses.tolist(), "ema": weights_digest(network),
                     "samples": {name: digest(images) for name, images in samples.items()}}
    (HERE / "smoke.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {HERE / 'smoke.json'}")


if __name__ == "__main__":
    main()

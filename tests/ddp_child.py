"""Helper for the multi-process tests: trains a tiny GroupNorm U-Net, alone or under torchrun.

    python ddp_child.py OUT STEPS [--resume] [--slow SECONDS]
    python -m torch.distributed.run --nproc_per_node=2 ddp_child.py OUT STEPS ...

Each process writes OUT/final-rank<R>.pt (its weights) when training ends; the trainer's own files
go to OUT/run-rank<R>/ (only rank 0 should write any) and OUT/checkpoints/ (shared).
"""

import sys
from pathlib import Path

import torch

from ddpm_lib.build import build_diffusion
from ddpm_lib.config import get_profile
from ddpm_lib.distributed import init_from_environment
from ddpm_lib.models import BaselineUNet
from ddpm_lib.train import Trainer

from child_helpers import slow_down


def main():
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    slow = float(sys.argv[sys.argv.index("--slow") + 1]) if "--slow" in sys.argv else 0.0
    torch.set_num_threads(1)
    context = init_from_environment("cpu")
    config = get_profile("smoke")
    train = config.train
    train.steps, train.batch_size, train.checkpoint_every, train.log_every = steps, 8, 2, 2
    train.keep_checkpoints, train.sample_every, train.wandb = 20, 0, "disabled"
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = BaselineUNet(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                         image_size=16, dropout=0.0)  # GroupNorm: per-sample, so slices add up exactly
    trainer = Trainer(model, build_diffusion(config.diffusion), images, torch.full((3,), 0.5), torch.full((3,), 0.25),
                      config, run_dir=out / f"run-rank{context.rank}", checkpoint_dir=out / "checkpoints",
                      device="cpu", resume="latest" if "--resume" in sys.argv else None, progress=False)
    slow_down(trainer, slow)
    trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"final-rank{context.rank}.pt")
    if context.enabled:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

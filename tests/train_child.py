"""Helper for the kill-and-resume test: trains a tiny run in its own process.

    python train_child.py RUN_DIR STEPS [--slow SECONDS] [--resume]

Writes RUN_DIR/final.pt (the model and EMA weights) when training ends.
"""

import sys

import torch

from ddpm_lib.build import build_diffusion
from ddpm_lib.config import get_profile
from ddpm_lib.data.synthetic import render_dataset
from ddpm_lib.engine.train import Trainer, TrainingStopped
from ddpm_lib.models import SmallUNet

from child_helpers import slow_down


def main():
    run_dir, steps = sys.argv[1], int(sys.argv[2])
    slow = float(sys.argv[sys.argv.index("--slow") + 1]) if "--slow" in sys.argv else 0.0
    torch.set_num_threads(1)  # the same reduction order in every process
    config = get_profile("smoke")
    config.train.steps, config.train.checkpoint_every, config.train.log_every = steps, 10, 5
    config.train.keep_checkpoints = 10
    images, _ = render_dataset(16, 4, image_size=16, seed=0)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    torch.manual_seed(0)
    model = SmallUNet(widths=(8, 16), block_depth=1)
    trainer = Trainer(model, build_diffusion(config.diffusion), images, torch.full((3,), 0.5), torch.full((3,), 0.25),
                      config, run_dir=run_dir, device="cpu", resume="latest" if "--resume" in sys.argv else None,
                      progress=False)
    slow_down(trainer, slow)
    try:
        trainer.fit()
    except TrainingStopped as stopped:  # as the command line does: its one line, its exit status
        print(stopped, file=sys.stderr)
        sys.exit(stopped.code)
    torch.save({"model": trainer.model.state_dict(), "ema": trainer.ema.model.state_dict()}, f"{run_dir}/final.pt")


if __name__ == "__main__":
    main()

"""Helper for the multi-process tests: trains a tiny U-Net, alone or under torchrun.

    python ddp_child.py OUT STEPS [--resume] [--slow SECONDS] [--model baseline|small] [--dropout P]
                        [--emulate-ranks N] [--fail-save]
    python -m torch.distributed.run --nproc_per_node=2 ddp_child.py OUT STEPS ...

Each process writes OUT/final-rank<R>.pt (its weights) when training ends; the trainer's own files
go to OUT/run-rank<R>/ (only rank 0 should write any) and OUT/checkpoints/ (shared).

``--emulate-ranks N`` (one process) trains on the same global batches as N processes would, slice by
slice, each slice's forward pass drawing from the private stream rank r of N would use: the
reference a DDP run with dropout must follow exactly. ``--fail-save`` makes rank 0's second
checkpoint write fail as a full disk does.
"""

import errno
import sys
from pathlib import Path

import torch

from ddpm_lib.build import build_diffusion
from ddpm_lib.config import get_profile
from ddpm_lib.engine import checkpoints
from ddpm_lib.engine.distributed import init_from_environment, rank_seed
from ddpm_lib.engine.train import Trainer
from ddpm_lib.models import BaselineUNet, SmallUNet

from child_helpers import slow_down


def option(name, default, kind=str):
    return kind(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


class SliceEmulation(Trainer):
    """One process doing what N processes do: per-slice losses, each slice's own dropout stream."""

    ranks = 1

    def _step(self):
        x0, t, noise, labels = self.data.draw(self.diffusion)
        local = self.settings.batch_size // self.ranks
        total = torch.zeros(())
        for rank in range(self.ranks):
            part = slice(rank * local, (rank + 1) * local)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(rank_seed(self.settings.seed, self.step, rank))
                loss = self.diffusion.training_loss(self.network, x0[part], t[part], noise[part]) / self.ranks
            loss.backward()
            total += loss.detach()
        self.optimizer.step()
        self.ema.update(self.model)
        return total, True


def record_collectives(trainer, path):
    """Record the device of every tensor the trainer hands to a collective (and how many collectives one
    synchronised BatchNorm layer makes per forward), written to ``path`` at exit."""
    import atexit
    import json

    import torch.distributed as dist

    from ddpm_lib.engine.distributed import SyncBatchNorm2d

    seen = {"all_reduce": [], "broadcast": [], "barrier": 0}
    originals = {name: getattr(dist, name) for name in ("all_reduce", "broadcast", "barrier")}

    def all_reduce(tensor, *args, **kwargs):
        seen["all_reduce"].append(str(tensor.device))
        return originals["all_reduce"](tensor, *args, **kwargs)

    def broadcast(tensor, *args, **kwargs):
        seen["broadcast"].append(str(tensor.device))
        return originals["broadcast"](tensor, *args, **kwargs)

    def barrier(*args, **kwargs):
        seen["barrier"] += 1
        return originals["barrier"](*args, **kwargs)

    dist.all_reduce, dist.broadcast, dist.barrier = all_reduce, broadcast, barrier
    layer = SyncBatchNorm2d(4).train()
    before = len(seen["all_reduce"])
    layer(torch.randn(2, 4, 3, 3))
    per_layer = len(seen["all_reduce"]) - before
    atexit.register(lambda: path.write_text(json.dumps({
        "context_device": str(trainer.dist.device), "training_device": str(trainer.device),
        "batchnorm_collectives_per_forward": per_layer, **seen})))


def main():
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    slow, dropout = option("--slow", 0.0, float), option("--dropout", 0.0, float)
    emulate = option("--emulate-ranks", 0, int)
    torch.set_num_threads(1)
    context = init_from_environment("cpu")
    config = get_profile("smoke")
    train = config.train
    train.steps, train.batch_size, train.checkpoint_every, train.log_every = steps, 8, 2, 2
    train.keep_checkpoints, train.sample_every, train.wandb = 20, 0, "disabled"
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    if option("--model", "baseline") == "small":
        model = SmallUNet(widths=(8, 16), block_depth=1)  # BatchNorm: synchronised across processes
    else:
        model = BaselineUNet(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                             image_size=16, dropout=dropout)  # GroupNorm: per-sample, so slices add up exactly
    cls = Trainer
    if emulate:
        cls = SliceEmulation
        cls.ranks = emulate
    trainer = cls(model, build_diffusion(config.diffusion), images, torch.full((3,), 0.5), torch.full((3,), 0.25),
                  config, run_dir=out / f"run-rank{context.rank}", checkpoint_dir=out / "checkpoints",
                  device="cpu", resume="latest" if "--resume" in sys.argv else None, progress=False)
    slow_down(trainer, slow)
    if "--record-collectives" in sys.argv:
        record_collectives(trainer, out / f"collectives-rank{context.rank}.json")
    if "--fail-save" in sys.argv and context.rank == 0:
        original, calls = checkpoints.save_checkpoint, []

        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(*args, **kwargs)

        checkpoints.save_checkpoint = failing
    trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"final-rank{context.rank}.pt")
    if context.enabled:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

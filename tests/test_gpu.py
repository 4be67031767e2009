"""Checks that need a CUDA GPU (skipped elsewhere): precision, channels_last, CUDA-graph training."""

import pytest
import torch

from ddpm_lib.build import build_diffusion
from ddpm_lib.config import get_profile
from ddpm_lib.engine.train import Trainer
from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.math.schedules import get_named_schedule
from ddpm_lib.models import BaselineUNet, SmallUNet

from conftest import draw, gaussian_oracle

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", ["small", "small_attention", "baseline"])
def test_networks_train_under_bf16_autocast_and_channels_last(name, size):
    model = {"small": SmallUNet, "small_attention": lambda: SmallUNet(attention=True),
             "baseline": lambda: BaselineUNet(image_size=size)}[name]().cuda().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x, torch.rand(4, device="cuda"))
    assert out.shape == x.shape
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("sampler, schedule, steps", [("ddim", "linear", 50), ("dpm_solver", "cosine", 20)],
                         ids=["ddim", "dpm_solver"])
def test_samplers_on_the_gpu_match_the_cpu(sampler, schedule, steps):
    diffusion = GaussianDiffusion(get_named_schedule(schedule, 1000))
    noise = torch.randn(512, 1, 2, 2, dtype=torch.float64)
    cpu = draw(sampler, gaussian_oracle(diffusion), diffusion, noise, steps=steps).images
    gpu_diffusion = GaussianDiffusion(get_named_schedule(schedule, 1000)).to("cuda")
    gpu = draw(sampler, gaussian_oracle(gpu_diffusion), gpu_diffusion, noise.cuda(), steps=steps).images
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-9)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_training_learns_like_eager_training(precision, tmp_path):
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    images[:, :, 8:24, 8:24] = 200  # some structure to learn
    losses = {}
    for graph in (False, True):
        config = get_profile("smoke")
        config.train.steps, config.train.log_every, config.train.checkpoint_every = 200, 50, 100
        config.train.precision, config.train.cuda_graph, config.train.lr = precision, graph, 2e-3
        config.train.compile = False  # the graph alone (compilation is checked below)
        torch.manual_seed(0)
        trainer = Trainer(SmallUNet(widths=(16, 32, 64)), build_diffusion(config.diffusion), images,
                          torch.full((3,), 0.5), torch.full((3,), 0.3), config, run_dir=tmp_path / f"g{graph}",
                          device="cuda", progress=False)
        assert trainer.use_graph == graph
        result = trainer.fit()
        assert trainer.ema.num_updates == 200 and trainer.applied_steps == 200  # recording applied no step
        losses[graph] = [entry["loss"] for entry in result.history]
    assert losses[True][-1] < 0.9 * losses[True][0]  # it learns
    assert abs(losses[True][-1] - losses[False][-1]) < 0.15 * losses[False][-1]  # as eager steps do


def test_compiled_network_inside_the_graph(tmp_path):
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    config = get_profile("smoke")
    config.train.steps, config.train.compile, config.train.log_every = 30, True, 10
    torch.manual_seed(0)
    trainer = Trainer(SmallUNet(widths=(16, 32, 64)), build_diffusion(config.diffusion), images,
                      torch.full((3,), 0.5), torch.full((3,), 0.3), config, run_dir=tmp_path, device="cuda",
                      progress=False)
    result = trainer.fit()
    assert trainer.use_graph and trainer.network is not trainer.model
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in result.history)
    assert not any(key.startswith("_orig_mod") for key in trainer.model.state_dict())


def test_a_graph_run_resumes_from_its_checkpoint(tmp_path):
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    config = get_profile("smoke")
    config.train.steps, config.train.checkpoint_every, config.train.log_every = 20, 10, 10
    config.train.compile = False

    def make(resume):
        torch.manual_seed(0)
        return Trainer(SmallUNet(widths=(16, 32, 64)), build_diffusion(config.diffusion), images,
                       torch.full((3,), 0.5), torch.full((3,), 0.3), config, run_dir=tmp_path, device="cuda",
                       resume=resume, progress=False)

    make(None).fit()
    config.train.steps = 30
    resumed = make("latest")
    assert resumed.step == 20
    resumed.fit()
    assert resumed.step == 30 and resumed.ema.num_updates == 30


def _images(count=256, size=32):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)
    images[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 200  # some structure to learn
    return images


def _trainer(tmp_path, steps, resume=None, num_classes=None, **train):
    config = get_profile("smoke")
    config.train.steps, config.train.log_every, config.train.checkpoint_every = steps, 25, 50
    config.train.lr, config.train.compile, config.train.sample_every = 2e-3, False, 0
    config.model.num_classes = num_classes
    for key, value in train.items():
        setattr(config.train, key, value)
    torch.manual_seed(0)
    labels = torch.arange(256) % num_classes if num_classes else None
    return Trainer(SmallUNet(widths=(16, 32, 64), num_classes=num_classes), build_diffusion(config.diffusion),
                   _images(), torch.full((3,), 0.5), torch.full((3,), 0.3), config, run_dir=tmp_path, device="cuda",
                   resume=resume, progress=False, labels=labels)


def test_conditional_training_in_bf16_and_the_graph_then_guided_sampling(tmp_path):
    from ddpm_lib.experiment import Run

    trainer = _trainer(tmp_path, 100, num_classes=4)
    assert trainer.use_graph and trainer.precision == "bf16"
    result = trainer.fit()
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    run = Run(trainer.config, trainer.ema.model, trainer.diffusion, trainer.mean.cpu(), trainer.std.cpu(), tmp_path,
              [], 100)
    calls = []
    trainer.ema.model.register_forward_pre_hook(lambda module, inputs: calls.append(inputs[0].shape[0]))
    pixels = run.sample(8, "DDIM-5 w=3", labels=torch.arange(8) % 4, batch_size=8).images
    assert pixels.shape == (8, 32, 32, 3) and calls == [16] * 5  # one doubled-batch call per step


@pytest.mark.parametrize("card", ["T4", "P100"])
def test_the_older_cards_path_forced_here_learns_as_bf16_does(card, tmp_path):
    """fp16 autocast + GradScaler, eager steps (no graph); on a P100 also no torch.compile."""
    losses = {}
    for name, precision in (("bf16", "bf16"), (card, "fp16")):
        trainer = _trainer(tmp_path / name, 200, precision=precision, compile=card == "T4" and precision == "fp16")
        if precision == "fp16":
            assert trainer.scaler is not None and not trainer.use_graph
        losses[name] = [entry["loss"] for entry in trainer.fit().history]
    assert losses[card][-1] < 0.9 * losses[card][0]  # it learns
    assert abs(losses[card][-1] - losses["bf16"][-1]) < 0.2 * losses["bf16"][-1]  # as bf16 does


@pytest.mark.parametrize("first, second", [(True, False), (False, True)])
def test_a_run_resumes_across_graph_and_eager_modes(first, second, tmp_path):
    _trainer(tmp_path, 50, cuda_graph=first).fit()
    resumed = _trainer(tmp_path, 100, resume="latest", cuda_graph=second)
    assert resumed.step == 50 and resumed.use_graph == second
    assert all(g["capturable"] == second for g in resumed.optimizer.param_groups)
    result = resumed.fit()
    assert resumed.step == 100 and all(torch.isfinite(torch.tensor(e["loss"])) for e in result.history)


def _sampling_run(num_classes: int = 4, size: int = 32):
    """A Run around a small conditional SmallUNet on the GPU (output layer not zero: real arithmetic)."""
    from pathlib import Path

    from ddpm_lib.experiment import Run

    torch.manual_seed(0)
    config = get_profile("smoke").override({"model.num_classes": num_classes, "data.image_size": size})
    model = SmallUNet(widths=(16, 32, 64), num_classes=num_classes)
    torch.nn.init.normal_(model.output_conv.weight, std=0.02)
    return Run(config, model.cuda().eval(), build_diffusion(config.diffusion).to("cuda"), torch.full((3,), 0.5),
               torch.full((3,), 0.25), Path("."), [], 0)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager-network", "compiled-network"])
def test_sampling_records_one_cuda_graph_per_shape_and_replays_the_eager_images(compiled):
    """19 images in batches of 8: the last batch is padded, so one compiled graph and one recorded loop
    serve all three batches; a guided setting (the doubled batch) adds one of each, another sampler a
    recorded loop only; replays give the eager images."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    run, labels = _sampling_run(), torch.arange(19) % 4
    draw = {"batch_size": 8, "labels": labels, "compile_network": compiled}
    eager = run.sample(19, "DDIM-10", **draw, cuda_graph=False)
    per_shape = counters["stats"]["unique_graphs"]  # what compiling one batch shape made (a graph break: more)
    assert per_shape >= (1 if compiled else 0)
    replayed = run.sample(19, "DDIM-10", **draw, cuda_graph=True)
    again = run.sample(19, "DDIM-10", **draw, cuda_graph=True)
    assert run.sampling_graphs.stats() == {"graphs": 1, "captures": 1, "replays": 2 + 3, "eager": {}}
    # bf16 kernels may differ in the last bits between a padded and an unpadded batch; a replay that read
    # a stale or wrong batch would differ by O(1)
    assert torch.allclose(replayed.latents, eager.latents, atol=2e-2)
    assert torch.allclose(again.latents, replayed.latents, atol=1e-5)
    guided_eager = run.sample(19, "DDIM-10 w=3", **draw, cuda_graph=False)
    guided = run.sample(19, "DDIM-10 w=3", **draw, cuda_graph=True)
    assert torch.allclose(guided.latents, guided_eager.latents, atol=2e-2)
    run.sample(19, "DPM-Solver++-8", **draw, cuda_graph=True)
    run.sample(19, "DDIM-10 eta 1", **draw, cuda_graph=True)  # stochastic: eager, three batches
    stats = run.sampling_graphs.stats()
    assert stats["graphs"] == stats["captures"] == 3 and sum(stats["eager"].values()) == 3
    # torch.compile with static shapes: batch 8 and the doubled batch 16 only, nothing recompiled for the
    # padded last batches, the graph recordings, the other sampler or the stochastic draw
    assert counters["stats"]["unique_graphs"] == 2 * per_shape

"""Sampling replayed from recorded loops (ddpm_lib/math/graphed.py), on the CPU with the CUDA graph
stubbed (graphed.ReplayStub): the same path Run.sample takes on a GPU, one graph per (batch,
setting), each later batch reaching the loop only through the static buffers. The GPU test
(tests/test_gpu.py) checks the real graphs."""

from pathlib import Path

import pytest
import torch

from ddpm_lib import experiment
from ddpm_lib.build import build_diffusion
from ddpm_lib.config import get_profile
from ddpm_lib.experiment import Run
from ddpm_lib.math import graphed
from ddpm_lib.models import SmallUNet

BATCH, COUNT = 4, 11  # two full batches and a last one of 3, padded to 4 when replayed


@pytest.fixture
def stubbed(monkeypatch):
    """CUDA graphs replaced by the stub on every device; returns the stubs made."""
    made = []

    def backend(device):
        made.append(graphed.ReplayStub())
        return made[-1]

    monkeypatch.setattr(experiment, "default_backend", backend)
    return made


def conditional_run() -> Run:
    torch.manual_seed(0)
    config = get_profile("smoke").override({"model.num_classes": 4, "data.image_size": 16})
    model = SmallUNet(widths=(8, 16), block_depth=1, num_classes=4)
    torch.nn.init.normal_(model.output_conv.weight, std=0.05)  # not the zero init: real outputs
    return Run(config, model.eval(), build_diffusion(config.diffusion), torch.full((3,), 0.5), torch.full((3,), 0.25),
               Path("."), [], 0)


LABELS = torch.arange(COUNT) % 4


@pytest.mark.parametrize("setting, labels", [("DDIM-5", None), ("DPM-Solver++-4", None), ("DDIM-5 w=3", LABELS),
                                             ("DPM-Solver++-4 w=2", LABELS)])
def test_replayed_batches_give_the_eager_images_from_one_recording(stubbed, setting, labels):
    run = conditional_run()
    eager = run.sample(COUNT, setting, batch_size=BATCH, labels=labels, cuda_graph=False)
    assert run.sampling_graphs is None and not stubbed
    replayed = run.sample(COUNT, setting, batch_size=BATCH, labels=labels, cuda_graph=True)
    # the first batch is the warm-up's, batches 2 and 3 (the last one padded) are replays
    assert run.sampling_graphs.stats() == {"graphs": 1, "captures": 1, "replays": 2, "eager": {}}
    assert torch.allclose(replayed.latents, eager.latents, atol=1e-5)
    assert (replayed.images.astype(int) - eager.images.astype(int)).__abs__().max() <= 1
    again = run.sample(COUNT, setting, batch_size=BATCH, labels=labels, cuda_graph=True)
    assert run.sampling_graphs.stats()["captures"] == 1 and run.sampling_graphs.stats()["replays"] == 5
    assert torch.equal(again.latents, replayed.latents)
    assert len(stubbed) == 1 and stubbed[0].captured == 1  # one backend per run, one recording


def test_one_graph_per_batch_shape_and_setting(stubbed):
    run = conditional_run()
    for setting, labels, batch in (("DDIM-5", None, BATCH), ("DDIM-5", LABELS, BATCH), ("DDIM-5 w=3", LABELS, BATCH),
                                   ("DDIM-5 w=3", LABELS, BATCH), ("DDIM-4 w=3", LABELS, BATCH),
                                   ("DDIM-5", None, 8), ("DDIM-5", None, None)):
        run.sample(COUNT, setting, batch_size=batch, labels=labels, cuda_graph=True)
    # unconditional, labelled, guided (twice: one graph), another step count, batch 8, one batch of 11
    assert run.sampling_graphs.stats()["graphs"] == 6 and stubbed[0].captured == 6


@pytest.mark.parametrize("setting, trajectory_every, reason", [
    ("DDIM-5 eta 1", None, "per-image generators"), ("DDPM", None, "per-image generators"),
    ("DDIM-5", 2, "trajectory")])
def test_stochastic_settings_and_trajectories_run_eagerly_unpadded(stubbed, setting, trajectory_every, reason):
    run = conditional_run()
    run.diffusion = build_diffusion(run.config.diffusion.__class__(num_steps=20))  # DDPM over 20 steps, not 1000
    eager = run.sample(COUNT, setting, batch_size=BATCH, trajectory_every=trajectory_every, cuda_graph=False)
    replayed = run.sample(COUNT, setting, batch_size=BATCH, trajectory_every=trajectory_every, cuda_graph=True)
    stats = run.sampling_graphs.stats()
    assert stats["graphs"] == 0 and stats["replays"] == 0 and stubbed[0].captured == 0
    assert sum(stats["eager"].values()) == 3 and reason in next(iter(stats["eager"]))  # three batches, each eager
    assert torch.equal(replayed.latents, eager.latents)  # the very same path: per-image noise, no padding


def test_graphs_follow_compile_network_unless_told_and_need_a_backend(stubbed, monkeypatch):
    run = conditional_run()
    run.sample(COUNT, "DDIM-3", batch_size=BATCH)
    assert run.sampling_graphs is None  # plain sampling records nothing
    run.sample(COUNT, "DDIM-3", batch_size=BATCH, compile_network=True)  # no compile on the CPU, graphs still asked
    assert run.sampling_graphs.stats()["graphs"] == 1
    run.sample(COUNT, "DDIM-3", batch_size=BATCH, compile_network=True, cuda_graph=False)
    assert run.sampling_graphs.stats()["replays"] == 2  # the call without graphs replayed nothing
    monkeypatch.setattr(experiment, "default_backend", graphed.default_backend)
    plain = conditional_run()  # the real backend: CPU has no graphs, so sampling stays eager and unpadded
    plain.sample(COUNT, "DDIM-3", batch_size=BATCH, cuda_graph=True)
    assert plain.sampling_graphs is None


def test_the_loops_read_their_coefficients_from_a_host_copy_of_the_schedule():
    diffusion = build_diffusion(get_profile("smoke").diffusion)
    host = graphed.HostSchedule(diffusion)
    assert host.schedule is not diffusion.schedule and host.schedule.alphas_cumprod.device.type == "cpu"
    assert torch.equal(host.schedule.alphas_cumprod, diffusion.schedule.alphas_cumprod)
    assert host.num_steps == diffusion.num_steps and host.q_posterior_mean == diffusion.q_posterior_mean

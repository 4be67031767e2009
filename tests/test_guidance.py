"""Classifier-free guidance and class-conditional networks, checked against exact denoisers.

For data from two classes, x0 | c ~ N(mu_c, sigma^2), the exact conditional noise predictor is the
Gaussian oracle with mu_c, and the exact unconditional one weights the two by the posterior
p(c | x_t), whose closed form follows from x_t | c ~ N(sqrt(abar) mu_c, abar sigma^2 + 1 - abar).
"""

import math

import pytest
import torch

from ddpm_lib.build import build_diffusion
from ddpm_lib.config import get_profile
from ddpm_lib.engine.train import Trainer
from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.math.sampling import Denoiser
from ddpm_lib.math.schedules import get_named_schedule
from ddpm_lib.models import BaselineUNet, SmallUNet, count_parameters

from conftest import draw, gaussian_oracle

MEANS, SIGMA = (-1.0, 1.5), 0.3


class MixtureOracle:
    """The exact eps of each class (labels 0, 1) and of the two-class mixture (label 2, "no label")."""

    num_classes = 2

    def __init__(self, diffusion):
        self.diffusion = diffusion
        self.conditional = [gaussian_oracle(diffusion, mu, SIGMA) for mu in MEANS]
        self.calls, self.batch_sizes = 0, []

    def __call__(self, x, t, labels=None):
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        if labels is None:
            labels = torch.full((x.shape[0],), 2, dtype=torch.long)
        abar = self.diffusion.schedule.alphas_cumprod[t.long()].reshape(-1, 1, 1, 1).to(x.dtype)
        variance = abar * SIGMA**2 + 1 - abar
        log_likelihood = torch.stack([-(x - abar.sqrt() * mu) ** 2 / (2 * variance) for mu in MEANS])
        posterior = torch.softmax(log_likelihood, dim=0)  # p(c | x_t), equal priors
        eps = [oracle(x, t) for oracle in self.conditional]
        unconditional = posterior[0] * eps[0] + posterior[1] * eps[1]
        choice = labels.reshape(-1, 1, 1, 1)
        return torch.where(choice == 0, eps[0], torch.where(choice == 1, eps[1], unconditional))


def make(num_steps=1000):
    diffusion = GaussianDiffusion(get_named_schedule("linear", num_steps))
    return diffusion, MixtureOracle(diffusion)


def start(count=4_000, seed=0):
    return torch.randn(count, 1, 1, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_w1_is_plain_conditional_and_w0_is_the_no_label_index_draw_for_draw():
    diffusion, oracle = make(100)
    x_T, labels = start(500), torch.ones(500, dtype=torch.long)
    for sampler, setting in (("ddpm", {}), ("ddim", {"steps": 20, "eta": 0.5})):
        def run(network, sampler=sampler, setting=setting, **given):
            return draw(sampler, network, diffusion, x_T, torch.Generator().manual_seed(1), **setting, **given).images

        assert torch.equal(run(lambda x, t: oracle(x, t, labels)), run(oracle, labels=labels, guidance=1.0))
        assert torch.equal(run(oracle), run(oracle, labels=labels, guidance=0.0))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_one_doubled_call_equals_two_calls_combined_in_eps_space(prediction):
    diffusion = GaussianDiffusion(get_named_schedule("cosine", 100), prediction=prediction)
    weight = torch.randn(3, 3, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    class Network:
        num_classes = 4

        def __init__(self):
            self.calls = 0

        def __call__(self, x, t, labels):  # any output that depends on x, t and the labels
            self.calls += 1
            shift = (labels.double() - 1.5).reshape(-1, 1, 1, 1)
            return torch.tanh(torch.nn.functional.conv2d(x, weight) + shift * t.reshape(-1, 1, 1, 1) / 50)

    network = Network()
    x_t = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    t = torch.tensor([3, 10, 40, 70, 90, 99])
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    eps, x0 = diffusion.predict_eps_x0(network, x_t, t, labels=labels, guidance=3.0)
    assert network.calls == 1  # one call on the doubled batch
    outputs = [network(x_t, t.double(), labels), network(x_t, t.double(), torch.full_like(labels, 4))]
    conditional, unconditional = (diffusion.predict_eps_x0(lambda *_, out=out: out, x_t, t)[0] for out in outputs)
    assert torch.allclose(eps, unconditional + 3.0 * (conditional - unconditional), atol=1e-10)
    assert torch.allclose(x0, diffusion.predict_x0_from_eps(x_t, t, eps), atol=1e-8)


def test_a_network_that_ignores_labels_gives_the_unconditional_samples_at_any_w():
    diffusion = GaussianDiffusion(get_named_schedule("linear", 100))
    plain = gaussian_oracle(diffusion)

    class Blind:
        num_classes = 3

        def __call__(self, x, t, labels):
            return plain(x, t)

    x_T = start(300, 2)
    reference = draw("ddim", Blind(), diffusion, x_T, steps=10).images
    for w in (0.0, 0.5, 3.0, 7.5):
        guided = draw("ddim", Blind(), diffusion, x_T, steps=10, labels=torch.arange(300) % 3, guidance=w).images
        assert torch.equal(guided, reference)


def test_guided_ddim_moves_the_mean_toward_the_requested_class_as_w_grows():
    diffusion, oracle = make(1000)  # T = 1000: x_T is pure noise, as the start noise assumes
    x_T = start()
    labels = torch.ones(len(x_T), dtype=torch.long)  # class 1: mu = 1.5; the mixture's mean is 0.25
    means = {}
    for w in (0.0, 0.5, 1.0, 2.0, 3.0):
        out = draw("ddim", oracle, diffusion, x_T, steps=200, labels=labels, guidance=w).images
        means[w] = float(out.mean())
    assert means[0.0] == pytest.approx(sum(MEANS) / 2, abs=0.05)  # w = 0: the mixture (closed form)
    assert means[1.0] == pytest.approx(MEANS[1], abs=0.02)  # w = 1: the exact conditional (closed form)
    assert list(means.values()) == sorted(means.values())  # monotone in w
    assert means[3.0] > MEANS[1] + 0.01  # guidance beyond 1 overshoots the class mean, away from the other class


def test_every_sampler_takes_labels_and_guidance_doubles_the_batch():
    diffusion, oracle = make(50)
    labels = torch.tensor([0, 1, 0, 1, 1])
    for sampler, setting in (("ddpm", {}), ("ddim", {"steps": 3}), ("dpm_solver", {"steps": 3})):
        oracle.batch_sizes.clear()
        out = draw(sampler, oracle, diffusion, torch.randn(5, 1, 1, 1), torch.Generator().manual_seed(0),
                   labels=labels, guidance=2.0, **setting).images
        assert out.shape == (5, 1, 1, 1) and set(oracle.batch_sizes) == {10}  # one call on the doubled batch


def test_bad_labels_get_clear_errors():
    diffusion, oracle = make(50)
    with pytest.raises(ValueError, match=r"labels must lie in 0..1"):
        Denoiser(oracle, diffusion, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        Denoiser(oracle, diffusion, torch.tensor([0, 1]))(torch.zeros(3, 1, 1, 1), 5)
    with pytest.raises(ValueError, match="integer species indices"):
        Denoiser(oracle, diffusion, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="network is unconditional"):
        Denoiser(gaussian_oracle(diffusion), diffusion, torch.tensor([0, 1]))


@pytest.mark.parametrize("network", [
    lambda k: SmallUNet(widths=(8, 16), block_depth=1, num_classes=k),
    lambda k: SmallUNet(widths=(8, 16), block_depth=1, attention=True, num_classes=k),
    lambda k: BaselineUNet(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, image_size=16, num_classes=k),
])
def test_conditional_networks_are_the_unconditional_ones_plus_a_class_embedding(network):
    plain, conditional = network(None), network(5)
    plain_keys, conditional_keys = set(plain.state_dict()), set(conditional.state_dict())
    assert plain_keys < conditional_keys  # every unconditional weight keeps its name
    extra = conditional_keys - plain_keys
    assert all(key.startswith("class_embedding") or ".film." in key for key in extra)
    assert count_parameters(conditional) > count_parameters(plain)
    torch.manual_seed(0)
    x, cond = torch.randn(4, 3, 16, 16), torch.rand(4)
    conditional.eval()
    # zero-initialised FiLM / output: at the start the labels change nothing in the SmallUNet, and
    # for every network the "no label" index is what labels=None means
    assert torch.equal(conditional(x, cond), conditional(x, cond, torch.full((4,), 5)))
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, cond, torch.zeros(4, dtype=torch.long))


def test_label_dropout_share_is_within_3_sigma_of_the_setting():
    config = get_profile("smoke")
    config.model.num_classes, config.train.label_dropout, config.train.batch_size = 4, 0.1, 512
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    species = torch.arange(64) % 4
    trainer = Trainer(SmallUNet(widths=(8, 16), block_depth=1, num_classes=4), build_diffusion(config.diffusion),
                      images, torch.full((3,), 0.5), torch.full((3,), 0.25), config, device="cpu", progress=False,
                      labels=species)
    draws = 40
    dropped, kept_right = 0, True
    for _ in range(draws):
        _, _, _, labels = trainer.data.draw(trainer.diffusion)
        dropped += int((labels == 4).sum())
        kept_right &= bool(((labels >= 0) & (labels <= 4)).all())
    total = draws * 512
    sigma = math.sqrt(total * 0.1 * 0.9)
    assert abs(dropped - 0.1 * total) < 3 * sigma and kept_right
    with pytest.raises(ValueError, match="needs one species label per training image"):
        Trainer(SmallUNet(widths=(8, 16), block_depth=1, num_classes=4), build_diffusion(config.diffusion), images,
                torch.full((3,), 0.5), torch.full((3,), 0.25), config, device="cpu", progress=False)

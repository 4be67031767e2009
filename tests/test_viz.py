"""The explorers, headless: a slider move shows exactly the precomputed frame for that t, and that
frame is the image the forward process (or the stored trajectory) says it should be."""

import io
import os
import subprocess
import sys
from pathlib import Path

import ipywidgets
import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.math.schedules import get_named_schedule
from ddpm_lib.show.viz import BackwardExplorer, ForwardExplorer
from ddpm_lib.transforms import to_uint8_hwc

from conftest import draw, gaussian_oracle

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
IPYWIDGETS7 = Path(__file__).resolve().parents[1] / ".cache" / "ipywidgets7"


def decode(png: bytes, scale: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))[::scale, ::scale]


@pytest.fixture(scope="module")
def forward():
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    schedules = {"linear": get_named_schedule("linear", 100), "cosine": get_named_schedule("cosine", 100)}
    return images, schedules, ForwardExplorer(images, schedules, MEAN, STD, stride=5, seed=11, scale=2)


@pytest.mark.parametrize("t", [0, 5, 50, 100])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_forward_slider_shows_q_sample_at_t(forward, name, t):
    images, schedules, explorer = forward
    explorer.schedule.value, explorer.image_choice.value = name, 1
    explorer.slider.value = t
    index = explorer.frame_index(t)
    assert explorer.image.value == explorer.frames[(name, 1)][index]  # the precomputed bytes
    assert explorer.curve.value == explorer.plot_frames[index]
    # ...and those bytes are x_t of the forward process (independent of the explorer's code)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    x0 = images[1:2].double()
    if t == 0:
        expected = x0
    else:
        diffusion = GaussianDiffusion(schedules[name])
        expected = diffusion.q_sample(x0, torch.tensor([t - 1]), noise[1:2])
    pixels = to_uint8_hwc(expected, MEAN, STD)[0].astype(int)
    assert np.abs(decode(explorer.image.value, 2).astype(int) - pixels).max() <= 1
    assert f"t = {t}:" in explorer.label.value


def test_forward_frames_change_with_the_slider_and_the_schedule(forward):
    _, _, explorer = forward
    explorer.schedule.value, explorer.image_choice.value, explorer.slider.value = "linear", 0, 50
    linear = explorer.image.value
    explorer.schedule.value = "cosine"
    assert explorer.image.value != linear
    explorer.slider.value = 55
    assert explorer.image.value == explorer.frames[("cosine", 0)][11]


def test_backward_slider_shows_the_stored_trajectory():
    diffusion = GaussianDiffusion(get_named_schedule("linear", 100))
    oracle = gaussian_oracle(diffusion, mu=0.2, sigma=0.5)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    trajectories = {
        "DDPM": draw("ddpm", oracle, diffusion, noise, torch.Generator().manual_seed(1),
                     trajectory_every=10).trajectory,
        "DDIM-10": draw("ddim", oracle, diffusion, noise, steps=10, trajectory_every=1).trajectory,
    }
    explorer = BackwardExplorer(trajectories, MEAN, STD, sample=1, scale=1)
    for name in ("DDPM", "DDIM-10"):
        explorer.sampler.value = name
        assert explorer.slider.max == len(trajectories[name].timesteps) - 1
        for step in (0, 4, explorer.slider.max):
            explorer.slider.value = step
            expected_x_t = to_uint8_hwc(trajectories[name].x_t[step, 1:2], MEAN, STD)[0]
            expected_x0 = to_uint8_hwc(trajectories[name].pred_x0[step, 1:2], MEAN, STD)[0]
            assert np.array_equal(decode(explorer.x_t.value, 1), expected_x_t)
            assert np.array_equal(decode(explorer.x0.value, 1), expected_x0)
            assert f"t = {trajectories[name].timesteps[step]}" in explorer.label.value


def test_the_installed_ipywidgets_is_a_supported_major():
    assert ipywidgets.__version__.split(".")[0] in ("7", "8")


def test_the_guidance_explorer_shows_the_precomputed_samples_for_each_species_and_w():
    from ddpm_lib.show.viz import GuidanceExplorer

    rng = np.random.default_rng(0)
    frames = {(s, w): rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8) for s in (0, 2) for w in (0.0, 1.0, 3.0)}
    explorer = GuidanceExplorer(frames, ["Azure_Finch", "Crimson_Warbler", "Golden_Tanager"], scale=2)
    assert [option[0] for option in explorer.choice.options] == ["Azure Finch", "Golden Tanager"]
    for species, w in ((2, 3.0), (0, 1.0), (2, 0.0)):
        explorer.choice.value, explorer.slider.value = species, f"{w:g}"
        shown = decode(explorer.image.value, 2)
        assert np.array_equal(shown, np.concatenate(list(frames[(species, w)]), axis=1))
    assert "unconditional" in explorer.label.value and "Golden Tanager" in explorer.label.value


@pytest.mark.skipif(not IPYWIDGETS7.is_dir(), reason="ipywidgets 7.7.1 not installed in .cache/ipywidgets7 "
                    "(make test installs it)")
@pytest.mark.skipif(os.environ.get("DDPM_INNER_IPYWIDGETS") == "1", reason="already the inner run")
def test_the_same_tests_pass_with_colabs_ipywidgets_7():
    env = {**os.environ, "PYTHONPATH": f"{IPYWIDGETS7}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "DDPM_INNER_IPYWIDGETS": "1"}
    version = subprocess.run([sys.executable, "-c", "import ipywidgets; print(ipywidgets.__version__)"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "7.7.1"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_sdedit_slider_shows_the_forward_noising_and_the_denoising_from_t():
    """Each frame: x_t of the forward process (closed form, written here) and the sampler started at t
    from exactly that x_t; small t keeps the image, t = T forgets it."""
    from ddpm_lib.math.sampling import Denoiser, SamplerSpec, sample
    from ddpm_lib.show.viz import SDEditExplorer

    diffusion = GaussianDiffusion(get_named_schedule("cosine", 100))
    denoiser = Denoiser(gaussian_oracle(diffusion, mu=0.2, sigma=0.5), diffusion)
    images = 0.2 + 0.5 * torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    calls = []

    def denoise_from(x_t, step):
        calls.append(step)
        return sample(denoiser, diffusion, x_t, SamplerSpec("ddim", 10), start_step=step).images

    explorer = SDEditExplorer(images, diffusion.schedule.alphas_cumprod, denoise_from, MEAN, STD, stride=20, seed=7,
                              sampler="DDIM-10", scale=2)
    assert explorer.times == [0, 20, 40, 60, 80, 100] and calls == [19, 39, 59, 79, 99]  # one call per frame, t - 1
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    explorer.image_choice.value = 2
    for t in (0, 40, 100):
        explorer.slider.value = t
        abar = 1.0 if t == 0 else float(diffusion.schedule.alphas_cumprod[t - 1])
        x_t = abar**0.5 * images[2:3].double() + (1 - abar) ** 0.5 * eps[2:3]
        shown_x_t, shown_result = decode(explorer.x_t.value, 2).astype(int), decode(explorer.result.value, 2)
        assert np.abs(shown_x_t - to_uint8_hwc(x_t, MEAN, STD)[0].astype(int)).max() <= 1
        expected = images[2:3] if t == 0 else sample(denoiser, diffusion, x_t.float(), SamplerSpec("ddim", 10),
                                                     start_step=t - 1).images
        assert np.array_equal(shown_result, to_uint8_hwc(expected, MEAN, STD)[0])
        assert np.array_equal(decode(explorer.original.value, 2), to_uint8_hwc(images[2:3], MEAN, STD)[0])
        assert f"t = {t}" in explorer.label.value
    change = [np.abs(explorer.edited[i].astype(int) - explorer.originals.astype(int)).mean() for i in range(6)]
    assert change[0] == 0 and change[1] < change[-1]  # the edit departs from the image as t grows
    figure = explorer.figure([0, 40, 100], indices=[0, 2])
    assert len([ax for ax in figure.axes if ax.images]) == 12  # two images x (x_t, result) x three times

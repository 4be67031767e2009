"""`python -m ddpm_lib sample`: the profile's sampler setting by default, per-image seeds, the options given."""

import numpy as np
import pytest

from ddpm_lib.__main__ import main, sampler_spec
from ddpm_lib.config import get_profile


@pytest.fixture
def trained(tmp_path, monkeypatch):
    for name, folder in (("RUNS_DIR", "runs"), ("RAW_DIR", "raw"), ("PROCESSED_DIR", "processed")):
        monkeypatch.setattr(f"ddpm_lib.paths.{name}", tmp_path / folder)
    assert main(["train", "--profile", "smoke", "--steps", "3", "--run-name", "tiny"]) == 0
    return tmp_path / "runs" / "smoke" / "tiny" / "samples"


def test_without_options_a_command_uses_the_profiles_sampler_setting():
    import argparse

    none_given = argparse.Namespace(sampler=None, steps=None, eta=None, guidance=None)
    for profile in ("smoke", "demo", "colab", "full"):
        assert sampler_spec(get_profile(profile).sample, none_given) == get_profile(profile).sample
    demo = get_profile("demo").sample
    assert demo.name == "DPM-Solver++-20 w=3"  # sample --profile demo draws with DPM-Solver++-20
    other = argparse.Namespace(sampler="ddpm", steps=None, eta=None, guidance=None)
    assert sampler_spec(demo, other).name == "DDPM w=3"  # another sampler keeps only what it takes
    eta = argparse.Namespace(sampler="ddim", steps=50, eta=1.0, guidance=None)
    assert sampler_spec(demo, eta).name == "DDIM-50 eta 1 w=3"


def test_image_i_is_the_same_whatever_the_batch_size_or_the_number_of_images(trained, capsys):
    assert main(["sample", "--profile", "smoke", "--run-name", "tiny", "-n", "4", "--batch-size", "4",
                 "--eta", "1", "--seed", "5"]) == 0
    assert main(["sample", "--profile", "smoke", "--run-name", "tiny", "-n", "8", "--batch-size", "3",
                 "--eta", "1", "--seed", "5"]) == 0
    assert "with DDIM-5 eta 1 in" in capsys.readouterr().out  # the profile's DDIM-5, with the eta given
    four = np.load(trained / "DDIM-5_eta_1_n4_seed5.npz")["images"]
    eight = np.load(trained / "DDIM-5_eta_1_n8_seed5.npz")["images"]
    assert four.shape == (4, 32, 32, 3) and four.dtype == np.uint8
    assert np.array_equal(four, eight[:4])
    assert main(["sample", "--profile", "smoke", "--run-name", "tiny", "-n", "4", "--sampler", "ddpm",
                 "--batch-size", "1", "--seed", "5"]) == 0
    assert main(["sample", "--profile", "smoke", "--run-name", "tiny", "-n", "2", "--sampler", "ddpm",
                 "--batch-size", "2", "--seed", "5"]) == 0
    assert np.array_equal(np.load(trained / "DDPM-100_n4_seed5.npz")["images"][:2],
                          np.load(trained / "DDPM-100_n2_seed5.npz")["images"])

"""Profiles, validation of config values, JSON round trips."""

import pytest

from ddpm_lib.build import build_diffusion, build_model
from ddpm_lib.config import MODEL_STEPS, Config, DiffusionConfig, TrainConfig, get_profile
from ddpm_lib.models import count_parameters


def test_full_profile_is_the_studys_table_1():
    config = get_profile("full")
    assert (config.train.batch_size, config.train.lr) == (32, 3e-4)
    d = config.diffusion
    assert (d.beta_start, d.beta_end, d.num_steps, d.cosine_s) == (1e-4, 0.02, 1000, 0.008)
    assert config.sample.steps == 5 and config.data.image_size == 64


def test_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DDPM_PROFILE", "smoke")
    assert get_profile().profile == "smoke"
    monkeypatch.setenv("DDPM_PROFILE", "fast")
    with pytest.raises(ValueError, match="unknown profile 'fast'.*smoke, demo, colab, full"):
        get_profile()


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match="diffusion.schedule='cosin'"):
        DiffusionConfig(schedule="cosin")
    with pytest.raises(ValueError, match="train.batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown key.*'lr_rate'.*'train'"):
        Config.from_dict({"train": {"lr_rate": 1.0}})


@pytest.mark.parametrize("profile", ["smoke", "demo", "colab", "full"])
def test_json_round_trip_and_build(tmp_path, profile):
    config = get_profile(profile)
    config.to_json(tmp_path / "config.json")
    again = Config.from_json(tmp_path / "config.json")
    assert again == config
    model = build_model(again.model, again.data.image_size)
    assert count_parameters(model) > 0
    assert build_diffusion(again.diffusion).num_steps == again.diffusion.num_steps


def test_a_network_gets_its_own_training_length_only_where_the_profile_sets_one():
    colab_small = get_profile("colab", model="small_unet")
    colab_big = get_profile("colab", model="baseline_unet")
    assert colab_small.model.name == "small_unet" and colab_small.train.steps == get_profile("colab").train.steps
    assert colab_big.model.name == "baseline_unet" and colab_big.train.steps == MODEL_STEPS["colab"]["baseline_unet"]
    assert colab_big.train.steps < colab_small.train.steps
    full_big = get_profile("full", model="baseline_unet")
    assert full_big.train.epochs == get_profile("full").train.epochs == 200  # the study's length, untouched
    with pytest.raises(ValueError, match="model='resnet'"):
        get_profile("demo", model="resnet")

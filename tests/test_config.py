"""Profiles, validation of config values, JSON round trips."""

import json

import pytest

from ddpm_lib.build import build_diffusion, build_model
from ddpm_lib.config import Config, DiffusionConfig, TrainConfig, get_profile
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


def test_rate_thresholds_are_probabilities_and_the_headline_is_one_of_them():
    config = get_profile("demo")
    assert config.evaluation.headline_threshold in config.evaluation.thresholds
    changed = config.override({"evaluation.thresholds": [0.5, 0.95], "evaluation.headline_threshold": 0.95})
    assert changed.evaluation.thresholds == (0.5, 0.95)
    with pytest.raises(ValueError, match="evaluation.headline_threshold=0.7"):
        config.override({"evaluation.headline_threshold": 0.7})
    with pytest.raises(ValueError, match="evaluation.thresholds"):
        config.override({"evaluation.thresholds": [0.9, 0.5]})
    with pytest.raises(ValueError, match="evaluation.inception='never'"):
        config.override({"evaluation.inception": "never"})


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
    assert colab_big.model.name == "baseline_unet" and colab_big.train.steps == 4_000
    assert colab_big.train.steps < colab_small.train.steps
    assert get_profile("demo", model="baseline_unet").train.steps == 40
    full_big = get_profile("full", model="baseline_unet")
    assert full_big.train.epochs == get_profile("full").train.epochs == 200  # the study's length, untouched
    with pytest.raises(ValueError, match="model='resnet'"):
        get_profile("demo", model="resnet")


def test_one_override_path_checks_what_it_changes():
    config = get_profile("demo")
    changed = config.override({"train.lr": 1e-3, "model.attention": True, "sample": "DDIM-50 eta 1",
                                "sample.guidance": 2, "evaluation.samplers": ["DDIM-5", "DPM-Solver++-10"]})
    assert changed.train.lr == 1e-3 and changed.model.attention and config.train.lr == 2e-3  # a copy
    assert changed.sample.name == "DDIM-50 eta 1 w=2"
    assert [s.name for s in changed.evaluation.samplers] == ["DDIM-5", "DPM-Solver++-10"]
    with pytest.raises(ValueError, match="bad override 'train.learning_rate': section 'train' has batch_size, lr"):
        config.override({"train.learning_rate": 1e-3})
    with pytest.raises(ValueError, match="bad override 'optim.lr': the sections are data, model"):
        config.override({"optim.lr": 1e-3})
    with pytest.raises(ValueError, match="train.batch_size=0"):
        config.override({"train.batch_size": 0})
    with pytest.raises(ValueError, match="steps=None: DPM-Solver"):
        config.override({"sample.steps": None})


def test_the_profile_tables_are_in_the_config_a_run_saves(tmp_path):
    config = get_profile("demo")
    config.to_json(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["evaluation"]["classifier_steps"] == config.evaluation.classifier_steps
    assert [(s["sampler"], s["steps"], s["eta"]) for s in saved["evaluation"]["samplers"]] == [
        ("ddim", 20, 0.0), ("dpm_solver", 20, 0.0), ("ddim", 50, 0.0), ("ddim", 50, 1.0)]
    assert saved["evaluation"]["first_sampler_only"] == ["baseline_unet", "small_attention", "small_other_schedule"]
    assert Config.from_dict(saved).evaluation == config.evaluation  # the nested tables come back as they were
    assert saved["sample"] == {"sampler": "dpm_solver", "steps": 20, "eta": 0.0, "spacing": "trailing", "order": 2,
                               "guidance": 3.0, "variance": "posterior"}
    assert saved["train"]["comparison_steps"] == {"attention": 200, "other_schedule": 600}


def test_a_config_saved_before_the_sampler_spec_still_loads():
    old = get_profile("demo").to_dict()
    old["sample"] = {"sampler": "dpmpp", "steps": 20, "eta": 0.0, "guidance": 3.0, "num_samples": 36}
    del old["evaluation"]
    assert Config.from_dict(old).sample.name == "DPM-Solver++-20 w=3"


def test_the_short_side_runs_are_scored_with_the_first_setting_only_under_demo():
    """``evaluation.first_sampler_only`` names networks or roles in the study; ``study_samplers`` applies
    it to the study's runs by name, so the main SmallUNet gets every setting and its side runs one."""
    from types import SimpleNamespace

    from ddpm_lib.config import EvaluationConfig, run_name
    from ddpm_lib.experiment import study_configs, study_samplers

    settings = get_profile("demo").evaluation
    runs = {run_name(c): SimpleNamespace(config=c) for c in study_configs("demo").values()}
    specs = study_samplers(runs, settings, "demo")
    by_role = {role: specs[run_name(c)] for role, c in study_configs("demo").items()}
    assert by_role["small"] == settings.samplers and len(settings.samplers) > 1
    assert by_role["small_attention"] == by_role["small_other_schedule"] == by_role["baseline"] == settings.samplers[:1]
    assert get_profile("colab").evaluation.samplers_for("small_unet", "small_attention") == \
        get_profile("colab").evaluation.samplers  # a profile that does not ask for it scores all
    with pytest.raises(ValueError, match="first_sampler_only"):
        EvaluationConfig(first_sampler_only=("attention",))

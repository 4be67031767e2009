"""A run is reused, resumed, extended or scored only as what it is: its data, network, diffusion and
recipe (its manifest), with a learning rate that never jumps where the run does not say so."""

import json
import shutil

import numpy as np
import pytest
import torch

from ddpm_lib.__main__ import main
from ddpm_lib.config import get_profile, run_name
from ddpm_lib.data.download import extract
from ddpm_lib.data.synthetic import make_synthetic_archive
from ddpm_lib.engine import checkpoints
from ddpm_lib.engine.train import RunExtensionError, learning_rate, planned_segments


@pytest.fixture
def runs(tmp_path, monkeypatch):
    for name, folder in (("RUNS_DIR", "runs"), ("RAW_DIR", "raw"), ("PROCESSED_DIR", "processed")):
        monkeypatch.setattr(f"ddpm_lib.paths.{name}", tmp_path / folder)
    return tmp_path / "runs" / "smoke"


def last(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_finished_run_is_not_reused_or_scored_on_other_data(runs, tmp_path, monkeypatch, capsys):
    import ddpm_lib.config as config_module

    original = config_module._profile
    monkeypatch.setattr(config_module, "_profile",  # the smoke profile's sizes, on "real" data given by path
                        lambda name, model: original("smoke", model).override({"data.source": "cub"}))
    folder = extract(make_synthetic_archive(tmp_path / "a", num_images=24, num_classes=3, seed=1), tmp_path / "mine")
    assert main(["prepare", "--data-dir", str(folder), "--workers", "1"]) == 0
    assert main(["train", "--steps", "3", "--run-name", "birds"]) == 0
    shutil.rmtree(folder)  # the user's folder now holds other birds, given again on purpose
    shutil.copytree(extract(make_synthetic_archive(tmp_path / "b", num_images=24, num_classes=3, seed=2),
                            tmp_path / "other"), folder)
    assert main(["prepare", "--data-dir", str(folder), "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["train", "--steps", "3", "--run-name", "birds"]) == 2
    error = last(capsys)
    assert "the run in" in error and "inputs.data: " in error and "--retrain" in error
    assert main(["evaluate", "--run-name", "birds", "--steps", "2", "--num-samples", "4"]) == 2
    assert "learned from data" in last(capsys) and not (runs / "birds" / "evaluation").exists()


def test_another_recipe_gets_its_own_run_and_a_named_clash_is_refused(runs, capsys):
    assert main(["train", "--profile", "smoke", "--steps", "3"]) == 0
    plain = run_name(get_profile("smoke"))
    assert main(["train", "--profile", "smoke", "--steps", "3", "--set", "train.ema_decay=0.99"]) == 0
    other = run_name(get_profile("smoke").override({"train.ema_decay": 0.99}))
    assert other.startswith(plain + "-") and (runs / other / "checkpoints").is_dir()  # trained, not "reused"
    capsys.readouterr()
    assert main(["train", "--profile", "smoke", "--steps", "3", "--set", "train.ema_decay=0.99", "--run-name",
                 plain]) == 2
    assert "settings.train.ema_decay: 0.999 found, 0.99 asked for" in last(capsys)


def test_the_learning_rate_never_jumps_where_the_run_does_not_say_so(runs, capsys):
    cosine = ["--profile", "smoke", "--run-name", "decay", "--set", "train.lr_schedule='cosine'", "--set",
              "train.log_every=1", "--set", "train.warmup_steps=2"]
    assert main(["train", *cosine, "--steps", "10"]) == 0
    manifest = json.loads((runs / "decay" / "manifest.json").read_text())
    capsys.readouterr()
    assert main(["train", *cosine, "--steps", "16"]) == 2  # longer with a decaying rate: only with --extend
    assert "planned for 10 steps with a cosine learning-rate decay" in last(capsys)
    assert json.loads((runs / "decay" / "manifest.json").read_text()) == manifest  # nothing written
    assert main(["train", *cosine, "--steps", "16", "--extend"]) == 0
    state, _ = checkpoints.load_latest(runs / "decay" / "checkpoints")
    assert state["lr_segments"] == [[0, 10], [10, 16]]  # the warm restart, recorded
    assert json.loads((runs / "decay" / "manifest.json").read_text())["lr_segments"] == [[0, 10], [10, 16]]
    rates = [row["lr"] for row in state["history"]]
    jumps = [i + 1 for i, (a, b) in enumerate(zip(rates, rates[1:])) if b > a + 1e-12]
    assert jumps == [1, 10, 11]  # up only in the warm-ups (2 steps): the start's and the declared restart's
    assert rates[9] < 0.05 * rates[2]  # the first segment decayed to (almost) nothing as planned


def test_planned_segments_and_the_rate_at_every_step():
    class Settings:
        lr, warmup_steps, lr_schedule = 1.0, 0, "cosine"

    assert planned_segments(None, 100, "cosine", False, "x") == [[0, 100]]
    assert planned_segments([[0, 100]], 60, "cosine", False, "x") == [[0, 100]]  # a shorter ask keeps the plan
    assert planned_segments([[0, 100]], 150, "constant", False, "x") == [[0, 150]]
    with pytest.raises(RunExtensionError, match="Pass --extend"):
        planned_segments([[0, 100]], 150, "cosine", False, "x")
    rates = [learning_rate(Settings, [[0, 100]], step) for step in range(100)]
    assert rates[0] == 1.0 and rates == sorted(rates, reverse=True) and rates[-1] < 1e-3
    assert learning_rate(Settings, [[0, 100], [100, 150]], 100) == 1.0  # the restart starts from the top


def test_retrain_sets_aside_everything_of_the_old_run_and_starts_a_new_wandb_id(runs):
    assert main(["train", "--profile", "smoke", "--steps", "4", "--run-name", "mine"]) == 0
    old, _ = checkpoints.load_latest(runs / "mine" / "checkpoints")
    (runs / "mine" / "evaluation").mkdir()
    (runs / "mine" / "evaluation" / "results.jsonl").write_text('{"row": "of the first training"}\n')
    assert main(["train", "--profile", "smoke", "--steps", "4", "--run-name", "mine", "--retrain"]) == 0
    aside = next((runs / "mine" / "set-aside").iterdir())
    assert {p.name for p in aside.iterdir()} >= {"checkpoints", "samples", "metrics.csv", "config.json",
                                                  "manifest.json", "evaluation"}
    assert not (runs / "mine" / "evaluation").exists()  # the new training's results start empty
    assert sorted(p.name for p in (runs / "mine" / "samples").iterdir()) == ["step_00000000.png", "step_00000004.png"]
    new, _ = checkpoints.load_latest(runs / "mine" / "checkpoints")
    assert new["wandb_id"] != old["wandb_id"]


def test_resume_none_on_a_finished_run_trains_afresh(runs):
    assert main(["train", "--profile", "smoke", "--steps", "4", "--run-name", "mine"]) == 0
    first = torch.load(checkpoints.list_checkpoints(runs / "mine" / "checkpoints")[-1], weights_only=False)
    assert main(["train", "--profile", "smoke", "--steps", "4", "--run-name", "mine", "--resume", "none"]) == 0
    assert list((runs / "mine" / "set-aside").glob("*/checkpoints/ckpt_00000004.pt"))
    again = torch.load(checkpoints.list_checkpoints(runs / "mine" / "checkpoints")[-1], weights_only=False)
    assert again["wandb_id"] != first["wandb_id"]


def test_data_locations_where_they_mean_nothing_are_refused(runs, tmp_path, capsys):
    assert main(["train", "--profile", "smoke", "--steps", "2", "--data-dir", str(tmp_path / "nope.tgz")]) == 2
    assert "profile 'smoke' uses the synthetic replica" in last(capsys) and not runs.exists()
    with pytest.raises(SystemExit) as exited:  # sample needs no data: the option does not exist there
        main(["sample", "--profile", "smoke", "--data-dir", str(tmp_path)])
    assert exited.value.code == 2


def test_a_fine_tune_and_a_run_from_scratch_are_two_runs():
    scratch = get_profile("demo").override({"model.num_classes": 10})
    tuned = scratch.override({"train.init_from": "small_unet_cosine_v_mse"})
    assert run_name(scratch) != run_name(tuned) and run_name(tuned).startswith(run_name(scratch) + "-")
    assert np.all([run_name(get_profile(p)) == run_name(get_profile(p).override({"train.steps": 7}))
                   for p in ("smoke", "demo")])  # the length is not part of the name

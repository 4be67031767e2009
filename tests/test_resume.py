"""Nothing stale, nothing mixed, nothing lost: resumes in another mode or with another config,
checkpoints that must survive pruning, durable writes, W&B ids, fp16 overflows (all on the CPU)."""

import errno
import json

import pytest
import torch

from ddpm_lib.__main__ import main
from ddpm_lib.build import build_diffusion
from ddpm_lib.config import get_profile, run_manifest, run_name
from ddpm_lib.data.synthetic import render_dataset
from ddpm_lib.engine import checkpoints
from ddpm_lib.engine.train import RunMismatchError, Trainer, TrainingDivergedError
from ddpm_lib.models import SmallUNet


@pytest.fixture(scope="module")
def images():
    pixels, _ = render_dataset(32, 4, image_size=16, seed=0)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def trainer(images, folder, steps=20, resume="latest", **train):
    config = get_profile("smoke")
    config.train.steps, config.train.log_every, config.train.checkpoint_every = steps, 5, 10
    config.train.sample_every = 0
    for key, value in train.items():
        setattr(config.train, key, value)
    torch.manual_seed(0)
    return Trainer(SmallUNet(widths=(8, 16), block_depth=1), build_diffusion(config.diffusion), images,
                   torch.full((3,), 0.5), torch.full((3,), 0.25), config, run_dir=folder, device="cpu",
                   resume=resume, progress=False)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    for name, folder in (("RUNS_DIR", "runs"), ("RAW_DIR", "raw"), ("PROCESSED_DIR", "processed")):
        monkeypatch.setattr(f"ddpm_lib.paths.{name}", tmp_path / folder)
    return tmp_path / "runs" / "smoke"


# ----- the run's identity (one rule for when a run may be resumed) ---------------------------------
def test_the_default_run_name_tells_networks_and_targets_apart():
    plain = get_profile("smoke", model="small_unet")
    attention = get_profile("smoke", model="small_unet")
    attention.model.attention = True
    cosine_v = get_profile("smoke", model="small_unet")
    cosine_v.diffusion.schedule, cosine_v.diffusion.prediction = "cosine", "v"
    conditional = get_profile("smoke", model="small_unet")
    conditional.model.num_classes = 4
    names = {run_name(c) for c in (plain, attention, cosine_v, conditional, get_profile("smoke", "baseline_unet"))}
    assert len(names) == 5
    assert run_name(plain) == "small_unet_linear_eps_mse" and run_name(cosine_v) == "small_unet_cosine_v_mse"


def test_an_attention_run_after_the_plain_one_gets_its_own_folder_and_a_clash_is_named(runs, capsys):
    assert main(["train", "--profile", "smoke", "--model", "small_unet", "--steps", "4"]) == 0
    assert main(["train", "--profile", "smoke", "--model", "small_unet", "--attention", "--steps", "4"]) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["small_unet_attention_linear_eps_mse",
                                                      "small_unet_linear_eps_mse"]
    capsys.readouterr()
    # the same folder asked to hold another network: refused, naming the differing key (no state-dict dump)
    code = main(["train", "--profile", "smoke", "--model", "small_unet", "--attention", "--steps", "4",
                 "--run-name", "small_unet_linear_eps_mse"])
    error = capsys.readouterr().err
    assert code == 2 and "settings.model.attention: False found, True asked for" in error
    assert "load_state_dict" not in error and len(error.splitlines()) == 1


def test_a_finished_linear_run_asked_for_with_cosine_is_refused_not_resumed(runs, capsys):
    assert main(["train", "--profile", "smoke", "--steps", "4", "--run-name", "mine"]) == 0
    saved = json.loads((runs / "mine" / "config.json").read_text())
    assert main(["train", "--profile", "smoke", "--steps", "4", "--run-name", "mine", "--schedule", "cosine"]) == 2
    assert "settings.diffusion.schedule: 'linear' found, 'cosine' asked for" in capsys.readouterr().err
    assert json.loads((runs / "mine" / "config.json").read_text()) == saved  # the run's record is untouched
    # a longer train.steps extends the run; --retrain replaces it (the old checkpoints are set aside)
    assert main(["train", "--profile", "smoke", "--steps", "6", "--run-name", "mine"]) == 0
    assert checkpoints.checkpoint_step(checkpoints.list_checkpoints(runs / "mine" / "checkpoints")[-1]) == 6
    assert main(["train", "--profile", "smoke", "--steps", "4", "--run-name", "mine", "--schedule", "cosine",
                 "--retrain"]) == 0
    state, _ = checkpoints.load_latest(runs / "mine" / "checkpoints")
    assert state["config"]["diffusion"]["schedule"] == "cosine" and state["step"] == 4
    assert list((runs / "mine" / "set-aside").glob("*/checkpoints/ckpt_00000006.pt"))  # the whole old run kept


def test_the_identity_holds_the_data_and_the_recipe_and_not_the_length_or_the_mode():
    a, b = get_profile("smoke"), get_profile("smoke")
    b.train.steps, b.train.log_every, b.train.precision = 99, 7, "fp32"
    b.train.cuda_graph, b.train.wandb = False, "offline"
    assert run_manifest(a, "data-1").identity == run_manifest(b, "data-1").identity  # length and mode may change
    assert run_manifest(a, "data-1").identity != run_manifest(a, "data-2").identity  # other data
    for key, value in (("lr", 5e-3), ("batch_size", 8), ("ema_decay", 0.9), ("label_dropout", 0.0),
                       ("init_from", "x"), ("grad_clip", 1.0), ("warmup_steps", 3), ("lr_schedule", "cosine")):
        c = get_profile("smoke")
        setattr(c.train, key, value)
        assert run_manifest(c, "data-1").identity != run_manifest(a, "data-1").identity, key
    b.data.crop = "square"
    assert run_manifest(b, "data-1").identity != run_manifest(a, "data-1").identity


def test_another_recipe_is_refused_on_resume_and_nothing_is_written(images, tmp_path):
    trainer(images, tmp_path, steps=10, lr=1e-3, weight_decay=1e-4).fit()
    saved = (tmp_path / "config.json").read_text(), (tmp_path / "manifest.json").read_text()
    for change in ({"lr": 5e-3}, {"weight_decay": 0.05}, {"batch_size": 8}):
        with pytest.raises(RunMismatchError, match=f"settings.train.{next(iter(change))}: "):
            trainer(images, tmp_path, steps=20, **{"lr": 1e-3, "weight_decay": 1e-4, **change})
    assert ((tmp_path / "config.json").read_text(), (tmp_path / "manifest.json").read_text()) == saved
    result = trainer(images, tmp_path, steps=20, lr=1e-3, weight_decay=1e-4).fit()  # the same recipe extends
    assert result.step == 20 and result.history[-1]["lr"] == pytest.approx(1e-3)


# ----- another mode on resume ----------------------------------------------------------------------
def test_a_checkpoint_saved_in_graph_mode_resumes_on_the_cpu(images, tmp_path):
    first = trainer(images, tmp_path, steps=10)
    first.fit()
    # make the checkpoint look like a CUDA-graph run's: capturable AdamW, lr as a tensor
    path = checkpoints.list_checkpoints(tmp_path / "checkpoints")[-1]
    state = torch.load(path, weights_only=False)
    for group in state["optimizer"]["param_groups"]:
        group["capturable"], group["lr"] = True, torch.tensor(group["lr"])
    for param_state in state["optimizer"]["state"].values():
        param_state["step"] = param_state["step"].float()
    torch.save(state, path)
    resumed = trainer(images, tmp_path, steps=15)
    assert all(not g["capturable"] and isinstance(g["lr"], float) for g in resumed.optimizer.param_groups)
    resumed.fit()  # "If capturable=True, params and state_steps must be on supported devices" before the fix
    assert resumed.step == 15


# ----- pruning and durable writes ------------------------------------------------------------------
def test_the_file_just_written_survives_pruning_when_newer_ones_are_unreadable(images, tmp_path):
    trainer(images, tmp_path, steps=30, keep_checkpoints=2).fit()
    folder = tmp_path / "checkpoints"
    for path in checkpoints.list_checkpoints(folder):  # 20 and 30 kept; both get truncated
        path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable"):
        restarted = trainer(images, tmp_path, steps=30, keep_checkpoints=2)
    assert restarted.step == 0
    restarted.fit()
    names = [p.name for p in checkpoints.list_checkpoints(folder)]
    assert names == ["ckpt_00000020.pt", "ckpt_00000030.pt"]  # the new run's own, readable
    assert checkpoints.load_latest(folder)[0]["step"] == 30
    assert len(list((folder / "set-aside").glob("*/ckpt_*.pt"))) == 2  # the unreadable tail kept aside


def test_a_fresh_start_moves_the_old_run_aside(images, tmp_path):
    trainer(images, tmp_path, steps=30).fit()
    fresh = trainer(images, tmp_path, steps=10, resume=None)
    assert checkpoints.list_checkpoints(tmp_path / "checkpoints") == []  # nothing of the old run is "latest"
    fresh.fit()
    assert checkpoints.load_latest(tmp_path / "checkpoints")[0]["step"] == 10


def test_a_failed_write_leaves_no_temporary_file_and_the_old_checkpoint(images, tmp_path, monkeypatch):
    run = trainer(images, tmp_path, steps=20)
    original, calls = torch.save, []

    def save(state, handle, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint hits a full disk half-way
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(state, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError, match="No space left"):
        run.fit()
    folder = tmp_path / "checkpoints"
    assert [p.name for p in folder.iterdir()] == ["ckpt_00000010.pt"]  # no .tmp left behind
    monkeypatch.setattr(torch, "save", original)
    assert checkpoints.load_latest(folder)[0]["step"] == 10


# ----- W&B ids -------------------------------------------------------------------------------------
def test_each_fresh_start_gets_a_new_wandb_id_and_a_resume_keeps_it(images, tmp_path):
    first = trainer(images, tmp_path, steps=10)
    first.fit()
    resumed = trainer(images, tmp_path, steps=20)
    assert resumed.wandb_id == first.wandb_id
    resumed.fit()
    retrained = trainer(images, tmp_path, steps=10, resume=None)
    assert retrained.wandb_id != first.wandb_id
    assert first.wandb_id.startswith("smoke-")


def test_wandb_offline_run_folder_uses_the_id(images, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = trainer(images, tmp_path, steps=5, wandb="auto")
    run.fit()
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{run.wandb_id}"))) == 1


# ----- fp16: an overflow is skipped, a persistent one stops the run ---------------------------------
def poison(run, bad_steps):
    original = run.diffusion.training_loss

    def poisoned(model, x0, *args, **kwargs):
        loss = original(model, x0, *args, **kwargs)
        return loss * float("inf") if run.step in bad_steps else loss

    run.diffusion.training_loss = poisoned


def test_one_fp16_overflow_is_skipped_without_moving_the_ema_or_the_warmup(images, tmp_path):
    run = trainer(images, tmp_path, steps=20, precision="fp16", warmup_steps=50)
    assert run.scaler is not None
    poison(run, {7})
    result = run.fit()  # an inf loss once: GradScaler skips that step, the run goes on
    assert result.step == 20 and run.applied_steps == 19 and run.ema.num_updates == 19
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(run.settings.lr * 19 / 50)
    assert sum(row["skipped_steps"] for row in result.history) == 1
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_a_persistent_non_finite_loss_stops_the_run(images, tmp_path):
    run = trainer(images, tmp_path, steps=40, precision="fp16")
    poison(run, set(range(12, 40)))
    with pytest.raises(TrainingDivergedError, match=r"stayed non-finite for 2\d steps in a row by step 35"):
        run.fit()
    state, _ = checkpoints.load_latest(tmp_path / "checkpoints")  # the skipped steps left the weights as they were
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_resume_in_a_foreign_run_folder_is_refused_by_the_trainer_too(images, tmp_path):
    trainer(images, tmp_path, steps=10).fit()
    config = get_profile("smoke")
    config.model.widths = (8, 24)
    with pytest.raises(RunMismatchError, match=r"settings.model.widths: \[8, 16, 24\] found, \[8, 24\] asked for"):
        Trainer(SmallUNet(widths=(8, 24), block_depth=1), build_diffusion(config.diffusion), images,
                torch.full((3,), 0.5), torch.full((3,), 0.25), config, run_dir=tmp_path, device="cpu",
                resume="latest", progress=False)

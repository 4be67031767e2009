"""Species-conditional runs from the command line: train, then sample a species by name or index."""

import json

import pytest

from ddpm_lib.__main__ import main
from ddpm_lib.engine import checkpoints
from ddpm_lib.experiment import species_index

NAMES = ["Azure_Finch", "Crimson_Warbler", "Golden_Tanager", "Slate_Wren"]


def test_species_are_found_by_index_or_name_and_unknown_names_list_close_ones():
    assert species_index(NAMES, 2) == 2 and species_index(NAMES, "3") == 3
    assert species_index(NAMES, "golden tanager") == 2 and species_index(NAMES, "Slate_Wren") == 3
    assert species_index(NAMES, "Warbler") == 1  # one partial match is enough
    with pytest.raises(ValueError, match="did you mean: Azure_Finch"):
        species_index(NAMES, "Azure Fench")
    with pytest.raises(ValueError, match="out of range: 0..3"):
        species_index(NAMES, 7)


def test_train_and_sample_a_conditional_run_by_species_name(tmp_path, monkeypatch, capsys):
    for name, folder in (("RUNS_DIR", "runs"), ("RAW_DIR", "raw"), ("PROCESSED_DIR", "processed")):
        monkeypatch.setattr(f"ddpm_lib.paths.{name}", tmp_path / folder)
    assert main(["train", "--profile", "smoke", "--num-classes", "4", "--steps", "4", "--no-compile"]) == 0
    run_dir = tmp_path / "runs" / "smoke" / "small_unet_linear_eps_mse_4species"
    state, _ = checkpoints.load_latest(run_dir / "checkpoints")
    assert state["config"]["train"]["compile"] is False and len(state["metadata"]["species_names"]) == 4
    name = state["metadata"]["species_names"][1]
    capsys.readouterr()
    assert main(["sample", "--profile", "smoke", "--num-classes", "4", "--species", name.replace("_", " "),
                 "--guidance", "3", "--num-samples", "4", "--steps", "2"]) == 0
    assert f"samples of {name}" in capsys.readouterr().out
    assert list((run_dir / "samples").glob("DDIM-2_w3_species1_n4_seed0.npz"))
    assert main(["sample", "--profile", "smoke", "--num-classes", "4", "--species", "Nonesuch", "--steps", "2"]) == 2
    assert "unknown species 'Nonesuch'" in capsys.readouterr().err
    assert main(["train", "--profile", "smoke", "--steps", "2"]) == 0
    assert main(["sample", "--profile", "smoke", "--species", "0", "--steps", "2"]) == 2
    assert "needs a conditional run" in capsys.readouterr().err
    assert main(["train", "--profile", "smoke", "--num-classes", "3", "--steps", "2"]) == 2  # the data have 4
    assert "model.num_classes=3, but the data have 4 species" in capsys.readouterr().err
    json.dumps(state["config"])  # the config a run keeps is plain JSON

"""The one rule for identities, reuse, locks and moving aside (ddpm_lib/identity.py)."""

import multiprocessing
import time

import pytest

from ddpm_lib import identity
from ddpm_lib.identity import IdentityMismatch, Manifest, manifest, require_same, reuse_differences


def test_an_identity_is_what_made_the_artefact_and_nothing_else():
    a = manifest("run", {"data": "abc"}, {"train": {"lr": 1e-3, "batch_size": 32}})
    same = Manifest.from_dict({**a.to_dict(), "identity": "ignored", "extra": 1})
    assert a.identity == same.identity and len(a.identity) == 16
    assert manifest("run", {"data": "abd"}, a.settings).identity != a.identity  # another input
    assert manifest("run", a.inputs, {"train": {"lr": 2e-3, "batch_size": 32}}).identity != a.identity  # a setting
    older = Manifest("run", a.inputs, a.settings, a.version - 1)
    assert older.identity != a.identity  # another code version


def test_differences_name_every_entry_with_both_values():
    found = manifest("run", {"data": "abc"}, {"train": {"lr": 1e-3, "ema_decay": 0.995}})
    wanted = manifest("run", {"data": "xyz"}, {"train": {"lr": 1e-3, "ema_decay": 0.9975}})
    assert reuse_differences(found, wanted) == ["inputs.data: 'abc' found, 'xyz' asked for",
                                                "settings.train.ema_decay: 0.995 found, 0.9975 asked for"]
    assert reuse_differences(found.to_dict(), found) == []
    assert "made before identities were recorded" in reuse_differences(None, wanted)[0]
    with pytest.raises(IdentityMismatch, match=r"the run .*train.ema_decay: 0.995 found, 0.9975 asked for. Retrain"):
        require_same(found, wanted, "the run in runs/x", "Retrain.")
    with pytest.raises(ValueError, match="unknown artefact kind 'cake'"):
        manifest("cake")


def test_manifests_round_trip_and_unreadable_ones_read_as_none(tmp_path):
    record = manifest("classifier", {"data": "abc"}, {"steps": 10})
    identity.write_manifest(tmp_path / "m.json", record, note="kept")
    assert identity.read_manifest(tmp_path / "m.json") == record
    (tmp_path / "bad.json").write_text("{not json")
    assert identity.read_manifest(tmp_path / "bad.json") is None and identity.read_manifest(tmp_path / "no") is None
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def _hold(path, seconds, started):
    with identity.file_lock(path, "a test"):
        started.set()
        time.sleep(seconds)


def test_a_second_process_waits_for_the_lock(tmp_path, capsys):
    started = multiprocessing.get_context("fork").Event()
    child = multiprocessing.get_context("fork").Process(target=_hold, args=(tmp_path / "x.lock", 1.5, started))
    child.start()
    assert started.wait(30)
    begun = time.perf_counter()
    with identity.file_lock(tmp_path / "x.lock", "a test"):
        waited = time.perf_counter() - begun
    child.join()
    assert waited > 0.5 and "waiting for another process that is preparing a test" in capsys.readouterr().out


def test_temporary_names_are_unique_and_moving_aside_keeps_everything(tmp_path):
    assert identity.temporary_path(tmp_path / "a.npz") != identity.temporary_path(tmp_path / "a.npz")
    folder = tmp_path / "CUB_200_2011"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "mine.txt").write_text("the user's")
    assert not identity.made_here(folder)
    moved = identity.move_aside(folder)
    assert not folder.exists() and (moved / "notes" / "mine.txt").read_text() == "the user's"
    assert moved.parent.parent.name == "set-aside"
    identity.mark_made_here(tmp_path)
    assert identity.made_here(tmp_path)

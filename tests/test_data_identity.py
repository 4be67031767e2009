"""The data's identity: a remembered location that changed or vanished, a location given later, a
user's folder that is never deleted, and two processes preparing the same data at once."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddpm_lib import paths
from ddpm_lib.data import prepare as prepare_module
from ddpm_lib.data.cub import PreprocessOptions, load_cache
from ddpm_lib.data.download import extract, md5sum
from ddpm_lib.data.prepare import DataLocationGone, prepare
from ddpm_lib.data.synthetic import make_synthetic_archive
from ddpm_lib.identity import IdentityMismatch

from conftest import child_env

OPTIONS = PreprocessOptions(image_size=16)


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Two different CUB-format archives (A and B), as two copies of "the data" a user might have."""
    a = make_synthetic_archive(tmp_path_factory.mktemp("a"), num_images=24, num_classes=3, seed=1, image_size=(80, 60))
    b = make_synthetic_archive(tmp_path_factory.mktemp("b"), num_images=24, num_classes=3, seed=2, image_size=(80, 60))
    return a, b


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(prepare_module, "download", refuse)


def prep(tmp_path, **kwargs):
    return prepare(source="cub", options=OPTIONS, raw_dir=tmp_path / "raw", cache_dir=tmp_path / "processed",
                   md5=None, workers=1, progress=False, **kwargs)


def test_a_remembered_folder_that_now_holds_other_data_is_refused(archives, tmp_path, no_download):
    a, b = archives
    folder = extract(a, tmp_path / "mine")
    first = prep(tmp_path, data_dir=folder)
    assert prep(tmp_path) == first  # remembered: no path, no network
    shutil.rmtree(folder)  # the remembered folder's contents replaced by other data
    shutil.copytree(extract(b, tmp_path / "other"), folder)
    with pytest.raises(IdentityMismatch, match=rf"{folder} holds other data than when it was given .*--data-dir"):
        prep(tmp_path)
    note = json.loads((paths.DATA_DIR / "notes" / "data_location.json").read_text())
    assert note["path"] == str(folder.resolve())  # not re-remembered behind the user's back
    assert prep(tmp_path, data_dir=folder) != first  # given again on purpose: the other data, another cache


def test_a_vanished_location_never_downloads(archives, tmp_path, no_download):
    a, _ = archives
    copy = tmp_path / "drive" / "CUB_200_2011.tgz"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    made = prep(tmp_path, data_dir=copy)
    os.unlink(copy)
    with pytest.warns(UserWarning, match="not reachable; using the cache built from it"):
        assert prep(tmp_path) == made  # the cache of the same data is still there
    shutil.rmtree(tmp_path / "processed")
    with pytest.raises(DataLocationGone, match=f"the data location {copy}, given earlier .* is gone"):
        prep(tmp_path)


def test_a_location_given_later_outranks_an_earlier_extraction(archives, tmp_path, no_download):
    a, b = archives
    extract(a, tmp_path / "raw")  # an earlier prepare left data/raw/CUB_200_2011 (archive A)
    from_b = prep(tmp_path, data_dir=b)  # then the user gives B
    assert load_cache(from_b).manifest["source_checksum"] == md5sum(b)
    assert prep(tmp_path) == from_b  # later commands use B, not the older extraction of A


def test_the_users_own_folder_is_moved_aside_never_deleted(archives, tmp_path):
    a, _ = archives
    users = tmp_path / "raw" / "CUB_200_2011"  # copied there by hand, no extraction marker
    users.mkdir(parents=True)
    (users / "my_notes.txt").write_text("mine")
    with pytest.warns(UserWarning, match="was not extracted here; moved it aside"):
        extract(a, tmp_path / "raw")
    kept = list((tmp_path / "raw" / "set-aside").glob("*/CUB_200_2011/my_notes.txt"))
    assert len(kept) == 1 and kept[0].read_text() == "mine"
    assert (users / "images.txt").exists()


def test_a_synthetic_profile_refuses_a_data_location(tmp_path):
    with pytest.raises(ValueError, match="data.source is 'synthetic'"):
        prepare(source="synthetic", data_dir=tmp_path, raw_dir=tmp_path / "raw", cache_dir=tmp_path / "p")


PREPARE_CHILD = """
import sys
from pathlib import Path
from ddpm_lib import paths
paths.DATA_DIR = Path(sys.argv[1]) / "data"
from ddpm_lib.data.cub import PreprocessOptions
from ddpm_lib.data.prepare import prepare
print(prepare(source="synthetic", options=PreprocessOptions(image_size=16), raw_dir=Path(sys.argv[1]) / "raw",
              cache_dir=Path(sys.argv[1]) / "processed", synthetic_images=60, synthetic_classes=3,
              workers=1, progress=False))
"""


def run_prepares(root: Path, count: int) -> list[str]:
    children = [subprocess.Popen([sys.executable, "-c", PREPARE_CHILD, str(root)], env=child_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    outs = [child.communicate(timeout=600) for child in children]
    assert all(child.returncode == 0 for child in children), [err[-1500:] for _, err in outs]
    return [out.strip().splitlines()[-1] for out, _ in outs]


def test_two_processes_preparing_at_once_both_finish_with_one_cache_as_one_process_makes(tmp_path):
    together = run_prepares(tmp_path / "together", 2)
    alone = run_prepares(tmp_path / "alone", 1)
    assert together[0] == together[1]  # one cache, the same path for both
    caches = list((tmp_path / "together" / "processed").glob("*.npz"))
    assert [p.name for p in caches] == [Path(alone[0]).name]  # named by the same identity as one process's
    assert caches[0].read_bytes() == Path(alone[0]).read_bytes()  # byte for byte
    assert not list((tmp_path / "together").rglob("*.tmp")) and not list((tmp_path / "together").rglob(".extracting-*"))
    first, second = load_cache(caches[0]), load_cache(alone[0])
    assert np.array_equal(first.images, second.images) and len(first.images) == 60


def test_a_synthetic_archive_drawn_by_another_renderer_is_not_reused(tmp_path, monkeypatch):
    """The replica's archive is named by its renderer's version too: an archive drawn before the species
    differed in shape is other data, so a new renderer writes (and caches) its own, leaving the old one."""
    from ddpm_lib.data import prepare

    old = prepare.find_source("synthetic", raw_dir=tmp_path, synthetic_images=12, synthetic_classes=2, progress=False)
    monkeypatch.setattr(prepare, "RENDER_VERSION", prepare.RENDER_VERSION + 1)
    new = prepare.find_source("synthetic", raw_dir=tmp_path, synthetic_images=12, synthetic_classes=2, progress=False)
    assert new.location != old.location and old.location.exists()
    assert new.location.parent.name.endswith(f"renderer{prepare.RENDER_VERSION}")

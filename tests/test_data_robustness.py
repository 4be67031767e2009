"""Every copy of the data a user has: downloads that go wrong, folders copied in two goes, read-only
sources, leftovers of killed runs, a split that does not shift, and a data location remembered."""

import errno
import os
import shutil

import numpy as np
import pytest

from ddpm_lib.data import download as dl
from ddpm_lib.data.cub import PreprocessOptions, load_cache, random_split, read_metadata
from ddpm_lib.data.download import DownloadError, download, extract, md5sum
from ddpm_lib.data.prepare import prepare
from ddpm_lib.data.synthetic import make_synthetic_archive

from httpserver import FileServer


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return make_synthetic_archive(tmp_path_factory.mktemp("archive"), num_images=40, num_classes=4, seed=3,
                                  image_size=(120, 90))


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(dl.time, "sleep", lambda seconds: None)


# ----- downloads -------------------------------------------------------------------------------
def test_a_web_page_answering_a_range_request_never_truncates_the_partial_archive(archive, tmp_path):
    data = archive.read_bytes()
    partial = tmp_path / "CUB_200_2011.tgz.part"
    partial.write_bytes(data[:5000])
    with FileServer({"/real.tgz": archive}) as server:
        server.html.add("/legacy.tgz")
        urls = [server.url("/legacy.tgz"), server.url("/real.tgz")]
        target = download(tmp_path / "CUB_200_2011.tgz", urls, md5sum(archive), attempts=2, progress=False)
        assert target.read_bytes() == data
        assert server.requests[:2] == [("/legacy.tgz", "bytes=5000-")] * 2  # refused twice, untouched
        assert server.requests[2] == ("/real.tgz", "bytes=5000-")  # then resumed where it was


def test_a_server_ignoring_range_sends_the_whole_file_without_losing_the_partial_one(archive, tmp_path):
    data = archive.read_bytes()
    (tmp_path / "CUB_200_2011.tgz.part").write_bytes(data[:5000])
    with FileServer({"/cub.tgz": archive}) as server:
        server.ignore_range.add("/cub.tgz")
        target = download(tmp_path / "CUB_200_2011.tgz", [server.url("/cub.tgz")], md5sum(archive), progress=False)
    assert target.read_bytes() == data and not (tmp_path / "CUB_200_2011.tgz.part.fresh").exists()


def test_a_checksum_failure_moves_on_to_the_next_url(archive, tmp_path):
    wrong = tmp_path / "other.tgz"
    wrong.write_bytes(archive.read_bytes()[::-1])
    with FileServer({"/current.tgz": wrong, "/legacy.tgz": archive}) as server:
        urls = [server.url("/current.tgz"), server.url("/legacy.tgz")]
        target = download(tmp_path / "CUB_200_2011.tgz", urls, md5sum(archive), progress=False)
        assert [path for path, _ in server.requests] == ["/current.tgz", "/legacy.tgz"]
    assert target.read_bytes() == archive.read_bytes()
    assert (tmp_path / "CUB_200_2011.tgz.bad").exists()  # the wrong file is kept aside


def test_an_incomplete_read_is_retried_and_resumed(archive, tmp_path):
    with FileServer({"/cub.tgz": archive}) as server:
        server.chunked_cut["/cub.tgz"] = 3000
        target = download(tmp_path / "CUB_200_2011.tgz", [server.url("/cub.tgz")], md5sum(archive), progress=False)
        assert len(server.requests) == 2
    assert target.read_bytes() == archive.read_bytes()


def test_a_full_disk_fails_at_once_and_says_so(tmp_path, monkeypatch):
    attempts = []

    def full(url, partial, timeout, progress):
        attempts.append(url)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "_fetch", full)
    with pytest.raises(DownloadError, match="is full .* free at least 1.2 GB"):
        download(tmp_path / "CUB_200_2011.tgz", ["http://a", "http://b"], None, attempts=3, progress=False)
    assert attempts == ["http://a"]  # not retried six times as "no internet"


# ----- folders, notes, leftovers ----------------------------------------------------------------
def test_a_folder_copied_in_two_goes_gets_a_new_cache(archive, tmp_path):
    complete = extract(archive, tmp_path / "full")
    half = tmp_path / "copy" / "CUB_200_2011"
    shutil.copytree(complete, half)
    listed = read_metadata(half).paths
    for relative in listed[30:]:  # the copy stopped after 30 of 40 images
        (half / "images" / relative).unlink()
    options = PreprocessOptions(image_size=16)
    with pytest.warns(UserWarning, match="skipping image"):
        first = prepare(data_dir=half, options=options, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert load_cache(first).manifest["counts"]["kept"] == 30
    for relative in listed[30:]:  # the second go
        shutil.copy(complete / "images" / relative, half / "images" / relative)
    second = prepare(data_dir=half, options=options, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert second != first and load_cache(second).manifest["counts"]["kept"] == 40


def test_no_note_is_written_beside_the_users_archive(archive, tmp_path):
    source = tmp_path / "mount"
    source.mkdir()
    shutil.copy(archive, source / "CUB_200_2011.tgz")
    before = sorted(os.listdir(source))
    prepare(data_dir=source / "CUB_200_2011.tgz", options=PreprocessOptions(image_size=16), md5=md5sum(archive),
            raw_dir=tmp_path / "raw", cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert sorted(os.listdir(source)) == before  # a read-only mount (Kaggle input, gcsfuse) would have failed


def test_stale_extraction_folders_are_removed(archive, tmp_path):
    dead = tmp_path / ".extracting-999999999"  # no such process
    (dead / "CUB_200_2011").mkdir(parents=True)
    (dead / "CUB_200_2011" / "big.bin").write_bytes(b"0" * 1000)
    alive = tmp_path / f".extracting-{os.getppid()}"  # a running process: maybe extracting right now
    alive.mkdir()
    extract(archive, tmp_path)
    assert not dead.exists() and alive.exists()


# ----- the split -------------------------------------------------------------------------------
def test_the_random_split_is_stratified_and_one_lost_image_moves_no_other():
    rng = np.random.default_rng(0)
    class_ids = np.repeat(np.arange(1, 51), rng.integers(41, 61, size=50))  # 50 species of 41-60 images
    image_ids = np.arange(1, len(class_ids) + 1)
    train = random_split(image_ids, class_ids, 0.2, seed=0)
    for c in np.unique(class_ids):
        members = class_ids == c
        assert abs((~train[members]).sum() - 0.2 * members.sum()) <= 0.5  # each species: 20% to one image
    assert np.array_equal(train, random_split(image_ids, class_ids, 0.2, seed=0))
    assert not np.array_equal(train, random_split(image_ids, class_ids, 0.2, seed=1))


def test_an_unreadable_image_moves_no_other_image_across_the_split(archive, tmp_path):
    root = extract(archive, tmp_path / "raw")
    options = PreprocessOptions(image_size=16)
    whole = load_cache(prepare(data_dir=root, options=options, cache_dir=tmp_path / "a", workers=1, progress=False))
    victim = read_metadata(root).paths[5]
    (root / "images" / victim).write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="skipping image 6"):
        short = load_cache(prepare(data_dir=root, options=options, cache_dir=tmp_path / "b", workers=1,
                                   progress=False))
    before = dict(zip(whole.image_ids.tolist(), whole.train_random.tolist()))
    after = dict(zip(short.image_ids.tolist(), short.train_random.tolist()))
    assert set(before) - set(after) == {6} and all(before[i] == after[i] for i in after)


# ----- the data location is remembered ----------------------------------------------------------
def test_train_after_prepare_from_a_path_needs_neither_the_path_nor_the_network(archive, tmp_path, monkeypatch):
    import ddpm_lib.config as config_module
    import ddpm_lib.data.prepare as prepare_module
    from ddpm_lib.__main__ import main

    for name, folder in (("RUNS_DIR", "runs"), ("RAW_DIR", "raw"), ("PROCESSED_DIR", "processed")):
        monkeypatch.setattr(f"ddpm_lib.paths.{name}", tmp_path / folder)
    original = config_module._profile

    def smoke_on_cub(name, model):  # the smoke profile's sizes, on "real" CUB (the synthetic archive in its place)
        config = original("smoke", model)
        config.data.source = "cub"
        return config

    monkeypatch.setattr(config_module, "_profile", smoke_on_cub)
    assert main(["prepare", "--data-dir", str(archive), "--md5", md5sum(archive), "--workers", "1"]) == 0

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(prepare_module, "download", no_network)
    assert main(["train", "--steps", "2", "--run-name", "offline"]) == 0
    # the same from a folder given once, after the extraction in data/raw is gone
    shutil.rmtree(tmp_path / "raw" / "CUB_200_2011")
    folder = extract(archive, tmp_path / "elsewhere")
    assert main(["prepare", "--data-dir", str(folder), "--workers", "1"]) == 0
    assert main(["train", "--steps", "2", "--run-name", "offline-folder"]) == 0
    assert main(["sample", "--run-name", "offline-folder", "--steps", "2", "--num-samples", "2"]) == 0

"""The real download and extraction code against a loopback HTTP server and crafted archives."""

import io
import tarfile

import pytest

from ddpm_lib.data import download as dl
from ddpm_lib.data.cub import load_cache
from ddpm_lib.data.download import ChecksumError, DownloadError, UnsafeArchiveError, download, extract, md5sum
from ddpm_lib.data.prepare import locate_source, prepare
from ddpm_lib.data.synthetic import make_synthetic_archive

from httpserver import FileServer


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return make_synthetic_archive(tmp_path_factory.mktemp("archive"), num_images=24, num_classes=4, seed=1,
                                  image_size=(160, 120))


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(dl.time, "sleep", lambda seconds: None)


def test_download_verifies_and_a_second_run_does_nothing(archive, tmp_path):
    with FileServer({"/cub.tgz": archive}) as server:
        target = download(tmp_path / "CUB_200_2011.tgz", [server.url("/cub.tgz")], md5sum(archive), progress=False)
        assert target.read_bytes() == archive.read_bytes()
        assert len(server.requests) == 1
        download(target, [server.url("/cub.tgz")], md5sum(archive), progress=False)
        assert len(server.requests) == 1  # nothing fetched again


def test_an_interrupted_transfer_resumes_with_a_range_request(archive, tmp_path):
    size = archive.stat().st_size
    with FileServer({"/cub.tgz": archive}) as server:
        server.cut_after["/cub.tgz"] = size // 3
        target = download(tmp_path / "CUB_200_2011.tgz", [server.url("/cub.tgz")], md5sum(archive), progress=False)
        assert target.read_bytes() == archive.read_bytes()
        assert server.requests[0] == ("/cub.tgz", None)
        assert server.requests[1] == ("/cub.tgz", f"bytes={size // 3}-")


def test_a_partial_file_from_an_earlier_run_is_resumed(archive, tmp_path):
    data = archive.read_bytes()
    (tmp_path / "CUB_200_2011.tgz.part").write_bytes(data[:1000])
    with FileServer({"/cub.tgz": archive}) as server:
        download(tmp_path / "CUB_200_2011.tgz", [server.url("/cub.tgz")], md5sum(archive), progress=False)
        assert server.requests == [("/cub.tgz", "bytes=1000-")]


def test_falls_back_to_the_second_url(archive, tmp_path):
    with FileServer({"/legacy.tgz": archive}) as server:
        urls = [server.url("/current.tgz"), server.url("/legacy.tgz")]
        download(tmp_path / "CUB_200_2011.tgz", urls, md5sum(archive), attempts=2, progress=False)
        assert [path for path, _ in server.requests] == ["/current.tgz", "/current.tgz", "/legacy.tgz"]


def test_a_corrupted_archive_fails_the_checksum_and_is_kept_aside(archive, tmp_path):
    corrupted = tmp_path / "served.tgz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    with FileServer({"/cub.tgz": corrupted}) as server:
        with pytest.raises(DownloadError, match="does not match the expected .* moved to .*CUB_200_2011.tgz.bad"):
            download(tmp_path / "CUB_200_2011.tgz", [server.url("/cub.tgz")], md5sum(archive), progress=False)
        assert len(server.requests) == 1  # a checksum failure is that URL's failure: no retry of the same file
    assert not (tmp_path / "CUB_200_2011.tgz").exists()
    assert (tmp_path / "CUB_200_2011.tgz.bad").exists()
    with pytest.raises(ChecksumError, match="moved to"):  # an archive already there that fails is refused too
        bad = tmp_path / "again" / "CUB_200_2011.tgz"
        bad.parent.mkdir()
        bad.write_bytes(bytes(data))
        download(bad, [], md5sum(archive), progress=False)


def test_no_server_gives_a_clear_error(tmp_path):
    with FileServer({}) as server:
        with pytest.raises(DownloadError, match="(?s)could not download x.tgz.*404.*DDPM_DATA_DIR"):
            download(tmp_path / "x.tgz", [server.url("/nothing.tgz")], None, attempts=1, progress=False)


def tar_with(tmp_path, name, add):
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("CUB_200_2011/images.txt")
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
        add(tar)
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_extraction_refuses_members_outside_the_target(tmp_path, kind):
    def add(tar):
        if kind in ("dotdot", "absolute"):
            info = tarfile.TarInfo("CUB_200_2011/../../evil.txt" if kind == "dotdot" else "/tmp/evil.txt")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        else:
            info = tarfile.TarInfo("CUB_200_2011/link")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)

    bad = tar_with(tmp_path, f"{kind}.tgz", add)
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        extract(bad, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "CUB_200_2011").exists()


def test_prepare_end_to_end_over_loopback_and_the_second_run_is_a_no_op(archive, tmp_path, capsys):
    with FileServer({"/cub.tgz": archive}) as server:
        kwargs = dict(source="cub", urls=[server.url("/cub.tgz")], md5=md5sum(archive),
                      raw_dir=tmp_path / "raw", cache_dir=tmp_path / "processed", workers=1, progress=False)
        first = prepare(**kwargs)
        mtime = first.stat().st_mtime_ns
        assert len(load_cache(first).images) == 24
        again = prepare(**kwargs)
        assert again == first and first.stat().st_mtime_ns == mtime
        assert len(server.requests) == 1  # the second run fetched nothing


def test_prepare_accepts_an_archive_or_folder_the_user_already_has(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_DATA_DIR", str(archive.parent))
    cache = prepare(md5=None, raw_dir=tmp_path / "raw", cache_dir=tmp_path / "p", workers=1, progress=False)
    folder = tmp_path / "raw" / "CUB_200_2011"
    assert folder.is_dir()
    assert locate_source(folder) == ("folder", folder)
    monkeypatch.setenv("DDPM_DATA_DIR", str(folder))
    from_folder = prepare(raw_dir=tmp_path / "unused", cache_dir=tmp_path / "p", workers=1, progress=False)
    assert len(load_cache(from_folder).images) == len(load_cache(cache).images)
    monkeypatch.setenv("DDPM_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        prepare(progress=False)


def test_prepare_command_line_on_the_synthetic_replica(tmp_path, monkeypatch, capsys):
    from ddpm_lib.__main__ import main

    monkeypatch.setattr("ddpm_lib.paths.RAW_DIR", tmp_path / "raw")
    monkeypatch.setattr("ddpm_lib.paths.PROCESSED_DIR", tmp_path / "processed")
    assert main(["prepare", "--profile", "smoke", "--source", "synthetic", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "writing a synthetic CUB-format archive (48 images)" in out and "kept 48" in out
    assert main(["prepare", "--profile", "smoke", "--source", "synthetic", "--workers", "1"]) == 0
    assert "writing a synthetic" not in capsys.readouterr().out  # second run: nothing rebuilt
    assert main(["prepare", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err


def test_prepare_command_line_downloads_over_loopback(archive, tmp_path, monkeypatch, capsys):
    from ddpm_lib.__main__ import main

    monkeypatch.delenv("DDPM_DATA_DIR", raising=False)
    monkeypatch.setattr("ddpm_lib.paths.RAW_DIR", tmp_path / "raw")
    monkeypatch.setattr("ddpm_lib.paths.PROCESSED_DIR", tmp_path / "processed")
    with FileServer({"/cub.tgz": archive}) as server:
        server.cut_after["/cub.tgz"] = archive.stat().st_size // 2  # and the transfer breaks once
        args = ["prepare", "--profile", "smoke", "--source", "cub", "--url", server.url("/cub.tgz"),
                "--md5", md5sum(archive), "--workers", "1"]
        assert main(args) == 0
        assert "kept 24" in capsys.readouterr().out
        assert (tmp_path / "raw" / "CUB_200_2011.tgz").read_bytes() == archive.read_bytes()
        assert main(args) == 0  # second run: no request, same cache
        assert len(server.requests) == 2

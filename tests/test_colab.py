"""Colab: the first cell of every notebook on a simulated Colab runtime, the Drive links, the badges."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ddpm_lib import colab
from ddpm_lib.data.download import download, md5sum
from ddpm_lib.data.synthetic import make_synthetic_archive

from httpserver import FileServer

REPO = Path(__file__).resolve().parents[1]


def notebook(name, root=REPO):
    return json.loads((root / "notebooks" / f"{name}.ipynb").read_text())


# ----- badges and set-up cells --------------------------------------------------------------------
def test_every_notebook_has_its_badge_and_the_setup_cell_and_the_readme_links_them_all():
    url = colab.project_url()
    readme = (REPO / "README.md").read_text()
    for name in colab.NOTEBOOKS:
        cells = notebook(name)["cells"]
        expected = f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}" \
                   f"/blob/main/notebooks/{name}.ipynb"
        assert "".join(cells[0]["source"]).startswith(f"[![Open In Colab]({colab.BADGE_IMAGE})]({expected})"), name
        assert "".join(cells[1]["source"]) == colab.setup_cell(url), name
        assert cells[1]["cell_type"] == "code" and "parameters" not in cells[1]["metadata"].get("tags", [])
        assert readme.count(f"]({expected})") == 1, name


def test_update_links_moves_every_link_to_a_new_repository_and_is_idempotent(tmp_path):
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    new = "https://github.com/someone/birds-fork"
    changed = colab.update_links(new, root=tmp_path, branch="dev")
    assert len(changed) == len(colab.NOTEBOOKS) + 2  # the notebooks, README, pyproject
    assert colab.project_url(tmp_path / "pyproject.toml") == new
    readme = (tmp_path / "README.md").read_text()
    assert colab.colab_url(colab.project_url(), "01_eda") not in readme
    for name in colab.NOTEBOOKS:
        link = f"https://colab.research.google.com/github/someone/birds-fork/blob/dev/notebooks/{name}.ipynb"
        assert link in readme
        cells = notebook(name, tmp_path)["cells"]
        assert link in "".join(cells[0]["source"])
        assert f'REPO_URL = "{new}"' in "".join(cells[1]["source"])
        assert len(cells) == len(notebook(name)["cells"])  # the set-up cell replaced, not added again
    assert colab.update_links(new, root=tmp_path, branch="dev") == []


@pytest.mark.parametrize("url", ["https://gitlab.com/a/b", "github.com/a/b", "https://github.com/a"])
def test_a_url_that_is_not_a_github_repository_is_refused(url):
    with pytest.raises(ValueError, match="not a GitHub repository URL"):
        colab.colab_url(url, "01_eda")


# ----- packages ---------------------------------------------------------------------------------
def test_only_missing_packages_are_installed_and_colabs_own_are_pinned(tmp_path):
    assert colab.missing_packages({"json": "json", "no_such_module_xyz": "no-such-dist"}) == ["no-such-dist"]
    command = colab.pip_command(["torch-fidelity"], tmp_path / "constraints.txt")
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    assert command[-1] == "torch-fidelity" and "torch" not in command and "ipywidgets" not in command
    assert command[command.index("--constraint") + 1] == str(tmp_path / "constraints.txt")
    pins = (tmp_path / "constraints.txt").read_text().split()
    for name in ("torch", "ipywidgets"):
        assert f"{name}=={importlib.metadata.version(name)}" in pins


def test_setup_installs_what_is_missing_keeps_a_chosen_profile_and_needs_no_drive(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "")
    monkeypatch.setenv("DDPM_PROFILE", "smoke")  # the user's choice wins over the GPU-based default
    monkeypatch.setattr(colab, "missing_packages", lambda: ["torch-fidelity"])
    calls = []
    result = colab.setup_colab(use_drive=False, repo_root=tmp_path,
                               install=lambda command, check: calls.append((command, check)))
    assert [c[0][-1] for c in calls] == ["torch-fidelity"] and calls[0][1] is True
    assert "--constraint" in calls[0][0] and (tmp_path / ".colab-constraints.txt").exists()
    assert result.installed == ["torch-fidelity"] and result.profile == "smoke" and result.drive_root is None
    assert os.getcwd() == str(tmp_path / "notebooks") and os.environ["PYTHONPATH"] == str(tmp_path)


# ----- Drive ------------------------------------------------------------------------------------
def test_drive_links_put_runs_cache_and_archive_on_drive_and_are_idempotent(tmp_path):
    repo, drive = tmp_path / "repo", tmp_path / "drive" / "MyDrive" / "ddpm-cub"
    (repo / "runs").mkdir(parents=True)  # empty: replaced by the link
    (repo / "data" / "raw").mkdir(parents=True)
    (repo / "data" / "raw" / "CUB_200_2011.tgz").write_bytes(b"archive downloaded before Drive was mounted")
    colab.link_to_drive(repo, drive)
    colab.link_to_drive(repo, drive)  # running the cell again changes nothing
    (repo / "runs" / "colab" / "small_unet").mkdir(parents=True)
    (repo / "runs" / "colab" / "small_unet" / "ckpt.pt").write_bytes(b"weights")
    (repo / "data" / "processed" / "cache.npz").write_bytes(b"cache")
    assert (drive / "runs" / "colab" / "small_unet" / "ckpt.pt").read_bytes() == b"weights"
    assert (drive / "processed" / "cache.npz").read_bytes() == b"cache"
    assert (drive / "CUB_200_2011.tgz").read_bytes() == b"archive downloaded before Drive was mounted"
    assert (repo / "data" / "raw" / "CUB_200_2011.tgz").read_bytes() == b"archive downloaded before Drive was mounted"


def test_a_link_to_a_folder_deleted_on_drive_gets_its_folder_back_and_no_drive_means_no_links(tmp_path):
    import shutil

    repo, drive = tmp_path / "repo", tmp_path / "drive" / "MyDrive" / "ddpm-cub"
    colab.link_to_drive(repo, drive)
    shutil.rmtree(drive / "runs")  # deleted on Drive between two sessions
    colab.link_to_drive(repo, drive)
    (repo / "runs" / "colab").mkdir(parents=True)  # would be FileExistsError through a dangling link
    assert (drive / "runs" / "colab").is_dir()
    removed = colab.unlink_drive(repo)  # Drive not mounted this time: the notebooks write into the runtime
    assert sorted(p.name for p in removed) == ["CUB_200_2011.tgz", "notes", "processed", "runs"]
    assert not (repo / "runs").is_symlink() and (drive / "runs" / "colab").is_dir()  # nothing on Drive lost


def test_a_folder_with_files_is_never_replaced_by_a_drive_link(tmp_path):
    repo = tmp_path / "repo"
    (repo / "runs" / "colab").mkdir(parents=True)
    (repo / "runs" / "colab" / "metrics.csv").write_text("step,loss\n")
    with pytest.raises(RuntimeError, match=r"runs already holds files.*USE_DRIVE = False"):
        colab.link_to_drive(repo, tmp_path / "drive")
    assert (repo / "runs" / "colab" / "metrics.csv").read_text() == "step,loss\n"
    assert not (repo / "runs").is_symlink()


def test_the_download_follows_a_link_to_drive_so_archive_and_partial_file_survive_a_reset(tmp_path):
    archive = make_synthetic_archive(tmp_path / "served", num_images=8, num_classes=2, seed=3, image_size=(64, 48))
    drive, raw = tmp_path / "drive", tmp_path / "raw"
    drive.mkdir()
    raw.mkdir()
    (raw / "CUB_200_2011.tgz").symlink_to(drive / "CUB_200_2011.tgz")  # dangling until downloaded
    (drive / "CUB_200_2011.tgz.part").write_bytes(archive.read_bytes()[:500])  # from the runtime that died
    with FileServer({"/cub.tgz": archive}) as server:
        got = download(raw / "CUB_200_2011.tgz", [server.url("/cub.tgz")], md5sum(archive), progress=False)
        assert server.requests == [("/cub.tgz", "bytes=500-")]  # resumed from Drive's partial file
    assert got == (drive / "CUB_200_2011.tgz").resolve()
    assert (drive / "CUB_200_2011.tgz").read_bytes() == archive.read_bytes()
    assert (raw / "CUB_200_2011.tgz").is_symlink() and not (drive / "CUB_200_2011.tgz.part").exists()


# ----- the first cell on a simulated Colab runtime ------------------------------------------------
FAKE_DRIVE = '''
import os
MOUNTS = []
def mount(mount_point, **kwargs):
    if os.environ.get("FAKE_DRIVE_DECLINE"):
        raise RuntimeError("credential propagation was unsuccessful")
    os.makedirs(os.path.join(mount_point, "MyDrive"), exist_ok=True)
    MOUNTS.append(mount_point)
'''

RUN_CELL = '''
import json, os, sys
sys.path.insert(0, {fake!r})
import google.colab  # what a Colab kernel has imported at start
from google.colab import drive
before = list(sys.path)
source = {source!r}
exec(source)
exec(source)  # running the cell twice is harmless
import ddpm_lib
print("RESULT " + json.dumps({{"ddpm_lib": ddpm_lib.__file__, "cwd": os.getcwd(), "mounts": drive.MOUNTS,
                              "pythonpath": os.environ.get("PYTHONPATH", ""), "profile": os.environ["DDPM_PROFILE"],
                              "added": [p for p in sys.path if p not in before]}}))
'''


def _source_repository(tmp_path):
    """A git repository holding this working tree's package, as the cell's REPO_URL points at."""
    source = tmp_path / "origin" / "ddpm-cub"
    shutil.copytree(REPO / "ddpm_lib", source / "ddpm_lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "notebooks", source / "notebooks")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "."], ["git", "commit", "-q", "-m", "x"]):
        subprocess.run(command, cwd=source, check=True, env=env)
    return source


def _run_cell_on_fake_colab(tmp_path, source_repo, content, extra_env=None, branch="main", check=True):
    fake = tmp_path / "fake"
    (fake / "google" / "colab").mkdir(parents=True, exist_ok=True)
    (fake / "google" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "drive.py").write_text(FAKE_DRIVE)
    cell = colab.setup_cell(str(source_repo), branch)
    assert cell.count('"/content/"') == 1
    cell = cell.replace('"/content/"', repr(str(content) + "/"))
    env = {k: v for k, v in os.environ.items() if k not in ("DDPM_PROFILE", "PYTHONPATH")}
    env.update(extra_env or {})
    done = subprocess.run([sys.executable, "-c", RUN_CELL.format(fake=str(fake), source=cell)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    if not check:
        return None, done
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    return result, done.stdout


@pytest.mark.slow
def test_the_setup_cell_on_a_fresh_colab_runtime_and_again_after_a_reset(tmp_path):
    source_repo = _source_repository(tmp_path)
    content = tmp_path / "content"  # Colab's /content: wiped by a reset, unlike Drive
    content.mkdir()
    clone = content / "ddpm-cub"
    result, out = _run_cell_on_fake_colab(tmp_path, source_repo, content)
    assert (clone / ".git").is_dir() and Path(result["ddpm_lib"]).is_relative_to(clone)  # importable, no restart
    assert result["added"] == [str(clone)]  # put on sys.path once, although the cell ran twice
    assert result["cwd"] == str(clone / "notebooks")
    assert str(clone) in result["pythonpath"].split(os.pathsep)  # `!python -m ddpm_lib ...` works too
    drive = content / "drive" / "MyDrive" / "ddpm-cub"
    assert result["mounts"] == [str(content / "drive")] * 2
    assert (clone / "runs").resolve() == drive / "runs"
    assert (clone / "data" / "processed").resolve() == drive / "processed"
    assert (clone / "data" / "notes").resolve() == drive / "notes"  # the remembered data location survives a reset
    assert f"kept on Google Drive in {drive}" in out and "lost" not in out
    if not _has_cuda():
        assert "WARNING: no GPU" in out and "T4 GPU" in out
        assert result["profile"] == "demo"
    else:
        assert "GPU: " in out and result["profile"] == "colab"
    assert "installing" not in out  # everything is already here: nothing is pip-installed

    checkpoint = clone / "runs" / "colab" / "small_unet" / "checkpoints" / "step_00001000.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights after 1000 steps")
    shutil.rmtree(clone)  # the runtime resets: /content is gone, Drive is not
    result, _ = _run_cell_on_fake_colab(tmp_path, source_repo, content)
    assert checkpoint.read_bytes() == b"weights after 1000 steps"  # the new clone sees the old checkpoint


@pytest.mark.slow
def test_declining_drive_goes_on_without_it(tmp_path):
    source_repo = _source_repository(tmp_path)
    content = tmp_path / "content"
    content.mkdir()
    result, out = _run_cell_on_fake_colab(tmp_path, source_repo, content, {"FAKE_DRIVE_DECLINE": "1"})
    assert "Google Drive not mounted" in out and "Google Drive is not used" in out and "lost" in out
    assert "None" not in out
    assert result["mounts"] == [] and not (content / "ddpm-cub" / "runs").is_symlink()
    assert Path(result["ddpm_lib"]).is_relative_to(content / "ddpm-cub")


def test_outside_colab_the_setup_cell_does_nothing(tmp_path):
    cell = colab.setup_cell("https://github.com/ddpm-cub/ddpm-cub").replace('"/content/"', repr(str(tmp_path) + "/"))
    script = textwrap.dedent(f"""
        import os, sys
        before = list(sys.path)
        exec({cell!r})
        assert sys.path == before and os.getcwd() == {str(tmp_path)!r}
        assert "DDPM_PROFILE" not in os.environ
    """)
    env = {k: v for k, v in os.environ.items() if k != "DDPM_PROFILE"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing cloned


def _has_cuda():
    import torch

    return torch.cuda.is_available()


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _commit(repo, message, **files):
    for name, text in files.items():
        (repo / name).write_text(text)
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "add", "."], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=repo, check=True, env=env)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def _head(clone):
    return subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


@pytest.mark.slow
def test_the_badges_branch_is_cloned_and_an_earlier_clone_is_brought_to_it(tmp_path):
    source_repo = _source_repository(tmp_path)
    subprocess.run(["git", "checkout", "-q", "-b", "course"], cwd=source_repo, check=True)
    course = _commit(source_repo, "the course branch", WHICH="course")
    subprocess.run(["git", "checkout", "-q", "main"], cwd=source_repo, check=True)
    content = tmp_path / "content"
    content.mkdir()
    clone = content / "ddpm-cub"
    _run_cell_on_fake_colab(tmp_path, source_repo, content, {"FAKE_DRIVE_DECLINE": "1"}, branch="course")
    assert _head(clone) == course and (clone / "WHICH").read_text() == "course"
    subprocess.run(["git", "checkout", "-q", "course"], cwd=source_repo, check=True)
    newer = _commit(source_repo, "a fix on the course branch", WHICH="course, fixed")
    _run_cell_on_fake_colab(tmp_path, source_repo, content, {"FAKE_DRIVE_DECLINE": "1"}, branch="course")
    assert _head(clone) == newer  # the clone from before the fix is brought to the notebook's commit
    (clone / "WHICH").write_text("a student's edit")
    _, done = _run_cell_on_fake_colab(tmp_path, source_repo, content, {"FAKE_DRIVE_DECLINE": "1"}, branch="course",
                                      check=False)
    assert done.returncode != 0 and f"!git -C {clone} stash" in done.stderr  # stops with the exact command
    assert (clone / "WHICH").read_text() == "a student's edit"  # nothing of the student's is lost

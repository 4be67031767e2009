"""Google Colab: the runtime set-up behind each notebook's first cell, and the "Open in Colab" links.

The first code cell of every notebook clones the repository (only on Colab), puts it on ``sys.path``
and calls :func:`setup_colab`, which

* installs only the packages Colab lacks (torch-fidelity), pinned so that Colab's own torch,
  torchvision and ipywidgets (7.7.1, which its front end renders) are never replaced;
* makes ``python -m ddpm_lib`` work from ``!`` shell commands (``PYTHONPATH``);
* offers to mount Google Drive and links the repository's ``runs/`` (checkpoints, metrics, samples),
  ``data/processed/`` (the cache) and the CUB archive into ``MyDrive/ddpm-cub/``, so a reset runtime
  resumes training and skips the download instead of starting again;
* reports the GPU it got, or warns plainly when there is none, and picks the profile (``colab`` on a
  GPU, the CPU-sized ``demo`` otherwise) unless ``DDPM_PROFILE`` is set.

:func:`update_links` rewrites the badges and the setup cells when the repository moves. This module
imports only the standard library and this package (which imports torch, which Colab has).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ddpm_lib.pipeline import NOTEBOOKS

REPO_ROOT = Path(__file__).resolve().parents[1]
DRIVE_FOLDER = "MyDrive/ddpm-cub"  # under the Drive mount point
# import name -> pip name of what the notebooks need beyond the standard library
REQUIRED = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow",
            "matplotlib": "matplotlib", "tqdm": "tqdm", "ipywidgets": "ipywidgets", "wandb": "wandb",
            "torch_fidelity": "torch-fidelity"}
KEEP = ("torch", "torchvision", "ipywidgets", "numpy")  # what Colab ships and pip must never replace
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
SETUP_MARKER = "# Colab set-up"


def missing_packages(required: dict[str, str] | None = None) -> list[str]:
    """The pip names of the required packages that cannot be imported here."""
    required = REQUIRED if required is None else required
    return [pip_name for module, pip_name in required.items() if importlib.util.find_spec(module) is None]


def pip_command(packages: list[str], constraints_file: Path) -> list[str]:
    """The pip call that installs ``packages`` and pins what is already installed of :data:`KEEP`.

    Writes the pins to ``constraints_file``: pip may then add missing dependencies but never
    upgrade or replace Colab's torch, torchvision, ipywidgets or numpy.
    """
    pins = []
    for name in KEEP:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    constraints_file.write_text("\n".join(pins) + "\n")
    return [sys.executable, "-m", "pip", "install", "--quiet", "--constraint", str(constraints_file), *packages]


def link_to_drive(repo_root: Path, drive_root: Path) -> dict[str, Path]:
    """Point the repository's ``runs/``, ``data/processed/``, ``data/notes/`` (the remembered data
    location and checksum notes) and the CUB archive at ``drive_root``.

    Idempotent: a link that already points there is left alone, and its target is created again
    if it was deleted on Drive. A real folder that already holds files is never replaced (its files
    would be lost to the running notebooks): the error says what to move. Returns
    ``{path in the repository: where it now points}``.
    """
    from ddpm_lib.data.download import ARCHIVE_NAME

    targets = {
        repo_root / "runs": drive_root / "runs",
        repo_root / "data" / "processed": drive_root / "processed",
        repo_root / "data" / "notes": drive_root / "notes",
        repo_root / "data" / "raw" / ARCHIVE_NAME: drive_root / ARCHIVE_NAME,
    }
    for link, target in targets.items():
        is_folder = link.name != ARCHIVE_NAME
        (target if is_folder else target.parent).mkdir(parents=True, exist_ok=True)  # the archive comes later
        if link.is_symlink():
            if link.resolve() == target.resolve():
                continue
            link.unlink()
        elif link.is_dir():
            if any(link.iterdir()):
                raise RuntimeError(
                    f"{link} already holds files, so it cannot become a link to Google Drive. Move them to "
                    f"{target} (or set USE_DRIVE = False in the first cell) and run the cell again."
                )
            link.rmdir()
        if link.is_file():  # an archive downloaded before Drive was mounted: move it there
            if not target.exists():
                link.replace(target)
            else:
                link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=is_folder)
    return targets


def unlink_drive(repo_root: Path) -> list[Path]:
    """Remove the links :func:`link_to_drive` made (Drive is not mounted this time): the notebooks then
    write into the runtime instead of failing on a dangling link. Returns the removed links."""
    from ddpm_lib.data.download import ARCHIVE_NAME

    removed = []
    for link in (repo_root / "runs", repo_root / "data" / "processed", repo_root / "data" / "notes",
                 repo_root / "data" / "raw" / ARCHIVE_NAME):
        if link.is_symlink():
            link.unlink()
            removed.append(link)
    return removed


def describe_device() -> tuple[bool, str]:
    """``(has_gpu, a line for the user)``: the GPU, its memory and precision, or a plain warning."""
    from ddpm_lib.device import default_device, describe

    device = default_device()
    if device.type != "cuda":
        return False, ("WARNING: no GPU. Training here runs on the CPU, hundreds of times slower; the notebooks "
                       "fall back to the CPU-sized 'demo' profile (synthetic data). For real birds choose "
                       "Runtime > Change runtime type > T4 GPU, then run this cell again.")
    return True, f"GPU: {describe(device)} (training and sampling)"


@dataclass
class ColabSetup:
    """What :func:`setup_colab` did."""

    repo_root: Path
    profile: str
    has_gpu: bool
    installed: list[str] = field(default_factory=list)
    drive_root: Path | None = None  # where runs/, the cache and the archive live, when Drive is mounted


def mount_drive(mount_point: Path) -> bool:
    """Mount Google Drive at ``mount_point`` (Colab asks the user); False when declined or failing."""
    try:
        from google.colab import drive

        drive.mount(str(mount_point))
    except Exception as error:  # the user declined, or Drive is unavailable: go on without it
        print(f"Google Drive not mounted ({error}); data and checkpoints stay in this runtime and are lost "
              "when it resets.")
        return False
    return True


def setup_colab(use_drive: bool = True, repo_root: Path | None = None, mount_point: str | Path | None = None,
                install=subprocess.run) -> ColabSetup:
    """Prepare a Colab runtime for the notebooks (see the module's docstring). Safe to run twice.

    Args:
        use_drive: offer to mount Google Drive and keep runs, cache and archive there.
        repo_root: the clone (default: the one this module is in, ``/content/<repo>`` on Colab).
        mount_point: where Drive is mounted (default: ``drive`` beside the clone, ``/content/drive``).
        install: runs the pip command (injectable for tests).
    """
    repo_root = Path(repo_root or REPO_ROOT)
    mount_point = Path(mount_point) if mount_point is not None else repo_root.parent / "drive"
    os.chdir(repo_root / "notebooks")  # where nbval and papermill run the notebooks
    python_path = os.environ.get("PYTHONPATH", "")
    if str(repo_root) not in python_path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root), python_path) if p)
    missing = missing_packages()
    if missing:
        print(f"installing {', '.join(missing)} (Colab's torch and ipywidgets are kept as they are)")
        install(pip_command(missing, repo_root / ".colab-constraints.txt"), check=True)
        importlib.invalidate_caches()  # the running kernel sees the new packages without a restart
    result = ColabSetup(repo_root=repo_root, profile="", has_gpu=False, installed=missing)
    if use_drive and mount_drive(mount_point):
        result.drive_root = mount_point / DRIVE_FOLDER
        link_to_drive(repo_root, result.drive_root)
        print(f"runs (checkpoints, metrics, samples), the data cache, the CUB archive and the data notes are kept on "
              f"Google Drive in {result.drive_root}: after a reset, run the notebook again; training resumes from "
              "the last checkpoint and nothing is downloaded again")
    else:
        unlink_drive(repo_root)
        print("Google Drive is not used: runs, the data cache and the archive stay in this runtime and are lost "
              "when it resets (then training starts again from step 0)")
    result.has_gpu, line = describe_device()
    print(line)
    result.profile = os.environ.setdefault("DDPM_PROFILE", "colab" if result.has_gpu else "demo")
    print(f"profile: {result.profile} (set DDPM_PROFILE, or PROFILE in the parameters cell, to change it)")
    return result


# ----- the badges and the first cell ------------------------------------------------------------
def project_url(pyproject: Path | None = None) -> str:
    """The repository's URL: ``[project.urls] Repository`` in ``pyproject.toml``."""
    text = (pyproject or REPO_ROOT / "pyproject.toml").read_text()
    match = re.search(r'^Repository\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
    if match is None:
        raise ValueError("pyproject.toml has no [project.urls] Repository = \"https://github.com/<org>/<repo>\"")
    return match.group(1)


def colab_url(repo_url: str, notebook: str, branch: str = "main") -> str:
    """``https://colab.research.google.com/github/<org>/<repo>/blob/<branch>/notebooks/<notebook>.ipynb``."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)/?", repo_url)
    if match is None:
        raise ValueError(f"{repo_url!r} is not a GitHub repository URL (https://github.com/<org>/<repo>)")
    org, repo = match.groups()
    return f"https://colab.research.google.com/github/{org}/{repo}/blob/{branch}/notebooks/{notebook}.ipynb"


def badge(repo_url: str, notebook: str, branch: str = "main") -> str:
    """The Markdown of an "Open in Colab" badge for ``notebook``."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repo_url, notebook, branch)})"


def setup_cell(repo_url: str, branch: str = "main") -> str:
    """The source of every notebook's first code cell: clone the repository at ``branch`` (the one its
    badge opens), or bring an earlier clone of this runtime to that branch's commit, then set up."""
    return f'''{SETUP_MARKER} (does nothing outside Google Colab): this notebook's branch of the repo, Drive, the GPU.
import sys

REPO_URL = "{repo_url}"
BRANCH = "{branch}"  # the branch this notebook's Colab badge opens
USE_DRIVE = True  # False: keep everything in the runtime (lost when it resets)
if "google.colab" in sys.modules:
    import os
    import subprocess

    repo_dir = "/content/" + REPO_URL.rstrip("/").rsplit("/", 1)[-1]
    git = ["git", "-C", repo_dir]
    if not os.path.isdir(repo_dir):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", BRANCH, REPO_URL, repo_dir], check=True)
    elif subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout:
        raise SystemExit(f"{{repo_dir}} has changes of yours, so it was not brought to {{BRANCH}}: keep them with "
                         f"!git -C {{repo_dir}} stash (or drop the clone: !rm -rf {{repo_dir}}), then run this again")
    else:  # a clone from earlier in this runtime: bring it to this notebook's branch and commit
        subprocess.run([*git, "fetch", "-q", "--depth", "1", "origin", BRANCH], check=True)
        subprocess.run([*git, "checkout", "-q", "-B", BRANCH, "FETCH_HEAD"], check=True)
    if repo_dir not in sys.path:
        sys.path.insert(0, repo_dir)
    from ddpm_lib.colab import setup_colab

    setup_colab(use_drive=USE_DRIVE)'''


_BADGE_PATTERN = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


def update_links(repo_url: str, root: Path | None = None, branch: str = "main") -> list[Path]:
    """Rewrite every badge (README and notebooks) and every setup cell for ``repo_url``.

    Each notebook's first cell must be Markdown starting with its title, and a code cell starting
    with :data:`SETUP_MARKER` follows it; both are inserted when missing. Returns the files changed.
    """
    root = Path(root or REPO_ROOT)
    colab_url(repo_url, NOTEBOOKS[0], branch)  # validates the URL
    changed = []
    for name in NOTEBOOKS:
        path = root / "notebooks" / f"{name}.ipynb"
        notebook = json.loads(path.read_text())
        before = json.dumps(notebook)
        cells = notebook["cells"]
        title = cells[0]
        if title["cell_type"] != "markdown":
            raise ValueError(f"{path}: the first cell should be the Markdown title")
        text = _BADGE_PATTERN.sub("", "".join(title["source"])).lstrip("\n")
        title["source"] = _lines(f"{badge(repo_url, name, branch)}\n\n{text}")
        setup = _lines(setup_cell(repo_url, branch))
        if len(cells) > 1 and "".join(cells[1]["source"]).startswith(SETUP_MARKER):
            cells[1]["source"] = setup
        else:
            cells.insert(1, {"cell_type": "code", "execution_count": None, "id": "colab-setup", "metadata": {},
                             "outputs": [], "source": setup})
        if json.dumps(notebook) != before:
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    readme = root / "README.md"
    text = readme.read_text()
    for name in NOTEBOOKS:  # README badges are written as: | [`<name>`](notebooks/<name>.ipynb) | [![Open In Colab]...
        pattern = re.compile(rf"(\[`{name}`\]\(notebooks/{name}\.ipynb\)[^\n]*?){_BADGE_PATTERN.pattern}")
        text = pattern.sub(lambda match, n=name: match.group(1) + badge(repo_url, n, branch), text)
    if text != readme.read_text():
        readme.write_text(text)
        changed.append(readme)
    pyproject = root / "pyproject.toml"
    toml = pyproject.read_text()
    new_toml = re.sub(r'^(Repository\s*=\s*)"[^"]+"', rf'\g<1>"{repo_url}"', toml, flags=re.MULTILINE)
    if new_toml != toml:
        pyproject.write_text(new_toml)
        changed.append(pyproject)
    return changed


def _lines(text: str) -> list[str]:
    """Notebook JSON's list-of-lines form of ``text``."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]

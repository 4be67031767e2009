"""The explorers in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright
(Debian's chromium, no browser download). Moving the forward explorer's slider, or the guidance
explorer's, or the SDEdit explorer's, must change the image the slider drives.

Screenshots are saved to ``test-artifacts/<notebook>.png`` (or ``$DDPM_TEST_ARTIFACTS``). Skipped
where Chromium or Playwright is missing, except in CI (``CI=true``), where that is a failure.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("DDPM_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    return None


if _missing():
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run in CI: {_missing()}", pytrace=False)
    pytest.skip(_missing(), allow_module_level=True)

NOTEBOOK_CELLS = [
    "import torch\n"
    "from ddpm_lib.data.synthetic import render_dataset\n"
    "from ddpm_lib.math.schedules import get_named_schedule\n"
    "from ddpm_lib.show.viz import ForwardExplorer",
    "pixels, _ = render_dataset(2, 2, image_size=32, seed=0)\n"
    "images = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25\n"
    "schedules = {'linear': get_named_schedule('linear'), 'cosine': get_named_schedule('cosine')}\n"
    "explorer = ForwardExplorer(images, schedules, [0.5] * 3, [0.25] * 3, stride=50)\n"
    "explorer",
]
GUIDANCE_CELLS = [
    "import numpy as np\n"
    "from ddpm_lib.show.viz import GuidanceExplorer",
    "rng = np.random.default_rng(0)\n"
    "frames = {(s, w): rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8) for s in (0, 1) for w in (0.0, 1.0, 3.0)}\n"
    "explorer = GuidanceExplorer(frames, ['Azure_Finch', 'Crimson_Warbler'])\n"
    "explorer",
]

SDEDIT_CELLS = [
    "import torch\n"
    "from ddpm_lib.data.synthetic import render_dataset\n"
    "from ddpm_lib.math.schedules import get_named_schedule\n"
    "from ddpm_lib.show.viz import SDEditExplorer",
    "pixels, _ = render_dataset(2, 2, image_size=32, seed=0)\n"
    "images = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25\n"
    "schedule = get_named_schedule('cosine', 100)\n"
    "explorer = SDEditExplorer(images, schedule.alphas_cumprod, lambda x_t, step: 0.5 * x_t, [0.5] * 3, [0.25] * 3,\n"
    "                          stride=10)\n"
    "explorer",
]
# notebook -> which of its images the slider drives (the SDEdit explorer shows the unchanging x0 first)
DRIVEN_IMAGE = {"explorer": 0, "guidance": 0, "sdedit": 1}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving one notebook per explorer."""
    root = tmp_path_factory.mktemp("lab")
    for name, cells in (("explorer", NOTEBOOK_CELLS), ("guidance", GUIDANCE_CELLS), ("sdedit", SDEDIT_CELLS)):
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, root / f"{name}.ipynb")
    settings = root / ".settings"
    for plugin, values in (("@jupyterlab/apputils-extension/notification", {"fetchNews": "false"}),
                           ("@jupyterlab/docmanager-extension/plugin", {"autosave": False})):
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"), "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces")}
    port, token = _free_port(), "ddpm-browser-test"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (root / "server.log").read_text()[-2000:]
                assert time.time() < deadline, "JupyterLab did not answer within 90 s"
                time.sleep(0.5)
        yield url, token
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.parametrize("notebook", list(DRIVEN_IMAGE))
def test_moving_the_slider_changes_the_image(jupyterlab, notebook):
    from playwright.sync_api import sync_playwright

    url, token = jupyterlab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # a workspace of its own (?reset): no tab of the other test's notebook is restored beside it
            page.goto(f"{url}/lab/tree/{notebook}.ipynb?reset&token={token}")
            page.wait_for_selector(".jp-Notebook", timeout=90_000)
            page.wait_for_function("() => document.body.innerText.includes('| Idle')", timeout=90_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator('[data-command="runmenu:run-all"]').first.click()
            panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on screen, not a hidden tab
            driven = DRIVEN_IMAGE[notebook]
            image = page.locator(f"{panel} img.widget-image").nth(driven)
            image.wait_for(timeout=120_000)
            handles = f"{panel} .widget-slider .noUi-handle, {panel} .widget-slider .ui-slider-handle"
            handle = page.locator(handles).first
            handle.wait_for(timeout=30_000)
            before = image.get_attribute("src")
            handle.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(
                f"(before) => document.querySelectorAll('{panel} img.widget-image')[{driven}].src !== before",
                arg=before, timeout=30_000)
            after = image.get_attribute("src")
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTIFACTS / f"{notebook}.png"), full_page=True)
        finally:
            browser.close()
    assert after != before and after.startswith(("blob:", "data:image"))

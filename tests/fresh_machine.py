"""The README on a fresh machine: clone the repository into a temporary folder and run its commands.

Run by ``make test`` in CI (``CI=true``), or by hand: ``python tests/fresh_machine.py``. It

1. clones the committed repository (``git clone``, so an untracked file the code needs is caught;
   where the checkout is not a git repository, its source tree is copied without outputs);
2. takes the commands of the README's "Set up and test" block and runs them literally, one by one, in
   the clone, with none of this environment's virtualenv on the PATH (so a dependency missing from
   ``requirements.txt`` or a step missing from the README fails here);
3. runs the main job's pipeline (``make demo``) under the ``smoke`` profile: the notebooks through
   papermill, the report, the summary (``make demo`` itself takes ~13 minutes on 2 cores).

The inner ``make test`` sees ``DDPM_FRESH_MACHINE_INNER``: it does not start this script again, and
runs lint and the unit tests but the slow ones (the outer ``make test`` ran those), leaving the
notebooks and the report to step 3.
Exits non-zero, keeping the clone for inspection, when a command fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_setup_commands(readme: Path) -> list[str]:
    """The lines of the first ```bash block under the README's "## Set up and test" heading."""
    text = readme.read_text()
    section = re.search(r"^## Set up and test.*?$(.*?)^## ", text, flags=re.MULTILINE | re.DOTALL)
    if section is None:
        raise SystemExit(f"{readme}: no '## Set up and test' section")
    block = re.search(r"```bash\n(.*?)```", section.group(1), flags=re.DOTALL)
    if block is None:
        raise SystemExit(f"{readme}: the 'Set up and test' section has no ```bash block")
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


# What a checkout never holds (the .gitignore'd outputs), for a checkout that is not a git repository
NOT_CHECKED_OUT = (".git", ".venv", ".cache", "runs", "raw", "processed", "__pycache__", "*.egg-info", "test-artifacts",
                   "generated", "synthetic", ".pytest_cache", ".ruff_cache", "wandb")


def copy_repository(destination: Path) -> str:
    """Clone the committed repository to ``destination``; copy the tree when it is not a git checkout."""
    if (REPO / ".git").exists():
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(destination)], check=True)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=destination, capture_output=True, text=True)
        return f"commit {head.stdout.strip()} cloned"
    shutil.copytree(REPO, destination, ignore=shutil.ignore_patterns(*NOT_CHECKED_OUT))
    return "no git checkout here: the source tree (without outputs) copied"


def fresh_environment() -> dict[str, str]:
    """This environment without the active virtualenv, as a new shell on a fresh machine has it."""
    env = dict(os.environ)
    venv = env.pop("VIRTUAL_ENV", None)
    venv_bins = {str(Path(sys.executable).parent), *([str(Path(venv) / "bin")] if venv else [])}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p not in venv_bins)
    for name in ("PYTHONPATH", "PYTHONHOME", "DDPM_PROFILE", "DDPM_ROOT", "DDPM_DATA_DIR"):
        env.pop(name, None)
    env.update(CI="true", DDPM_FRESH_MACHINE_INNER="1")
    return env


def run(command: str, cwd: Path, env: dict[str, str], log: Path) -> None:
    started = time.perf_counter()
    print(f"$ {command}", flush=True)
    with log.open("a") as out:
        out.write(f"\n$ {command}\n")
        out.flush()
        done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    print(f"  exit {done.returncode} after {time.perf_counter() - started:.0f} s", flush=True)
    if done.returncode != 0:
        tail = log.read_text().splitlines()[-60:]
        print("\n".join(tail))
        raise SystemExit(f"fresh-machine check failed at `{command}`; the clone and its log are kept in {cwd}")


def main() -> int:
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="ddpm-fresh-"))
    clone = workdir / "ddpm-cub"
    how = copy_repository(clone)
    print(f"fresh-machine check: {how} into {clone}", flush=True)
    commands = readme_setup_commands(clone / "README.md")
    if len(commands) != 2:
        raise SystemExit(f"the README's set-up block should hold two commands (install, test), not {commands}")
    env, log = fresh_environment(), workdir / "fresh-machine.log"
    for command in commands:
        run(command, clone, env, log)
    run("make demo DEMO_PROFILE=smoke", clone, env, log)
    summary = log.read_text().rsplit("=== what the smoke run wrote", 1)[-1]
    expected = len(list((clone / "notebooks").glob("*.ipynb")))
    if f"executed notebooks ({expected})" not in summary:
        raise SystemExit(f"`make demo DEMO_PROFILE=smoke` did not execute the {expected} notebooks; log: {log}")
    if not (clone / "report" / "main.pdf").exists():
        raise SystemExit(f"no report/main.pdf after `make demo DEMO_PROFILE=smoke`; log: {log}")
    shutil.rmtree(workdir)
    print(f"fresh-machine check passed in {time.perf_counter() - started:.0f} s: the README's commands work "
          "on a clean clone", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

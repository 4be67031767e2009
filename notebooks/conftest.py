"""When pytest (nbval) runs the notebooks in CI, they run under the smoke profile and nothing else,
so CI can never silently start a demo or full-size run."""

import os

import pytest


def pytest_sessionstart(session):
    if os.environ.get("CI") == "true" and os.environ.get("DDPM_PROFILE") != "smoke":
        raise pytest.UsageError(
            f"CI executes the notebooks under DDPM_PROFILE=smoke only (got {os.environ.get('DDPM_PROFILE')!r})")

"""Shared by the helper scripts that the kill-and-resume tests run in their own processes."""

import time


def slow_down(trainer, seconds: float) -> None:
    """Make each training step take at least ``seconds`` longer, so a test can kill the run mid-way."""
    if not seconds:
        return
    original = trainer.train_step

    def slow_step():
        original()
        time.sleep(seconds)

    trainer.train_step = slow_step

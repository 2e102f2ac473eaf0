"""A stop during a study's runs (`experiment`) drops the queued runs and ends the
running ones: before, the pool's `with` block waited for every queued run (minutes
each) before the Ctrl-C or SIGTERM took effect."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType

import pytest

from declora.cli.job_pool import run_in_pool


def sleeper(job: int, output: Path) -> str:
    """A run: says it started (with its pid), then takes 20 s."""
    (output / f"{job}.started").write_text(str(os.getpid()))
    time.sleep(20)
    return str(job)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("fresh_process", [False, True])
def test_a_stop_drops_queued_runs_and_ends_running_ones(
    tmp_path: Path, fresh_process: bool
) -> None:
    said: list[str] = []
    previous = signal.signal(signal.SIGALRM, _stop)
    signal.setitimer(signal.ITIMER_REAL, 6.0)  # a Ctrl-C while run 0 runs
    try:
        with pytest.raises(KeyboardInterrupt):
            run_in_pool(sleeper, [0, 1, 2], tmp_path, 1, said.append, fresh_process)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert said == []
    assert not (tmp_path / "1.started").exists() and not (tmp_path / "2.started").exists()
    started = tmp_path / "0.started"
    if started.exists():  # the worker that ran it is gone
        with pytest.raises(ProcessLookupError):
            os.kill(int(started.read_text()), 0)


def test_runs_are_said_in_order(tmp_path: Path) -> None:
    said: list[str] = []
    run_in_pool(quick, [0, 1, 2], tmp_path, 2, said.append)
    assert said == ["done 0", "done 1", "done 2"]


def quick(job: int, output: Path) -> str:
    return str(job)

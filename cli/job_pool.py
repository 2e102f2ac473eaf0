"""A study's runs in spawned worker processes (`experiment`'s studies), ended by a stop.

Each run writes its JSON atomically (`report.write_json`), so a stopped study resumes
by running again the runs without one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any


def run_in_pool(
    run: Callable[[Any, Path], str],
    jobs: Sequence[Any],
    output: Path,
    workers: int,
    say: Callable[[str], None],
    fresh_process: bool = False,
) -> None:
    """`run(job, output)` for every job, `workers` at a time, in spawned processes (a
    fresh one for each job with `fresh_process`), saying `done NAME` in the jobs'
    order. A stop (KeyboardInterrupt: Ctrl-C, or SIGTERM/SIGHUP as the CLI turns them)
    drops the queued runs and ends the running ones before it goes on (a `with` pool
    waited for every queued run first); a run that fails lets the others finish."""
    pool = ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), max_tasks_per_child=1 if fresh_process else None
    )
    try:
        for fut in [pool.submit(run, job, output) for job in jobs]:
            say(f"done {fut.result()}")
    except KeyboardInterrupt:
        running = list(pool._processes.values())  # CPython keeps them there
        pool.shutdown(wait=False, cancel_futures=True)
        for process in running:
            process.terminate()
        for process in running:
            process.join()
        raise
    finally:
        pool.shutdown()

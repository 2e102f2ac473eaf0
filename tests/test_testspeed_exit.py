"""A command's end (`declora.cli.app.main`): the heap is frozen (`gc.freeze`) before the
interpreter exits, so its last collections skip the ~400k objects torch and
transformers made (seconds of CPU after a node has stopped, tens on a loaded machine;
every real-process test waited them out). Frozen at the exit (an atexit handler), not
when `main` returns: a process that called it and goes on (a test run) is not frozen."""

from __future__ import annotations

import subprocess
import sys

import pytest

from declora.node import __version__

PROBE = """
import atexit, gc, sys
sys.argv = ["declora-node", *sys.argv[1:]]
atexit.register(lambda: print("frozen", gc.get_freeze_count(), flush=True))  # runs last
from declora.cli.app import main
try:
    main()
finally:
    print("after main", gc.get_freeze_count(), flush=True)
"""


@pytest.mark.parametrize("args", [["--version"], ["config", "--nope"]], ids=["done", "error"])
def test_a_command_freezes_the_heap_before_the_exit(args: list[str]) -> None:
    res = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == (0 if args == ["--version"] else 2), res.stderr
    assert args != ["--version"] or __version__ in res.stdout
    [line] = [x for x in res.stdout.splitlines() if x.startswith("frozen ")]
    assert int(line.split()[1]) > 0, res.stdout
    # the heap of a process that goes on after `main` is its own (was frozen: its cyclic
    # garbage of that moment was never collected)
    assert "after main 0" in res.stdout.splitlines(), res.stdout

"""SIGTERM and SIGHUP that the CLI makes a Ctrl-C (a command that does not take them
over: `experiment`, `predict`, `start` while it checks its configuration) interrupt at
each one, as Ctrl-C does, but for the echo of the one before (`signals.Interrupt`).
The first one used to leave them ignored for the rest of the process: a cleanup that
hangs after it (`experiment`'s process pool waiting for every queued job) could no
longer be stopped but by SIGKILL (revops2)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

# the command `main` runs: two stops, the second past the first's echo window
SCRIPT = """
import signal, sys, time
from declora.cli import app as cli
from declora.node.daemon.signals import ECHO_SECONDS

def command(prog_name):
    for which in ("first", "second"):
        try:
            signal.raise_signal({sig})
            print(which, "ignored", flush=True)
        except KeyboardInterrupt:
            print(which, "interrupted", flush=True)
        time.sleep(2 * ECHO_SECONDS)  # what follows is no echo of it

cli.app = command
sys.argv = ["declora-node", "predict"]
cli.main()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_second_stop_signal_interrupts_again(sig: int) -> None:
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(sig=int(sig))],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    # the old code: "second ignored"
    assert res.stdout.split("\n") == ["first interrupted", "second interrupted", ""], res.stderr


def test_an_echo_is_one_stop() -> None:
    """`timeout` signals its child, then its process group: the second within
    `ECHO_SECONDS` is the same stop, not another (the clock is the test's)."""
    from declora.node.daemon.signals import ECHO_SECONDS, Interrupt

    now = [100.0]
    old = Interrupt.clock, Interrupt.last
    Interrupt.clock = lambda: now[0]  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            Interrupt.handle(signal.SIGTERM, None)
        now[0] += ECHO_SECONDS / 2
        Interrupt.handle(signal.SIGTERM, None)  # its echo: nothing raised
        now[0] += ECHO_SECONDS
        with pytest.raises(KeyboardInterrupt, match="SIGHUP"):
            Interrupt.handle(signal.SIGHUP, None)
    finally:
        Interrupt.clock, Interrupt.last = old  # type: ignore[method-assign]

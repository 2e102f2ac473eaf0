"""SIGINT/SIGTERM/SIGHUP from `declora-node start`'s first instant to its exit.

SIGHUP (an ssh session that closes) stops a node as SIGTERM does, unless the node was
started with it ignored (`nohup`). Until `launch` has checked the configuration (which
imports torch), the CLI makes all three a Ctrl-C (`Interrupt`; `cli.app`: one line,
exit 130, nothing written: `NotStarted`). Then `launch` installs the handlers
(`stop_signals`) before it starts the event loop, and they stay for the whole run: a
signal before the daemon exists is remembered, not raised (a KeyboardInterrupt
inside asyncio's or grpc's start exited 130 with grpc's InvalidStateError printed),
and `Daemon.run` then acts on it as on one that comes later (`take_over`: stop
requested, exit 0 once stopped). Each later signal is handed to the daemon on its
loop, so a second one exits at once (130) whenever both came. A signal within
`ECHO_SECONDS` of the one before is that same stop delivered twice (`timeout` signals
its child, then its process group), never a second. One handler for the whole run,
not the loop's own from `Daemon.run` on: a signal in between would reach both
(counted twice: 130).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # this module loads light: the CLI's `main` imports it
    import asyncio

# SIGHUP too: an operator's ssh session that closes must stop a node politely (its
# default action killed it with no leave and no checkpoint); Windows has none
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)
# a stop signal this soon after the one before is its echo: `timeout N declora-node start`
# sends its TERM to the node and then to its process group, and the node took the
# second for another Ctrl-C (exit 130: no checkpoint, no adapter, no leave)
ECHO_SECONDS = 0.1


def handled() -> tuple[signal.Signals, ...]:
    """The `STOP_SIGNALS` a node acts on: a SIGHUP this process was started ignoring
    (`nohup`) stays ignored."""
    hup = getattr(signal, "SIGHUP", None)
    return tuple(
        sig for sig in STOP_SIGNALS if sig != hup or signal.getsignal(sig) is not signal.SIG_IGN
    )


class Interrupt:
    """A stop signal as a Ctrl-C where no daemon takes them (the CLI until `launch`
    does, `lab`): a KeyboardInterrupt at each one, but for its echo, one within
    `ECHO_SECONDS` of the one before (the same stop delivered twice). A later one
    interrupts again, as a second Ctrl-C does: a cleanup that hangs can be stopped."""

    clock: Callable[[], float] = time.monotonic
    last = -math.inf  # `clock` at the last one raised

    @classmethod
    def handle(cls, signum: int, frame: FrameType | None) -> None:
        now = cls.clock()
        if now - cls.last < ECHO_SECONDS:
            return
        cls.last = now
        raise KeyboardInterrupt(signal.Signals(signum).name)


class NotStarted(KeyboardInterrupt):
    """A Ctrl-C before `launch` took over stop signals: the node never started and
    nothing was written."""


class StopSignals:
    """Where a stop signal goes: to the daemon once it has taken over, else remembered."""

    installed = False  # `stop_signals` is in force
    requested = False  # one came before the daemon took over
    deliver: Callable[[], None] | None = None
    last = -math.inf  # time.monotonic() of the last stop signal acted on

    @classmethod
    def handle(cls, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if now - cls.last < ECHO_SECONDS:
            return  # the same stop, delivered twice
        cls.last = now
        if cls.deliver is not None:
            cls.deliver()
        elif cls.requested:
            os._exit(130)  # a second interrupt before the daemon: at once
        else:
            cls.requested = True


@contextmanager
def stop_signals() -> Iterator[None]:
    """`StopSignals` handle `STOP_SIGNALS` until the end of the block; the handlers
    before are restored then (nothing is installed off the main thread)."""
    before: dict[signal.Signals, Any] = {}
    wanted = handled()
    with suppress(ValueError):  # not the main thread
        for sig in wanted:
            before[sig] = signal.signal(sig, StopSignals.handle)
    StopSignals.installed = len(before) == len(wanted)
    try:
        yield
    finally:
        for old, handler in before.items():
            signal.signal(old, handler)
        StopSignals.installed = StopSignals.requested = False
        StopSignals.deliver = None
        StopSignals.last = -math.inf


def take_over(loop: asyncio.AbstractEventLoop, request_stop: Callable[[], None]) -> None:
    """From now on stop signals call `request_stop` on `loop`; one that came before
    calls it now. Without `stop_signals` (a daemon run in-process) the loop's own
    signal handlers do it."""
    if not StopSignals.installed:
        for sig in handled():  # none off the main thread (RuntimeError: tests run
            # daemons in threads) or where the loop has no signal support (NotImplemented)
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, request_stop)
        return

    def deliver() -> None:
        with suppress(RuntimeError):  # the loop has closed: the run is over
            loop.call_soon_threadsafe(request_stop)

    StopSignals.deliver = deliver
    if StopSignals.requested:
        StopSignals.requested = False
        request_stop()

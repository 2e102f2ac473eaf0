"""One stop delivered twice is one stop: `timeout N declora-node start` signals the node
and then its process group, and the node took the echo for a second Ctrl-C (exit 130
with no checkpoint and no adapter)."""

from __future__ import annotations

import asyncio
import signal
import time

from declora.node.daemon.signals import ECHO_SECONDS, stop_signals, take_over


def test_an_echoed_signal_is_one_stop_and_a_later_one_a_second() -> None:
    stops: list[int] = []
    loop = asyncio.new_event_loop()
    try:
        with stop_signals():
            take_over(loop, lambda: stops.append(1))
            signal.raise_signal(signal.SIGTERM)  # timeout: to the node...
            signal.raise_signal(signal.SIGTERM)  # ...then to its process group
            loop.run_until_complete(asyncio.sleep(0))
            assert stops == [1]
            time.sleep(2 * ECHO_SECONDS)  # a person's second Ctrl-C comes later
            signal.raise_signal(signal.SIGINT)
            loop.run_until_complete(asyncio.sleep(0))
            assert stops == [1, 1]
    finally:
        loop.close()


def test_an_echo_before_the_daemon_took_over_is_remembered_once() -> None:
    stops: list[int] = []
    loop = asyncio.new_event_loop()
    try:
        with stop_signals():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)  # before: a second one here exited 130
            take_over(loop, lambda: stops.append(1))
            loop.run_until_complete(asyncio.sleep(0))
            assert stops == [1]
    finally:
        loop.close()

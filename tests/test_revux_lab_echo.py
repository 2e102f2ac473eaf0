"""A lab's stop signal delivered twice at once (`timeout N declora-node lab` signals
the lab, then its process group) is one stop, not a second Ctrl-C (which kills the
nodes: no checkpoint, no adapter); a later one is a second."""

from __future__ import annotations

import signal
import time

import pytest

from declora.cli.lab_swarm import stops_as_interrupt
from declora.node.daemon.signals import ECHO_SECONDS


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_an_echoed_stop_is_one_interrupt_and_a_later_one_a_second(sig: signal.Signals) -> None:
    interrupts = 0
    with stops_as_interrupt():
        for _ in range(2):  # the lab, then its process group: the same stop
            try:
                signal.raise_signal(sig)
            except KeyboardInterrupt:
                interrupts += 1
        assert interrupts == 1  # before: 2 (the lab killed its nodes)
        time.sleep(2 * ECHO_SECONDS)  # a person's second Ctrl-C comes later
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(sig)

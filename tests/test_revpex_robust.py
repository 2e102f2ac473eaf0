"""Peer exchange's robustness: a fault that repeats every step is logged once, not
every second; `displaced` and `split` compare addresses as normalised (`LOCALHOST:7`
chosen is the peer at `localhost:7`). Real `PeerTable`s, no network."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from test_scale_selection import address, hello, table

from declora.node.daemon import peer_exchange as px
from declora.node.daemon.peers import displaced, split


class Failing(px.PeerExchange):
    """An exchange whose step fails the same way `steps` times, then stops the node."""

    def __init__(self, steps: int) -> None:
        self.progress = SimpleNamespace(stop_requested=False)
        self.handshaker = SimpleNamespace(progress=self.progress)  # type: ignore[assignment]
        self.left = steps

    async def step(self, now: float | None = None) -> None:
        self.left -= 1
        if self.left <= 0:
            self.progress.stop_requested = True
        raise RuntimeError("a fault that repeats")


def test_a_repeated_fault_is_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(px, "STEP", 0.0)
    caplog.set_level(logging.ERROR, logger=px.__name__)
    ex = Failing(steps=5)
    asyncio.run(ex.run())
    assert ex.left == 0  # every step ran, and the loop went on after each failure
    assert [r.exc_info is not None for r in caplog.records] == [True]


def test_displaced_and_split_compare_normalised_addresses() -> None:
    t = table(2)
    for i in (1, 2):
        assert t.admit(hello(i), dialled=address(i)) is not None
    p1, p2 = t.live
    p1.address, p1.degree, p2.degree = "localhost:7001", 2, 2
    chosen = {"LOCALHOST:7001", "Localhost:7009"}
    # the chosen peer at localhost:7001 keeps its slot; the newcomer takes p2's
    assert displaced(t.live, chosen, "localhost:7009") is p2
    assert split(t.live, chosen) is p2

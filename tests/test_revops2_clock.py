"""A peer's stay in the table is measured with a monotonic clock (`PeerTable.clock`),
not the wall clock: a forward step of the wall clock (NTP, a resumed laptop) forgot
every idle peer at once (revops2)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from daemon_helpers import HOST

from declora.node.daemon.peers import FORGET_SECONDS, PeerTable
from declora.node.daemon.state import Progress
from declora.node.metrics import NodeMetrics
from declora.proto import pb


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _table_with_idle_peer() -> tuple[PeerTable, Clock]:
    """A table holding peer b, admitted then dropped (not live: prunable)."""
    node = SimpleNamespace(add_peer=lambda pid: None, forget_peer=lambda pid: None)
    table = PeerTable(node, Progress(), None, NodeMetrics(), 4, 1.0)  # type: ignore[arg-type]
    clock = Clock()
    table.clock = clock
    peer = table.admit(pb.Hello(node_id="b", listen_address=f"{HOST}:1"))
    assert peer is not None
    table.drop(peer, "test", quiet=True)
    return table, clock


def test_a_wall_clock_step_forgets_no_idle_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    table, clock = _table_with_idle_peer()
    stepped = time.time() + 3600.0  # the wall clock jumps an hour ahead
    monkeypatch.setattr(time, "time", lambda: stepped)
    clock.now += 1.0  # one second passed
    table.prune()
    assert table.get("b") is not None  # the old code: forgotten (3600 s > FORGET_SECONDS)
    clock.now += FORGET_SECONDS  # now it was unheard long enough
    table.prune()
    assert table.get("b") is None

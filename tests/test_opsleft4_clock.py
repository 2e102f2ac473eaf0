"""`status`' "last seen" of a neighbour is measured on the monotonic clock: a wall-clock
step between hearing a peer and the status call (NTP, a VM resumed, an operator's
`date -s`) showed a neighbour heard 5 s ago as heard an hour ago (or as just now after
a step back), as `last_seen_unix` was the wall clock of the hearing."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from daemon_helpers import HOST

from declora.cli.client import _ago
from declora.node.daemon.peers import PeerTable
from declora.node.daemon.state import Progress
from declora.node.daemon.status import neighbor_statuses
from declora.node.metrics import NodeMetrics
from declora.proto import pb


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _table() -> tuple[PeerTable, Clock]:
    node = SimpleNamespace(add_peer=lambda pid: None, forget_peer=lambda pid: None)
    table = PeerTable(node, Progress(), None, NodeMetrics(), 4, 1.0)  # type: ignore[arg-type]
    table.clock = clock = Clock()
    assert table.admit(pb.Hello(node_id="b", listen_address=f"{HOST}:1")) is not None
    return table, clock


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_last_seen_ignores_a_wall_clock_step(monkeypatch: pytest.MonkeyPatch, step: float) -> None:
    table, clock = _table()
    stepped = time.time() + step
    monkeypatch.setattr(time, "time", lambda: stepped)  # the node's and the CLI's clock
    clock.now += 5.0  # five seconds passed
    [seen] = neighbor_statuses(table)
    assert seen.last_seen_unix == pytest.approx(stepped - 5.0)
    assert _ago(seen.last_seen_unix) == "5s"  # the old code: "60m", or "0s" after a step back


def test_a_peer_never_heard_shows_no_time() -> None:
    """Guard: a peer whose `heard` is unset is shown as `-`, as before."""
    table, _ = _table()
    table.peers["b"].heard = 0.0
    [seen] = neighbor_statuses(table)
    assert _ago(seen.last_seen_unix) == "-"

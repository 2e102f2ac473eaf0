"""A validated push renews its sender's stay in the peer table on the monotonic clock
(`PeerTable.heard_from`), as a Hello does: before, only the wall-clock `last_seen`
moved, so a neighbour heard only through its pushes for 10 minutes was forgotten at
the first prune after it dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_daemon_parts import pair


def test_a_validated_push_renews_the_senders_stay(synthetic_jsonl: Path) -> None:
    (da, _), (a, b) = pair(synthetic_jsonl, round_deadline=0.5)
    now = [1000.0]
    b.peers.clock = lambda: now[0]

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        assert b.peers.peers["a"].heard == 1000.0  # the Hello
        now[0] = 1600.0  # ten minutes on, heard of only by its push
        await da.run_round(a, train=True)
        assert "a" in b.inbox.arrived(1)

    asyncio.run(go())
    assert b.peers.peers["a"].heard == 1600.0

"""A stopping node says goodbye to the neighbours it dropped for lagging behind too
(`daemon.goodbye_to`): one still training learns that this node finished, so its
isolation pacing stops waiting a deadline per remaining round for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_daemon_parts import pair

from declora.node.daemon.daemon import goodbye_to


def test_a_neighbour_dropped_for_lagging_hears_the_goodbye(synthetic_jsonl: Path) -> None:
    """b finished (round 2 of --rounds 2) after dropping a, which lagged: its stop tells
    a, which then counts b as finished and stops pacing for it. Before: only live
    neighbours heard it, and a waited a deadline per remaining round."""
    (da, db), (a, b) = pair(synthetic_jsonl, min_peers=1, rounds=2, consensus_rounds=0)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        lagging = b.peers.get("a")
        assert lagging is not None
        lagging.proven = True  # it delivered before it fell behind
        b.peers.drop(lagging, "missed the deadline")
        a.peers.drop(a.peers.peers["b"], "missed the deadline")
        assert goodbye_to(b.peers) == [lagging]
        b.progress.round = 2
        db.parts = b  # as `run` sets it
        await db._shutdown(save=False)

    asyncio.run(go())
    peer = a.peers.peers["b"]
    assert peer.left_after == 2 and a.peers.finished(peer)
    assert da.rounds is not None and not da.rounds.isolation.needed()


def test_peers_that_never_delivered_hear_no_goodbye(synthetic_jsonl: Path) -> None:
    """Guard: a peer not live that never delivered (an id that introduced itself) is not
    dialled for a goodbye."""
    (_, _), (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None

    asyncio.run(go())
    entry = b.peers.get("a")
    assert entry is not None and goodbye_to(b.peers) == [entry]  # live: told
    b.peers.drop(entry, "test")
    assert goodbye_to(b.peers) == []

"""A neighbour's verified round (`Inbox.verified_round`) is reset to its claim only once
it is re-admitted on another copy: while it is not live, its claim is its old Hello's.

A push that starts after its neighbour was dropped (one at a time, the deadline passed
meanwhile) asks `Sender.held`, which asked `verified_round` while the neighbour was not
live: its round was cut to the claim of its first Hello (0) and the verified round
forgotten, so after it re-joined claiming more, this node no longer aligned to it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_daemon_parts import pair
from test_netleft_holds import push_round


def test_a_dropped_neighbours_verified_round_survives_its_re_join(
    synthetic_jsonl: Path,
) -> None:
    _, (a, b) = pair(synthetic_jsonl)
    a.progress.round = 10

    async def go() -> None:
        assert await b.handshaker.dial(a.settings.advertise) is not None  # claims 0
        b.progress.round, b.progress.seq = 13, 12
        await push_round(b, 14)  # accepted by a: b has completed round 13
        peer = a.peers.get("b")
        assert peer is not None and peer.round == 13
        a.peers.drop(peer, "missed the deadline")
        assert not a.exchange.sender.held(peer, 11)  # a push begun after the drop
        b.progress.round = 14
        assert await b.handshaker.dial(a.settings.advertise) is not None  # claims 14
        assert a.inbox.verified_round(peer) == 13

    asyncio.run(go())
    assert a.exchange.align_round()  # to what b proved, not what it claims
    assert a.progress.round == 13

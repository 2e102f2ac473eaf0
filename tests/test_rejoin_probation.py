"""A neighbour on probation (dropped for late acks, back since) holds a round only
`PROBATION_GRACE` s beyond its other work (`sending`), also when it re-joins while the
round waits: re-joining buys no new full deadline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from memory_transport import MemoryTransport
from test_daemon_parts import pair

from declora.node.daemon import Daemon
from declora.node.daemon.sending import OVERRUNS_TO_DROP
from declora.node.daemon.service import SwarmService

DEADLINE = 120.0  # s: far beyond any load, so ending before it means not waiting for it


@pytest.mark.parametrize("joins_mid_round", [False, True], ids=["live", "joins-mid-round"])
def test_a_neighbour_on_probation_gets_no_full_deadline(
    synthetic_jsonl: Path, joins_mid_round: bool
) -> None:
    """a's round 1 waits for c (delivering at 0.6 s); b, on probation at a and past
    round 1 (a waits for no payload of it), never acks a's push. The round ends
    before its deadline (far beyond any load). Before: b joining mid-round got the
    full deadline."""
    (da, _), (a, b) = pair(synthetic_jsonl, round_deadline=DEADLINE)
    network = da.transport.network  # type: ignore[attr-defined]
    address = "127.0.0.1:7409"
    s = a.settings.model_copy(update={"node_id": "c", "listen": address, "advertise": address})
    c = Daemon(s, MemoryTransport(network, s, None)).build()
    network.serve(s.advertise, SwarmService(c))
    b.progress.round = 1  # b has completed round 1: a does not wait for its payload
    a.exchange.sender.overruns["b"] = OVERRUNS_TO_DROP  # on probation at a
    receive = b.inbox.receive

    async def slow_receive(*args: Any, **kwargs: Any) -> Any:  # a slow link: a late ack
        await asyncio.sleep(10 * DEADLINE)
        return await receive(*args, **kwargs)

    b.inbox.receive = slow_receive  # type: ignore[method-assign]

    async def c_round() -> None:
        await asyncio.sleep(0.6)
        await c.exchange.exchange(1)

    async def join() -> None:
        await asyncio.sleep(0.3)
        assert await a.handshaker.dial(b.settings.advertise) is not None

    async def go() -> bool:
        assert await a.handshaker.dial(address) is not None
        assert await a.handshaker.dial(b.settings.advertise) is not None
        if joins_mid_round:  # dropped for its late acks; back while the round waits
            a.peers.drop(a.peers.peers["b"], "no ack within the round deadline")
        deadline = time.monotonic() + DEADLINE  # at or before the round's own
        joins = [join()] if joins_mid_round else []
        await asyncio.gather(a.exchange.exchange(1), c_round(), *joins)
        return time.monotonic() < deadline

    assert asyncio.run(go()), "the round waited its full deadline for b's ack"
    assert a.exchange.last_contributors == ["c"]

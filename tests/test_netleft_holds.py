"""Pushes a neighbour would refuse are held back (`sending.Sender.held`), and what
holds them goes by the neighbour's current process (`Inbox.verified_round`).

A node far ahead of a neighbour (one restarted from an old checkpoint beside a swarm
at round 50) pushed it a round in its future every round: refused (`future_round`),
logged there, answered by a new handshake. Now only the first, until it caught up.
A neighbour's verified round outlived its restart: a process of the same id
restarted from an older checkpoint was taken for as far on as the old one."""

from __future__ import annotations

import asyncio
import time
import zlib
from pathlib import Path

from test_daemon_parts import pair

from declora.node.daemon import Daemon
from declora.node.daemon.parts import Parts
from declora.node.daemon.sending import RoundPayload
from declora.node.daemon.service import SwarmService


async def push_round(p: Parts, r: int) -> None:
    """`p`'s round-`r` payload sent to its live neighbours as an exchange sends it,
    without waiting for theirs."""
    message = p.node.outgoing()
    p.progress.seq += 1
    live = p.peers.live
    out = RoundPayload(r, message, len(live), zlib.crc32(message), 0, time.monotonic() + 30)
    await p.exchange.sender.send_round(live, out)


def test_a_node_ahead_pushes_no_future_round_to_a_neighbour_behind(
    synthetic_jsonl: Path,
) -> None:
    """Before: each of the 5 rounds (each after a re-join, as when the node ahead drops
    the one behind at its deadline) pushed b a round it refused as `future_round`; now
    only the first, and once b has caught up it is pushed again."""
    _, (a, b) = pair(synthetic_jsonl)
    a.progress.round = 50

    async def go() -> None:
        for r in range(51, 56):
            assert await b.handshaker.dial(a.settings.advertise) is not None  # (re-)joins
            await push_round(a, r)
            a.progress.round = r
        assert b.inbox.queued == {}

        b.progress.round = 55  # caught up (a state pulled from a)
        assert await b.handshaker.dial(a.settings.advertise) is not None
        await push_round(a, 56)

    asyncio.run(go())
    assert b.counters.rejected == {"future_round": 1}
    assert a.counters.rejected == {"push_held": 1}  # counted once, not every round
    assert 56 in b.inbox.queued


def test_a_neighbour_restarted_from_an_older_checkpoint_is_not_held_to_its_old_round(
    synthetic_jsonl: Path,
) -> None:
    """b was ahead of a (a's verified round for b: 13, a at 10); b restarts from an
    older checkpoint (round 5) at its address. Before: a took the new process for
    as far on as the old one, aligning to round 13 and pushing it nothing until
    round 14 (its `ahead` hold); now b is at most what its new Hello claims: a does
    not skip, and its next push reaches b."""
    (_, db), (a, b) = pair(synthetic_jsonl)
    a.progress.round = 10

    async def go() -> None:
        assert await b.handshaker.dial(a.settings.advertise) is not None
        b.progress.round, b.progress.seq = 13, 12
        await push_round(b, 14)  # accepted by a: b has completed round 13
        assert a.peers.get("b").round == 13  # type: ignore[union-attr]
        # b is refused a round it had completed: a holds its pushes to b (`ahead`)
        b.progress.round = 14
        await push_round(a, 11)
        assert "b" in a.exchange.sender.ahead

        # b's process restarts from its checkpoint of round 5 (its seq then: 5)
        network = db.transport.network  # type: ignore[attr-defined]
        fresh = Daemon(b.settings, type(db.transport)(network, b.settings, None))
        b2 = fresh.build()
        network.serve(b.settings.advertise, SwarmService(b2))
        b2.progress.round, b2.progress.seq = 5, 5
        assert await b2.handshaker.dial(a.settings.advertise) is not None
        assert not a.exchange.align_round()  # not to the old process's round 13
        assert a.progress.round == 10
        await push_round(a, 11)
        assert 11 in b2.inbox.queued

    asyncio.run(go())

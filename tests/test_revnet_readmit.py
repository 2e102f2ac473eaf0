"""A neighbour that shakes hands again out of step at seq 0 while this node is at seq 0
too (it restarted before this node's first round: its public copy is the init again)
is taken back at the shared init with nothing of its earlier life still queued.
Before, a delta (or keyframe) it had pushed before the restart stayed queued, was
applied at the next mix onto the fresh copy at the init, and every later delta of the
restarted node landed on that wrong copy (its seq was in step): the copy differed from
the node's public copy for good, silently."""

from __future__ import annotations

import asyncio
import time
import zlib
from pathlib import Path

import numpy as np
from test_daemon_parts import pair

from declora.node.daemon.daemon import Parts
from declora.node.daemon.sending import RoundPayload


def begin_round(p: Parts, r: int, shift: float) -> RoundPayload:
    """Move `p`'s adapter by `shift`, then what `Exchange.exchange` does before it
    pushes: round `r`'s delta, the next seq."""
    p.node.trainer.set_vector(p.node.vector() + np.float32(shift))
    delta = p.node.outgoing()
    p.progress.seq += 1
    return RoundPayload(r, delta, 1, zlib.crc32(delta), 0, time.monotonic() + 30)


def test_a_restarted_neighbours_old_delta_is_not_applied_to_its_new_copy(
    synthetic_jsonl: Path,
) -> None:
    _, (a, b) = pair(synthetic_jsonl)
    at_init = a.node.snapshot()

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        pa = a.peers.get("b")
        assert pa is not None
        await a.exchange.sender.push(pa, begin_round(a, 1, 0.01))
        assert "a" in b.inbox.queued[1]  # b is still training round 1
        a.node.restore(at_init)  # a crashes and starts afresh: seq 0, at the init
        a.progress.seq = 0
        assert await a.handshaker.dial(b.settings.advertise) is not None
        b.exchange.mix(1, 1)  # b's round 1 ends
        b.progress.round = 1
        await a.exchange.sender.push(pa, begin_round(a, 2, 0.02))  # a's first delta
        assert "a" in b.inbox.queued[2]
        b.exchange.mix(2, 1)

    asyncio.run(go())
    assert a.counters.keyframes_sent == 0
    np.testing.assert_array_equal(b.node.gossip.peers["a"], a.node.gossip.public)


def test_a_restarted_neighbours_old_keyframe_is_not_applied_to_its_new_copy(
    synthetic_jsonl: Path,
) -> None:
    """As above with a keyframe queued from before the restart (b had asked for one),
    and the restarted node's first delta queued for a later round before b mixes the
    earlier one: the old keyframe set the copy, the new delta landed on it."""
    _, (a, b) = pair(synthetic_jsonl)
    at_init = a.node.snapshot()

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        pa = a.peers.get("b")
        assert pa is not None
        pa.send_keyframe = True
        await a.exchange.sender.push(pa, begin_round(a, 1, 0.01))
        assert a.counters.keyframes_sent == 1 and "a" in b.inbox.queued[1]
        a.node.restore(at_init)  # a crashes and starts afresh: seq 0, at the init
        a.progress.seq = 0
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await a.exchange.sender.push(pa, begin_round(a, 2, 0.02))  # a is a round ahead
        b.exchange.mix(1, 1)
        b.progress.round = 1
        b.exchange.mix(2, 1)

    asyncio.run(go())
    np.testing.assert_array_equal(b.node.gossip.peers["a"], a.node.gossip.public)

"""A neighbour that shakes hands just after a node began round 1 gets round 1's delta,
not a keyframe (before: either side at seq 1 forgot the other's copy, and each sent a
keyframe; on slow lossy links, where the second neighbour's handshake often lands after
the first round began, 1-2 extra keyframes a node, each a full fp32 vector). A delta
with seq 1 is always relative to the shared seeded init, so a copy held at the init
takes it; any later delta is out of step there and asks for a keyframe, as before.
(netfix's f8e803b, reverted in 8bb32f3 for test_rejoin_stale_delta and
test_rejoin_probation; since 56f7f31 a re-admitted neighbour's queued payloads are
dropped first, and both pass with it.)"""

from __future__ import annotations

import asyncio
import time
import zlib
from pathlib import Path

import pytest
from test_daemon_parts import pair

from declora.node.daemon.daemon import Parts
from declora.node.daemon.sending import RoundPayload
from declora.proto import pb


def begin_round(p: Parts) -> RoundPayload:
    """What `Exchange.exchange` does before it pushes: round 1's delta, seq 1."""
    delta = p.node.outgoing()
    p.progress.seq += 1
    return RoundPayload(1, delta, 1, zlib.crc32(delta), 0, time.monotonic() + 30)


@pytest.mark.parametrize("began", ["a", "both"])
def test_a_handshake_just_after_round_1_began_needs_no_keyframe(
    synthetic_jsonl: Path, began: str
) -> None:
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        out_a = begin_round(a)  # a began round 1 alone; then b (seq 0 or 1) joins
        out_b = begin_round(b) if began == "both" else None
        assert await b.handshaker.dial(a.settings.advertise) is not None
        pa, pb_ = a.peers.get("b"), b.peers.get("a")
        assert pa is not None and pb_ is not None
        assert (pa.expected_seq, pa.send_keyframe) == (1, False)
        assert (pb_.expected_seq, pb_.send_keyframe) == (1, False)
        await a.exchange.sender.push(pa, out_a)
        if out_b is None:
            out_b = begin_round(b)
        await b.exchange.sender.push(pb_, out_b)

    asyncio.run(go())
    assert a.counters.keyframes_sent == b.counters.keyframes_sent == 0
    assert b.inbox.queued[1]["a"].kind == pb.PAYLOAD_KIND_DELTA
    assert a.inbox.queued[1]["b"].kind == pb.PAYLOAD_KIND_DELTA


def test_a_later_delta_to_a_copy_at_the_init_still_asks_for_a_keyframe(
    synthetic_jsonl: Path,
) -> None:
    """Guard: a at seq 2 (a second round began) shakes hands with b: b holds no copy
    of a's seq 1, so a's delta 2 is answered need_keyframe, and a keyframe follows."""
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        begin_round(a)
        a.progress.seq += 1  # its public copy moved on again (a catch-up, a round)
        out = RoundPayload(2, a.node.outgoing(), 1, 0, 0, time.monotonic() + 30)
        out = RoundPayload(2, out.message, 1, zlib.crc32(out.message), 0, out.deadline)
        assert await b.handshaker.dial(a.settings.advertise) is not None
        pa = a.peers.get("b")
        assert pa is not None
        await a.exchange.sender.push(pa, out)

    asyncio.run(go())
    assert a.counters.keyframes_sent == 1
    assert b.inbox.queued[2]["a"].kind == pb.PAYLOAD_KIND_KEYFRAME

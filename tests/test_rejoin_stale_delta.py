"""A delta queued for a round whose sender's public copy this node forgot since (a
renewed handshake out of step, a drop, a catch-up) is discarded with the copy: it can
never be applied, so the mix must neither apply it nor drop its sender for it, even
when the sender's keyframe of a later round has arrived meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from test_daemon_parts import hello, pair

from declora.node.daemon.sending import RoundPayload
from declora.proto import pb

DEADLINE = 120.0  # s: far beyond any load, so ending before it means not waiting for it


def test_a_forgotten_delta_is_skipped_after_the_next_rounds_keyframe(
    synthetic_jsonl: Path,
) -> None:
    """a's round-1 delta waits in b's inbox; a renewed handshake finds the two out of
    step (b forgets a's copy), then a's round 2 (a keyframe) arrives before b mixes
    round 1. Before: the keyframe set b's expected sequence again, so the mix of round
    1 applied the stale delta to the forgotten copy ("no public copy of 'a'") and
    dropped a."""
    (da, _), (a, b) = pair(synthetic_jsonl, round_deadline=0.5)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await da.run_round(a, train=True)  # b runs no round: a's delta waits in b's inbox
        assert b.inbox.queued[1]["a"].kind == pb.PAYLOAD_KIND_DELTA
        a.progress.seq += 1  # a payload of a's that b never took
        assert await a.handshaker.dial(b.settings.advertise) is not None
        assert b.peers.peers["a"].expected_seq is None  # out of step: copy forgotten
        await da.run_round(a, train=True)  # round 2: b takes a keyframe
        assert b.inbox.queued[2]["a"].kind == pb.PAYLOAD_KIND_KEYFRAME
        b.exchange.mix(1, 1)
        assert b.peers.peers["a"].live and b.exchange.last_contributors == []
        b.exchange.mix(2, 1)  # the keyframe restores the copy: a mixes again

    asyncio.run(go())
    assert b.peers.peers["a"].live and b.exchange.last_contributors == ["a"]


def test_a_dropped_peers_queued_delta_goes_with_its_copy(synthetic_jsonl: Path) -> None:
    """A drop forgets the copy: a delta queued before it cannot be applied after the
    peer is back, and is discarded at once (a keyframe is kept: it needs no copy)."""
    (da, _), (a, b) = pair(synthetic_jsonl, round_deadline=0.5)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await da.run_round(a, train=True)
        assert "a" in b.inbox.arrived(1)
        b.peers.drop(b.peers.peers["a"], "test")
        assert "a" not in b.inbox.queued.get(1, {})  # never mixed...
        assert "a" in b.inbox.arrived(1)  # ...yet delivered: not waited for again

    asyncio.run(go())


def test_a_round_does_not_wait_again_for_a_delta_it_discarded(synthetic_jsonl: Path) -> None:
    """a delivers round 1, then restarts from an older checkpoint: its Hello (seq 0,
    round 0) is out of step, so b forgets a's copy and discards the delta. a sends no
    other round-1 payload; before, b's round waited for one to its deadline and dropped
    a ("no payload for round 1 within the deadline")."""
    (da, _), (a, b) = pair(synthetic_jsonl, round_deadline=0.5)

    async def go() -> bool:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await da.run_round(a, train=True)
        b.progress.seq = 1  # b pushed its round 1
        b.peers.admit(
            hello(node_id="a", swarm_id="parts", seq=0, round=0,
                  listen_address=a.settings.advertise)
        )  # fmt: skip
        assert "a" not in b.inbox.queued.get(1, {})
        deadline = time.monotonic() + DEADLINE
        out = RoundPayload(1, b"", 1, 0, 0, deadline)
        await b.exchange.wait_for(1, deadline, out, {"a"}, {})
        return time.monotonic() < deadline  # it ended before the deadline: no wait

    assert asyncio.run(go()), "the round waited to its deadline for a discarded delta"
    assert b.peers.peers["a"].live

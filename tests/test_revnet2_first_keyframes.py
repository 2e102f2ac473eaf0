"""Every node's copy of a neighbour equals that neighbour's public copy, whatever seq
a (re-)handshake claims (review of 7fc16bc: a Hello at seq <= 1 installs the copy at
the shared init, expecting seq 1). A delta is taken only at the seq the copy expects,
so a claim at seq <= 1 is safe wherever the claimant's seq-1 message is relative to
the init of the round it is for: a neighbour resumed at seq 1, one whose public copy
jumped (a catch-up), a late joiner under each method (DECA's block, Kill-and-Revive's
mask), a member claiming seq 0 far into the run. Before 7fc16bc each fails at that
rule's own assertions (no keyframe planned, a copy at the init expecting seq 1); the
copies were right there too, by keyframes."""

from __future__ import annotations

import asyncio
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_daemon_parts import pair

from declora.node.daemon.daemon import Parts
from declora.node.daemon.sending import RoundPayload
from declora.proto import pb


def begin_round(p: Parts, r: int, shift: float = 0.0) -> RoundPayload:
    """Move `p`'s adapter by `shift`, then what `Exchange.exchange` does before it
    pushes: round `r`'s delta (and z), the next seq."""
    if shift:
        p.node.trainer.set_vector(p.node.vector() + np.float32(shift))
    delta = p.node.outgoing()
    tracker = p.node.tracker_outgoing() or b""
    message = delta + tracker
    p.progress.seq += 1
    return RoundPayload(r, message, 1, zlib.crc32(message), len(tracker), time.monotonic() + 30)


def ends_round(p: Parts, r: int) -> None:
    """`p` mixes round `r` with what arrived (its degree 1) and moves on."""
    p.exchange.mix(r, 1)
    p.progress.round = r


def test_a_neighbour_resumed_at_seq_1_is_asked_a_keyframe(synthetic_jsonl: Path) -> None:
    """a delivered rounds 1-2 (b expects seq 3), then resumes from its round-1
    checkpoint (seq 1, its public copy one delta past the init) and shakes hands: b
    holds it at the init expecting seq 1, so a's next delta (seq 2, on its round-1
    copy) is answered need_keyframe and the copy ends equal to a's."""
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        pa = a.peers.get("b")
        assert pa is not None
        await a.exchange.sender.push(pa, begin_round(a, 1, 0.01))
        saved, seq = a.node.snapshot(), a.progress.seq  # a's round-1 checkpoint
        ends_round(b, 1)
        await a.exchange.sender.push(pa, begin_round(a, 2, 0.02))
        ends_round(b, 2)
        pb_ = b.peers.get("a")
        assert pb_ is not None and pb_.expected_seq == 3
        a.node.restore(saved)  # a restarts with --resume from round 1
        a.progress.seq, a.progress.round = seq, 1
        assert await a.handshaker.dial(b.settings.advertise) is not None
        assert pb_.expected_seq == 1 and not pa.send_keyframe
        await a.exchange.sender.push(pa, begin_round(a, 3, 0.03))
        assert b.inbox.queued[3]["a"].kind == pb.PAYLOAD_KIND_KEYFRAME
        ends_round(b, 3)

    asyncio.run(go())
    assert a.counters.keyframes_sent == 1
    np.testing.assert_array_equal(b.node.gossip.peers["a"], a.node.gossip.public)


def test_a_neighbour_whose_copy_jumped_at_seq_1_is_asked_a_keyframe(
    synthetic_jsonl: Path,
) -> None:
    """a takes a state before its first round (a catch-up: seq 0 -> 1, its public copy
    jumps) and then shakes hands: its Hello's seq 1 makes b hold it at the init, and a
    does not plan a keyframe (its seq is not past 1); its delta (seq 2) is answered
    need_keyframe, so b's copy is a's jumped one, not the init plus a delta."""
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        state = a.node.vector() + np.float32(0.05)
        a.node.take_state(state)  # what `StateTransfer._take_state` does
        a.peers.forget_all_copies()
        a.progress.round, a.progress.seq = 3, a.progress.seq + 1
        b.progress.round = 3
        assert await a.handshaker.dial(b.settings.advertise) is not None
        pa = a.peers.get("b")
        assert pa is not None and not pa.send_keyframe
        await a.exchange.sender.push(pa, begin_round(a, 4, 0.01))
        ends_round(b, 4)

    asyncio.run(go())
    assert a.counters.keyframes_sent == 1
    np.testing.assert_array_equal(b.node.gossip.peers["a"], a.node.gossip.public)


def test_a_claim_of_seq_0_far_into_the_run_keeps_nothing_of_before(
    synthetic_jsonl: Path,
) -> None:
    """A member at round 5 whose Hello says seq 0: what it queued goes, its copy
    restarts at the init (only its own column: it could send any keyframe anyway),
    and b, past seq 1, sends it a keyframe."""
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        pa = a.peers.get("b")
        assert pa is not None
        for r in range(1, 6):
            begin_round(b, r)
            await a.exchange.sender.push(pa, begin_round(a, r, 0.01))
            if r < 5:
                ends_round(b, r)
        assert "a" in b.inbox.queued[5]
        a.progress.seq = 0  # the claim
        assert await a.handshaker.dial(b.settings.advertise) is not None

    asyncio.run(go())
    pb_ = b.peers.get("a")
    assert pb_ is not None and (pb_.expected_seq, pb_.send_keyframe) == (1, True)
    assert "a" not in b.inbox.queued.get(5, {})
    np.testing.assert_array_equal(b.node.gossip.peers["a"], b.node.initial)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"gradient_tracking": True},
        {"robust_mixing": "clip"},
        {"method": "conlora"},
        {"method": "decaf"},
        {"method": "kill-revive"},
        {"method": "deca", "deca_blocks": 2, "deca_block_rounds": 1},
    ],
    ids=["dec-lora", "tracking", "robust", "conlora", "decaf", "kill-revive", "deca"],
)
def test_a_late_joiner_s_first_delta_lands_on_its_copy(
    synthetic_jsonl: Path, options: dict[str, object]
) -> None:
    """b trained alone to round k (DECA: into another block than round 1's); a, fresh
    (seq 0), aligned to round k, shakes hands: b holds it at its own init (DECA: the
    base of round k+1's block) and takes a's first delta (seq 1, round k+1) there,
    without a keyframe; b's copy equals a's public copy."""
    _, (a, b) = pair(synthetic_jsonl, **options)
    k = 3
    if options.get("method") == "deca":
        lm = b.node.deca.lm  # type: ignore[attr-defined]
        k = next(r for r in range(1, 9) if lm.block_at(r + 1) != lm.block_at(1))

    async def go() -> None:
        for r in range(1, k + 1):
            b.node.train(1, None, r)
            begin_round(b, r)
            ends_round(b, r)
        a.progress.round = k
        assert await a.handshaker.dial(b.settings.advertise) is not None
        pa = a.peers.get("b")
        assert pa is not None and not pa.send_keyframe
        a.node.train(1, None, k + 1)
        await a.exchange.sender.push(pa, begin_round(a, k + 1))

    asyncio.run(go())
    assert a.counters.keyframes_sent == 0
    msg = b.inbox.queued[k + 1]["a"]
    assert msg.kind == pb.PAYLOAD_KIND_DELTA
    b.node.accept_delta("a", msg.vector, msg.scale)  # what b's round-(k+1) mix applies first
    np.testing.assert_array_equal(b.node.gossip.peers["a"], a.node.gossip.public)

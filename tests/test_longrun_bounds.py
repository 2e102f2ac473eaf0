"""A node left running for days among ids that come and go keeps what it remembers of
them bounded (audit "longrun"): each test drives one table with thousands of distinct
ids or names, the way churn (restarts under new ids, laptops, mDNS announcements) or a
member cycling ids would over time, and prints its size (`pytest -s`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
from test_daemon_parts import hello, pair

from declora.node.codecs import make_codec
from declora.node.daemon import admission
from declora.node.daemon.daemon import Parts
from declora.node.limits import MAX_KEYS, NodeLimits
from declora.node.wire import chunks, make_header
from declora.proto import pb


def test_push_counts_stay_bounded_while_the_round_stands_still(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: 10,000 ids pushing while the node waits at round 0 left 10,000 counts
    (nothing is dropped until the round moves on)."""
    limits = NodeLimits(
        handshakes_per_minute=600, pushes_per_round=6, pulls_per_minute=12, rounds_ahead=8
    )
    with caplog.at_level(logging.WARNING, logger="declora.node.limits"):
        for i in range(10_000):
            limits.check_push(f"id{i}", 1, 0)
    size = len(limits.pushes.counts)
    print(f"after 10,000 distinct sender ids at round 0: len(pushes.counts) = {size:,}")
    assert size == MAX_KEYS
    assert ("id9999", 1) in limits.pushes.counts  # the newest kept, the oldest gone
    assert ("id0", 1) not in limits.pushes.counts
    assert "forgetting the oldest" in caplog.text
    # the limit still holds for a sender whose count is kept
    for _ in range(5):
        limits.check_push("id9999", 1, 0)
    with pytest.raises(Exception, match="more than 6 pushes"):
        limits.check_push("id9999", 1, 0)


def keyframe_stream(b: Parts, sender: str, session: bytes, round: int):  # type: ignore[no-untyped-def]
    """A keyframe of zeros from `sender` to b for `round`."""
    data = make_codec("fp32").encode(np.zeros(b.node.size, np.float32), np.random.default_rng(0))
    header = make_header(
        sender_id=sender, swarm_id="parts", fingerprint=b.lm.fingerprint, round=round,
        sender_degree=1, kind=pb.PAYLOAD_KIND_KEYFRAME, codec="fp32", seq=1, data=data,
        schema=b.lm.schema, session=session, receiver_id="b",
    )  # fmt: skip

    async def stream():  # type: ignore[no-untyped-def]
        for c in chunks(header, data, 1 << 20):
            yield c

    return stream()


def test_ids_that_come_and_go_leave_no_payloads_queued(synthetic_jsonl: Path) -> None:
    """Before: each id that pushed a keyframe for round 1 while b waited at round 0,
    then left and was evicted from the peer table, kept its keyframe (a whole adapter)
    queued: 300 ids, 300 keyframes."""
    _, (_, b) = pair(synthetic_jsonl)
    b.peers.max_known = 8
    ids = 300

    async def go() -> None:
        for i in range(ids):
            pid = f"x{i}"
            joined = hello(
                node_id=pid, swarm_id="parts", listen_address=f"127.0.0.1:{20000 + i}", seq=5
            )
            peer = b.peers.admit(joined)
            assert peer is not None
            ack = await b.inbox.receive(keyframe_stream(b, pid, peer.token_in, 1))
            assert ack.accepted, ack
            b.peers.drop(peer, "left")

    asyncio.run(go())
    queued = sum(len(q) for q in b.inbox.queued.values())
    print(f"after {ids} ids that pushed a keyframe and left: {queued} payloads queued")
    print(f"peer table: {len(b.peers.peers)} entries (max_known {b.peers.max_known})")
    assert len(b.peers.peers) <= b.peers.max_known
    assert queued <= b.peers.max_known
    assert set(b.inbox.queued.get(1, {})) <= set(b.peers.peers)
    # a dropped id's keyframe goes with its copy (since 56f7f31), delivered all the same
    assert f"x{ids - 1}" in b.inbox.arrived(1)


def test_resolved_names_are_bounded(synthetic_jsonl: Path) -> None:
    """Before: every DNS name discovery offered over the node's life stayed recorded."""
    _, (_, b) = pair(synthetic_jsonl)
    table = b.handshaker.admission
    table.settings = table.settings.model_copy(update={"peers": ["seed.lan:7070"]})
    table.note_resolved("seed.lan:7070", {"10.1.0.1"})  # a --peers name: kept
    for i in range(10_000):
        table.note_resolved(f"node{i}.lan:7070", {f"10.0.{i // 250}.{i % 250 + 1}"})
    size = len(table.resolved)
    print(f"after 10,000 distinct DNS names resolved: len(resolved) = {size:,}")
    assert size == admission.MAX_RESOLVED + 1
    assert table.vouched("seed.lan:7070", "10.1.0.1")
    assert table.vouched("node9999.lan:7070", "10.0.39.250")  # the newest still vouch
    assert not table.vouched("node0.lan:7070", "10.0.0.1")  # the oldest, until resolved again
    table.note_resolved("node0.lan:7070", {"10.0.0.1"})
    assert table.vouched("node0.lan:7070", "10.0.0.1")

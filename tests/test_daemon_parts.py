"""The daemon's parts in-process: the handshake rule, the peer table and the round
exchange, wired through an in-memory transport (`memory_transport`), no sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SPEC
from memory_transport import MemoryNetwork, MemoryTransport

from declora.node import PROTOCOL_VERSION
from declora.node.daemon import Daemon
from declora.node.daemon.daemon import Parts
from declora.node.daemon.handshake import check_hello
from declora.node.daemon.service import SwarmService
from declora.node.daemon.status import state_digest
from declora.node.settings import NodeSettings
from declora.node.wire import WireError, chunks, make_header
from declora.proto import pb

RULE = {"node_id": "me", "swarm_id": "s", "fingerprint": "f" * 16, "gradient_tracking": False}


def hello(**changes: object) -> pb.Hello:
    fields: dict[str, object] = {
        "protocol_version": PROTOCOL_VERSION,
        "node_id": "peer",
        "swarm_id": "s",
        "fingerprint": "f" * 16,
    }
    return pb.Hello(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, ""),
        ({"protocol_version": PROTOCOL_VERSION + 1}, "protocol version"),
        ({"swarm_id": "other"}, "swarm 'other' != 's'"),
        ({"fingerprint": "0" * 16}, "fingerprint"),
        ({"gradient_tracking": True}, "gradient tracking is on there and off here"),
        ({"node_id": ""}, "empty node id"),
        ({"node_id": "me"}, "this node's own id"),
    ],
)
def test_check_hello_names_the_reason(changes: dict[str, object], reason: str) -> None:
    got = check_hello(hello(**changes), **RULE)  # type: ignore[arg-type]
    assert (got == "") if not reason else (reason in got)


def settings(name: str, data: Path, i: int, peers: list[str], **extra: object) -> NodeSettings:
    return NodeSettings(
        node_id=name,
        swarm_id="parts",
        listen=f"127.0.0.1:{7400 + i}",
        peers=peers,
        model=TINY_SPEC.model,
        rank=TINY_SPEC.rank,
        alpha=TINY_SPEC.alpha,
        max_length=TINY_SPEC.max_length,
        data=str(data),
        partition=f"{i}/2",
        local_steps=2,
        lr=0.05,
        round_deadline=2.0,
        **extra,  # type: ignore[arg-type]
    )


def pair(data: Path, **extra: object) -> tuple[list[Daemon], list[Parts]]:
    """Two daemons' parts, served on one in-memory network, not yet introduced."""
    network = MemoryNetwork()
    daemons, parts = [], []
    for i, name in enumerate(("a", "b")):
        s = settings(name, data, i, [], **extra)
        d = Daemon(s, MemoryTransport(network, s, None))
        p = d.build()
        network.serve(s.advertise, SwarmService(p))
        daemons.append(d)
        parts.append(p)
    return daemons, parts


def test_handshake_admits_both_sides_at_the_shared_init(synthetic_jsonl: Path) -> None:
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        peer = await a.handshaker.dial(b.settings.advertise)
        assert peer is not None and peer.node_id == "b"

    asyncio.run(go())
    pa, pb_ = a.peers.get("b"), b.peers.get("a")
    assert pa is not None and pb_ is not None and pa.live and pb_.live
    # both still at the seeded init: no keyframe, the next delta is seq 1
    assert (pa.expected_seq, pa.send_keyframe) == (1, False)
    assert a.node.knows_peer("b") and b.node.knows_peer("a")


def test_peer_table_drop_forgets_the_copy_and_caps_neighbours(synthetic_jsonl: Path) -> None:
    _, (a, _b) = pair(synthetic_jsonl, max_neighbors=1)
    first = a.peers.admit(hello(node_id="x", listen_address="127.0.0.1:1", fingerprint="?"))
    assert first is not None and a.node.knows_peer("x")
    assert a.peers.admit(hello(node_id="y", listen_address="127.0.0.1:2")) is None  # at capacity
    a.peers.drop(first, "test")
    assert not first.live and first.expected_seq is None and not a.node.knows_peer("x")
    assert a.peers.live == []


def test_one_round_in_memory_mixes_to_the_mean(synthetic_jsonl: Path) -> None:
    """fp32, two nodes of degree 1: MH weights 1/2, so both end at the mean of their
    trained adapters (Dec-LoRA's exact average) and agree."""
    (da, db), (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await asyncio.gather(da.run_round(a, train=True), db.run_round(b, train=True))

    asyncio.run(go())
    assert a.progress.round == b.progress.round == 1
    np.testing.assert_allclose(a.node.vector(), b.node.vector(), rtol=0, atol=1e-6)
    assert a.report.self_weight == pytest.approx(0.5)
    assert a.node.bytes_sent > 0 and a.node.bytes_received == b.node.bytes_sent
    assert a.peers.get("b").expected_seq == 2  # type: ignore[union-attr]


def test_a_silent_neighbour_is_dropped_at_the_deadline(synthetic_jsonl: Path) -> None:
    (da, _db), (a, b) = pair(synthetic_jsonl)

    async def go() -> float:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await da.run_round(a, train=False)  # b never runs its round
        return loop.time() - t0

    took = asyncio.run(go())
    peer = a.peers.get("b")
    assert peer is not None and not peer.live and peer.missed == 1
    assert a.settings.round_deadline <= took < a.settings.round_deadline + 2
    assert a.report.self_weight == 1.0  # nobody delivered: the node keeps its own


def test_a_refused_push_changes_nothing(synthetic_jsonl: Path) -> None:
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        before = state_digest(b.node, b.exchange.inbox)
        data = a.node.outgoing()
        header = make_header(
            sender_id="a",
            swarm_id="parts",
            fingerprint=a.lm.fingerprint,
            round=0,  # not after b's round 0: stale
            sender_degree=1,
            kind=pb.PAYLOAD_KIND_DELTA,
            codec="fp32",
            seq=1,
            data=data,
            schema=a.lm.schema,
        )

        async def stream():  # type: ignore[no-untyped-def]
            for c in chunks(header, data, 1 << 20):
                yield c

        with pytest.raises(WireError) as info:
            await b.exchange.receive(stream())
        assert info.value.counter == "stale_round"
        assert state_digest(b.node, b.exchange.inbox) == before

    asyncio.run(go())

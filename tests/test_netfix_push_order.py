"""Pushes that share a slow uplink go one at a time (`sending.Sender._choose_order`):
in parallel each got a share of the uplink, and at 0.5 Mbit/s with two neighbours one
fell below the receivers' minimum pace now and then and was cut (`slow_stream`). Real
gRPC on 127.0.0.1: node a's parts push to two fake neighbours served in-process, whose
acks take `HOLD` s (a slow transfer, as a receiver sees it)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from daemon_helpers import HOST, free_ports, serve_fake_peer
from test_daemon_parts import hello
from test_peer_stall import node_a

from declora.node.daemon import sending
from declora.node.daemon.daemon import Parts
from declora.node.wire import Pace
from declora.proto import pb, pb_grpc

ALLOWED = 4.0  # s a receiver gives one push here (PUSH_PACE for these tests)
HOLD = 2.5  # s a slow neighbour takes for a push: more than half of ALLOWED
QUICK = 0.4  # s a quick one takes (long enough that two pushes in parallel overlap)


class Uplink:
    """What the fake neighbours saw: the most pushes streaming at once, per round."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most: dict[int, int] = {}
        self.hold = HOLD


class Neighbour(pb_grpc.SwarmServicer):
    def __init__(self, uplink: Uplink) -> None:
        self.uplink = uplink

    def Push(
        self, request_iterator: Iterator[pb.Chunk], context: grpc.ServicerContext
    ) -> pb.PushAck:
        up = self.uplink
        with up.lock:
            up.now += 1
        chunks = list(request_iterator)
        r = int(chunks[0].header.round)
        with up.lock:
            up.most[r] = max(up.most.get(r, 0), up.now)
        threading.Event().wait(up.hold)
        with up.lock:
            up.now -= 1
        return pb.PushAck(accepted=True)


def run_rounds(parts: Parts, uplink: Uplink, holds: list[float]) -> dict[int, int]:
    """One exchange per entry of `holds` (the neighbours' ack time in it); the most
    pushes that streamed at once in each round."""

    async def go() -> None:
        for r, hold in enumerate(holds, start=1):
            uplink.hold = hold
            await parts.exchange.exchange(r)

    asyncio.run(go())
    return uplink.most


@pytest.fixture
def pair_of_neighbours(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Parts, Uplink]]:
    monkeypatch.setattr(sending, "PUSH_PACE", Pace(min_seconds=ALLOWED, bytes_per_second=1e9))
    uplink = Uplink()
    servers = []
    a = node_a(synthetic_jsonl)
    for name, port in zip(("n1", "n2"), free_ports(2), strict=True):
        servers.append(serve_fake_peer(Neighbour(uplink), f"{HOST}:{port}"))
        welcome = hello(
            node_id=name, swarm_id="parts", listen_address=f"{HOST}:{port}", round=10**6
        )
        assert a.peers.admit(welcome) is not None
    try:
        yield a, uplink
    finally:
        for server in servers:
            server.stop(None)


def test_a_slow_uplinks_pushes_go_one_at_a_time(
    pair_of_neighbours: tuple[Parts, Uplink],
) -> None:
    """Before: both pushes of every round streamed at once."""
    a, uplink = pair_of_neighbours
    # round 1 in parallel was slow: rounds 2 and 3 one at a time; round 3's were quick
    # again (2 x QUICK < ALLOWED / 4): round 4 in parallel again
    most = run_rounds(a, uplink, [HOLD, HOLD, QUICK, QUICK])
    assert most == {1: 2, 2: 1, 3: 1, 4: 2}, most
    assert all(p.live for p in a.peers.peers.values())


def test_a_fast_uplinks_pushes_stay_parallel(pair_of_neighbours: tuple[Parts, Uplink]) -> None:
    a, uplink = pair_of_neighbours
    assert run_rounds(a, uplink, [QUICK, QUICK, QUICK]) == {1: 2, 2: 2, 3: 2}

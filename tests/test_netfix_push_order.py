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
    """Takes each push, records its round, and acks it after the uplink's `hold` s
    (its own `hold`, when set)."""

    def __init__(self, uplink: Uplink, hold: float | None = None) -> None:
        self.uplink = uplink
        self.hold = hold
        self.rounds: list[int] = []

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
        self.rounds.append(r)
        threading.Event().wait(up.hold if self.hold is None else self.hold)
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
def neighbours(uplink: Uplink) -> list[Neighbour]:
    return [Neighbour(uplink), Neighbour(uplink)]


@pytest.fixture
def uplink() -> Uplink:
    return Uplink()


@pytest.fixture
def pair_of_neighbours(
    synthetic_jsonl: Path,
    monkeypatch: pytest.MonkeyPatch,
    uplink: Uplink,
    neighbours: list[Neighbour],
) -> Iterator[tuple[Parts, Uplink]]:
    monkeypatch.setattr(sending, "PUSH_PACE", Pace(min_seconds=ALLOWED, bytes_per_second=1e9))
    servers = []
    a = node_a(synthetic_jsonl)
    for i, (name, port) in enumerate(zip(("n1", "n2"), free_ports(2), strict=True)):
        servers.append(serve_fake_peer(neighbours[i], f"{HOST}:{port}"))
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
    # unmeasured, round 1 goes one at a time; it was slow: rounds 2 and 3 too; round 3's
    # were quick again (2 x QUICK < ALLOWED / 4): round 4 in parallel again
    most = run_rounds(a, uplink, [HOLD, HOLD, QUICK, QUICK])
    assert most == {1: 1, 2: 1, 3: 1, 4: 2}, most
    assert all(p.live for p in a.peers.peers.values())


def test_a_fast_uplinks_pushes_stay_parallel(pair_of_neighbours: tuple[Parts, Uplink]) -> None:
    a, uplink = pair_of_neighbours
    # unmeasured, round 1 goes one at a time; quick: in parallel from round 2
    assert run_rounds(a, uplink, [QUICK, QUICK, QUICK]) == {1: 1, 2: 2, 3: 2}


@pytest.mark.slow  # ~10 s of pushes; test_revnet_push_turn.py's held ack stays; make test-slow
def test_a_neighbour_that_holds_its_ack_delays_the_other_by_its_share_only(
    pair_of_neighbours: tuple[Parts, Uplink], neighbours: list[Neighbour]
) -> None:
    """Guard: one at a time (round 1, unmeasured), n1 holds its ack past the round's
    deadline (10 s); its turn ends at its share of the round (5 s), so n2 still gets
    round 1's push (a turn held until the ack: n2's push waited past the deadline)."""
    a, uplink = pair_of_neighbours
    neighbours[0].hold = 12.0
    uplink.hold = 0.0
    run_rounds(a, uplink, [0.0])
    assert neighbours[1].rounds == [1], (neighbours[0].rounds, neighbours[1].rounds)
    assert a.counters.rejected["push_timeout"] == 1  # n1's ack: late, counted

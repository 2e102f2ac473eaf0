"""Pushes that go one at a time (`sending`: a slow uplink, or the first round) take
their turns in the order of how long each neighbour's last turn lasted, shortest
first: a neighbour that holds its ack goes last from the next round on, and keeps no
other push waiting. Before, the order was the live set's, every round: n1 holding its
ack kept n2's push waiting for n1's share of every round, and n2's round waited for
that payload. Real gRPC on 127.0.0.1: node a's parts push to two fake neighbours."""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from daemon_helpers import HOST, free_ports, serve_fake_peer
from test_daemon_parts import hello
from test_peer_stall import node_a

from declora.node.daemon import sending
from declora.node.daemon.sending import RoundPayload
from declora.node.wire import Pace
from declora.proto import pb, pb_grpc

BOUND = 20.0  # s n1 waits for n2's push before it acks anyway (a bound, not a timing)
ROUND = 6.0  # s of a round: each push's share of it is 3 s


class Neighbour(pb_grpc.SwarmServicer):
    """Reads each push and notes its arrival (round, name) in `arrivals`; with `other`
    it holds its ack until `other` has that round's push (at most `BOUND` s)."""

    def __init__(self, name: str, arrivals: list[tuple[int, str]], other: Neighbour | None):
        self.name = name
        self.arrivals = arrivals
        self.other = other
        self.lock = threading.Lock()
        self.got: dict[int, threading.Event] = {}

    def event(self, r: int) -> threading.Event:
        with self.lock:
            return self.got.setdefault(r, threading.Event())

    def Push(
        self, request_iterator: Iterator[pb.Chunk], context: grpc.ServicerContext
    ) -> pb.PushAck:
        r = int(next(request_iterator).header.round)
        for _ in request_iterator:
            pass
        self.arrivals.append((r, self.name))
        self.event(r).set()
        if self.other is not None:
            self.other.event(r).wait(BOUND)
        return pb.PushAck(accepted=True)


def test_a_neighbour_that_holds_its_ack_goes_last_in_the_next_round(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a receiver gives a push 4 s here: round 1's pushes (3 s) keep them one at a time
    monkeypatch.setattr(sending, "PUSH_PACE", Pace(min_seconds=4.0, bytes_per_second=1e9))
    a = node_a(synthetic_jsonl)
    arrivals: list[tuple[int, str]] = []
    n2 = Neighbour("n2", arrivals, None)
    n1 = Neighbour("n1", arrivals, n2)  # holds its ack until n2 has its push
    servers, live = [], []
    for n, port in zip((n1, n2), free_ports(2), strict=True):
        servers.append(serve_fake_peer(n, f"{HOST}:{port}"))
        welcome = hello(node_id=n.name, swarm_id="parts", listen_address=f"{HOST}:{port}")
        peer = a.peers.admit(welcome)
        assert peer is not None
        live.append(peer)
    sender = a.exchange.sender

    async def go() -> None:
        for r in (1, 2):
            delta = a.node.outgoing()
            a.progress.seq += 1
            out = RoundPayload(r, delta, 2, zlib.crc32(delta), 0, time.monotonic() + ROUND)
            assert sender.one_at_a_time  # round 1: unmeasured; round 2: round 1 took 3 s
            await sender.send_round(live, out)

    try:
        asyncio.run(go())
    finally:
        for server in servers:
            server.stop(None)
    # round 1: n1's turn first (the live set's order), held to its share; round 2: n2
    # first, n1 (its last turn the longest) after it
    assert arrivals == [(1, "n1"), (1, "n2"), (2, "n2"), (2, "n1")], arrivals
    assert all(p.live for p in live)

"""Pushes that go one at a time (`sending`: a slow uplink, or the first round) hand on
their turn when their last chunk is written, not when the ack comes: a neighbour that
holds its ack delays no other push. Before, n1 holding its ack kept n2's push waiting
for n1's share of the round (5 s of a 10 s round, every round), and n2's round waited
for that payload. Real gRPC on 127.0.0.1: node a's parts push to two fake neighbours."""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
from daemon_helpers import HOST, free_ports, serve_fake_peer
from test_daemon_parts import hello
from test_peer_stall import node_a

from declora.node.daemon.sending import RoundPayload
from declora.proto import pb, pb_grpc

BOUND = 20.0  # s n1 waits for n2's push before it acks anyway (a bound, not a timing)


class Neighbour(pb_grpc.SwarmServicer):
    """Reads each push, sets `got`, then acks it once `wait_for` is set (at most
    `BOUND` s), recording whether it was."""

    def __init__(self, wait_for: threading.Event | None = None) -> None:
        self.got = threading.Event()
        self.wait_for = wait_for
        self.saw_other: list[bool] = []

    def Push(
        self, request_iterator: Iterator[pb.Chunk], context: grpc.ServicerContext
    ) -> pb.PushAck:
        for _ in request_iterator:
            pass
        self.got.set()
        if self.wait_for is not None:
            self.saw_other.append(self.wait_for.wait(BOUND))
        return pb.PushAck(accepted=True)


def test_a_neighbour_that_holds_its_ack_keeps_no_other_push_waiting(
    synthetic_jsonl: Path,
) -> None:
    a = node_a(synthetic_jsonl)
    n2 = Neighbour()
    n1 = Neighbour(wait_for=n2.got)  # holds its ack until n2 has its push
    servers, live = [], []
    for name, n, port in zip(("n1", "n2"), (n1, n2), free_ports(2), strict=True):
        servers.append(serve_fake_peer(n, f"{HOST}:{port}"))
        welcome = hello(node_id=name, swarm_id="parts", listen_address=f"{HOST}:{port}")
        peer = a.peers.admit(welcome)
        assert peer is not None
        live.append(peer)
    try:
        sender = a.exchange.sender
        assert sender.one_at_a_time  # unmeasured: one at a time, n1's turn first
        delta = a.node.outgoing()
        a.progress.seq += 1
        # a long round: n1's share of it (500 s) is far beyond BOUND
        out = RoundPayload(1, delta, 2, zlib.crc32(delta), 0, time.monotonic() + 1000)
        asyncio.run(sender.send_round(live, out))
    finally:
        for server in servers:
            server.stop(None)
    assert n1.saw_other == [True]  # n2's push came while n1 held its ack
    assert n2.got.is_set()

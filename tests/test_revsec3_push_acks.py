"""A member that reads none of its push acknowledgements holds its network's share of
unread answers, no more (revsec3; a real node, real gRPC on 127.0.0.1). The member
joins (a handshake, its session) and pushes valid keyframes from 127.0.0.2 on a
connection that announces a stream window of 0 bytes (`revsec2_h2.Stalled`): no byte
of a PushAck can reach it. A Push's answer was not counted in
`first_message.FirstMessage.unread`: each acknowledgement held its call's place in
gRPC's cap for as long as the connection lasted, after its handler had freed the
Push pool's place: 11, 19, 27 held after 3 passes over the rounds the node would
read (8 more each time its round moved on), until every call of the node would be
refused. Now 8, 8, 8."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from daemon_helpers import Cluster, free_ports, train_args
from revsec2_h2 import DATA, END_HEADERS, END_STREAM, HEADERS, Stalled, frame
from test_attacks import ATTACKER_HOST, Attacker, serve_attacker

from declora.node.daemon.first_message import UNREAD_PER_NETWORK
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD

pytestmark = pytest.mark.slow  # a real node (~20 s on a loaded machine): make test-slow
START = 150.0  # seconds for the node to import torch, build its model and serve
PUSH = "/declora.v1.Swarm/Push"
PUSHES = 6  # --max-pushes-per-round (default)
FRAME = 16384
PASSES = 3  # HTTP/2's default largest frame


def poll(what: str, check: Callable[[], bool], seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def push(stalled: Stalled, messages: list[bytes]) -> int:
    """A Push of `messages` (serialized chunks) on `stalled`'s connection; its stream."""
    stream, stalled.next_stream = stalled.next_stream, stalled.next_stream + 2
    body = b"".join(b"\x00" + struct.pack(">I", len(m)) + m for m in messages)
    pieces = [body[i : i + FRAME] for i in range(0, len(body), FRAME)]
    data = b"".join(frame(DATA, 0, stream, p) for p in pieces[:-1])
    data += frame(DATA, END_STREAM, stream, pieces[-1])
    stalled.send(frame(HEADERS, END_HEADERS, stream, stalled.headers(PUSH)) + data)
    return stream


@pytest.fixture
def victim(cluster: Cluster) -> Iterator[Any]:
    ports = free_ports(3)
    listens = [f"127.0.0.1:{p}" for p in ports[1:]]  # the attacker's server's (members')
    run = ["--rounds", "0", "--eval-every", "0", "--swarm-id", cluster.swarm_id]
    run += ["--peers", listens[0]]
    n0 = cluster.add("n0", ports[0], [*train_args(cluster.data), *run]).start()
    reply = cluster.wait_until("n0 answering", n0.status, START, [n0])
    server, _ = serve_attacker(ports[1:])
    attacker = Attacker(n0, cluster.swarm_id, reply.fingerprint)
    try:
        yield n0, attacker, listens
    finally:
        attacker.close()
        server.stop(grace=None)


def handled(n0: Any) -> int:
    """Pushes the node took or refused (the interceptor's refusals end the stream)."""
    reply = n0.status()
    return reply.bytes_received + sum(reply.rejected.values())


def test_a_member_reading_none_of_its_acks_holds_its_share(victim: Any) -> None:
    n0, attacker, listens = victim
    attacker.schema = attacker.read_schema("reader", listens[1])
    session = attacker.join("stalls", listens[0])
    stalled = Stalled(n0.address, ATTACKER_HOST)

    def ended(stream: int) -> bool:
        return stream in stalled.ended()

    try:
        streams, held = [], []
        for _ in range(PASSES):  # each time the rounds the node reads from now
            first = n0.status().round + 1
            for r in range(first, first + MAX_ROUNDS_AHEAD):
                keyframe = [
                    c.SerializeToString() for c in attacker.keyframe("stalls", session, r, 0)
                ]
                for _ in range(PUSHES):  # one at a time: none refused for pushes in flight
                    before = handled(n0)
                    stream = push(stalled, keyframe)
                    streams.append(stream)
                    poll("the push handled", lambda s=stream, b=before: ended(s) or handled(n0) > b)
            held.append(len(streams) - len(stalled.ended() & set(streams)))
        assert held == [UNREAD_PER_NETWORK] * PASSES  # before: every acknowledged push
    finally:
        stalled.close()

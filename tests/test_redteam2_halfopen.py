"""Calls that never send their request message cut no node off (redteam2; real
daemons, real gRPC on 127.0.0.1). gRPC counts a call towards the server's cap from its
headers on and waits for its message for ever: 300 such Handshake calls from a
stranger (no credentials needed) held the node's 160 places, and every other call,
its neighbour's pushes and the operator's Status included, was refused `Concurrent
RPC limit exceeded!` for as long as they stayed open. Now (`first_message`) at most 64
wait at once, a newcomer cuts the oldest of the busiest network, and each is ended
after `first_message.WAIT_SECONDS`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from daemon_helpers import Cluster, live_ids

pytestmark = pytest.mark.slow  # a real pair under 300 header-only calls (attack 13)

HALF_OPEN = 300  # more than the node's cap (64 push streams + 96 other places)
PAIR_WAIT = 120.0  # seconds for the pair to start mixing (a loaded machine)


class HalfOpen:
    """`HALF_OPEN` Handshake calls to `target` that send headers and no message, each
    that ends opened again, until `done` (in a thread of their own); `codes`: how the
    node ended them."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.opened = threading.Event()
        self.done = threading.Event()
        self.codes: list[str] = []
        self.thread = threading.Thread(target=asyncio.run, args=(self.hold(),), daemon=True)

    async def hold(self) -> None:
        channels = [grpc.aio.insecure_channel(self.target) for _ in range(4)]

        def call(i: int) -> Any:  # headers only: no request is ever written
            return channels[i % 4].stream_unary("/declora.v1.Swarm/Handshake")()

        calls = [call(i) for i in range(HALF_OPEN)]
        async with asyncio.timeout(60):  # they reached the node: it ended some (cut)
            while not any(c.done() for c in calls):
                await asyncio.sleep(0.1)
        self.opened.set()
        while not self.done.is_set():
            await asyncio.sleep(0.1)
            for i, c in enumerate(calls):
                if c.done():
                    self.codes.append((await c.code()).name)
                    calls[i] = call(i)
        for c in calls:
            c.cancel()
        for ch in channels:
            await ch.close()


@pytest.fixture
def half_open(cluster: Cluster) -> Iterator[tuple[Cluster, HalfOpen]]:
    n0, n1 = cluster.static(2, [(0, 1)])
    n0.start(), n1.start()
    cluster.wait_until("n0 mixes with n1", lambda: "n1" in live_ids(n0.status()), PAIR_WAIT)
    attacker = HalfOpen(n0.address)
    attacker.thread.start()
    attacker.opened.wait(60)
    try:
        yield cluster, attacker
    finally:
        attacker.done.set()
        attacker.thread.join(60)


def test_half_open_calls_keep_no_caller_out(half_open: tuple[Cluster, HalfOpen]) -> None:
    cluster, attacker = half_open
    n0, n1 = cluster.nodes
    assert not attacker.done.is_set()
    # while they are open: the operator's Status is answered, and n0 still mixes with
    # n1 (before: refused, and n1's pushes and Hellos with it)
    first = cluster.wait_until("n0 answers Status", n0.status, 30.0, running=[n0])
    cluster.wait_until(
        "n0 mixes on with n1",
        lambda: (s := n0.status()) is not None and s.round >= first.round + 2 and live_ids(s),
        PAIR_WAIT,
        running=[n0, n1],
    )
    # and the node ends them: cut for a newer one (or their wait over)
    attacker.done.set()
    attacker.thread.join(60)
    assert attacker.codes
    # (UNAVAILABLE: a call past a connection's transport.STREAMS_PER_CONNECTION, refused
    # before the node saw it)
    ended = {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "UNAVAILABLE"}
    assert set(attacker.codes) <= ended, attacker.codes

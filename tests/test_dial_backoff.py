"""A candidate address whose live node refuses the handshake is re-dialled with
backoff (`Handshaker.connect_known`): BACKOFF_FIRST s after the first refusal, then
doubling up to BACKOFF_MAX_CONFIGURED; one where nothing answers yet (not listening,
still loading its model) is re-dialled on every call; a success forgets the backoff.
In-process over the in-memory transport, the clock passed as `now`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from memory_transport import MemoryNetwork, MemoryTransport
from test_daemon_parts import hello, settings

from declora.node.daemon import Daemon
from declora.node.daemon.daemon import Parts
from declora.node.daemon.peers import BACKOFF_FIRST, BACKOFF_MAX_CONFIGURED, FORGET_SECONDS
from declora.node.daemon.service import SwarmService
from declora.node.daemon.startup import LOADING
from declora.node.discovery import StaticDiscovery
from declora.proto import pb, pb_grpc

SILENT = "127.0.0.1:7499"  # nothing listens there
LOADING_AT = "127.0.0.1:7498"  # a node still loading its model


class Refusing(pb_grpc.SwarmServicer):
    """A servicer whose Handshake fails with `code`."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details

    async def Handshake(self, request: pb.Hello, context: grpc.aio.ServicerContext) -> pb.Welcome:
        await context.abort(self.code, self.details)
        raise AssertionError("unreachable: abort raises")


def two_nodes(data: Path, b_refuses: str) -> tuple[MemoryNetwork, Parts, Parts | None, str]:
    """Node a, with --peers naming the refusing candidate, SILENT and LOADING_AT, and
    the candidate's address (its parts, None for a bare servicer), served in memory."""
    network = MemoryNetwork()
    sa = settings("a", data, 0, [])
    a = Daemon(sa, MemoryTransport(network, sa, None)).build()
    network.serve(sa.advertise, SwarmService(a))
    b: Parts | None = None
    address = "127.0.0.1:7401"
    if b_refuses in CODES:
        network.serve(address, Refusing(CODES[b_refuses], "go away"))
    else:
        extra: dict[str, dict[str, object]] = {
            "secret": {"swarm_secret": "another swarm's secret, long enough"},
            "full": {"max_neighbors": 1},
        }
        sb = settings("b", data, 1, [], **extra.get(b_refuses, {}))
        if b_refuses == "swarm":
            sb = sb.model_copy(update={"swarm_id": "another swarm"})
        b = Daemon(sb, MemoryTransport(network, sb, None)).build()
        network.serve(sb.advertise, SwarmService(b))
        address = sb.advertise
    network.serve(LOADING_AT, Refusing(grpc.StatusCode.UNAVAILABLE, LOADING))
    a.handshaker.discovery = StaticDiscovery([address, SILENT, LOADING_AT], sa.advertise)
    return network, a, b, address


def handshakes(network: MemoryNetwork, address: str) -> int:
    return network.calls.count((address, "Handshake"))


def fill(b: Parts) -> None:
    """Take b's only neighbour slot (max_neighbors 1), so it refuses the next Hello."""
    assert b.peers.admit(hello(node_id="x", listen_address="127.0.0.1:1")) is not None


CODES = {
    "permission": grpc.StatusCode.PERMISSION_DENIED,
    "rate limit": grpc.StatusCode.RESOURCE_EXHAUSTED,  # its handshake bucket is empty
}


@pytest.mark.parametrize("b_refuses", ["secret", "swarm", "full", *CODES])
def test_a_refusing_candidate_is_redialled_with_backoff_a_silent_one_at_once(
    synthetic_jsonl: Path, b_refuses: str
) -> None:
    """b refuses (another secret, another swarm id, a full table, PERMISSION_DENIED,
    RESOURCE_EXHAUSTED):
    dialled at 0, 2, 6, 14, 22 s (waits 2, 4, 8, 8), and never in between; the
    addresses where nothing answers yet are dialled on every call."""
    network, a, b, address = two_nodes(synthetic_jsonl, b_refuses)
    if b_refuses == "full":
        assert b is not None
        fill(b)
    t0 = time.monotonic()
    waits = [BACKOFF_FIRST * 2**i for i in range(4)]
    assert waits[:3] == [2.0, 4.0, 8.0] and BACKOFF_MAX_CONFIGURED == 8.0
    waits = [min(w, BACKOFF_MAX_CONFIGURED) for w in waits]
    dial_at = [0.0]
    for w in waits:
        dial_at.append(dial_at[-1] + w)  # 0, 2, 6, 14, 22

    async def go() -> None:
        calls = 0
        for i, due in enumerate(dial_at):
            if i:  # just before it is due: not dialled
                await a.handshaker.connect_known(now=t0 + due - 0.01)
                calls += 1
                assert handshakes(network, address) == i, (b_refuses, due)
            await a.handshaker.connect_known(now=t0 + due)
            calls += 1
            assert handshakes(network, address) == i + 1, (b_refuses, due)
            assert handshakes(network, SILENT) == calls
            assert handshakes(network, LOADING_AT) == calls

    asyncio.run(go())
    assert a.peers.live == []
    assert a.handshaker.backoff.next_dial(address) == pytest.approx(t0 + 22 + 8)
    assert a.handshaker.backoff.next_dial(SILENT) is None


def test_a_success_forgets_the_backoff(synthetic_jsonl: Path) -> None:
    """b's table is full (refused, wait 2 s, then 4 s); once it has room the next due
    dial joins and the backoff is forgotten: refused again later, b waits 2 s again."""
    network, a, b, address = two_nodes(synthetic_jsonl, "full")
    assert b is not None
    fill(b)
    t0 = time.monotonic()

    async def go() -> None:
        await a.handshaker.connect_known(now=t0)
        await a.handshaker.connect_known(now=t0 + 2)  # refused twice: next at 6
        assert handshakes(network, address) == 2
        x = b.peers.get("x")
        assert x is not None
        b.peers.drop(x, "test")  # room for a
        await a.handshaker.connect_known(now=t0 + 5)
        assert handshakes(network, address) == 2 and a.peers.live == []
        await a.handshaker.connect_known(now=t0 + 6)
        assert handshakes(network, address) == 3
        assert [p.node_id for p in a.peers.live] == ["b"]
        assert a.handshaker.backoff.next_dial(address) is None  # forgotten
        # a forgets b, and b is full again: the first refusal waits BACKOFF_FIRST
        peer_b, peer_a = a.peers.get("b"), b.peers.get("a")
        assert peer_b is not None and peer_a is not None
        a.peers.drop(peer_b, "test")
        a.peers.prune(now=time.monotonic() + FORGET_SECONDS + 1)
        assert a.peers.get("b") is None
        b.peers.drop(peer_a, "test")
        fill(b)
        await a.handshaker.connect_known(now=t0 + 7)
        assert handshakes(network, address) == 4 and a.peers.live == []
        await a.handshaker.connect_known(now=t0 + 7 + BACKOFF_FIRST - 0.01)
        assert handshakes(network, address) == 4
        await a.handshaker.connect_known(now=t0 + 7 + BACKOFF_FIRST)
        assert handshakes(network, address) == 5

    asyncio.run(go())


def test_the_backoff_forgets_addresses_no_longer_offered(synthetic_jsonl: Path) -> None:
    """The map is keyed by candidates: one no longer offered loses its entry."""
    network, a, _b, address = two_nodes(synthetic_jsonl, "swarm")
    t0 = time.monotonic()

    async def go() -> None:
        await a.handshaker.connect_known(now=t0)
        assert a.handshaker.backoff.next_dial(address) == pytest.approx(t0 + BACKOFF_FIRST)
        a.handshaker.discovery = StaticDiscovery([SILENT], a.settings.advertise)
        await a.handshaker.connect_known(now=t0 + 1)
        assert a.handshaker.backoff.next_dial(address) is None
        assert handshakes(network, address) == 1

    asyncio.run(go())


class SlowRefusing(Refusing):
    """A node that takes `delay` seconds to refuse the handshake."""

    def __init__(self, delay: float) -> None:
        super().__init__(grpc.StatusCode.PERMISSION_DENIED, "go away, slowly")
        self.delay = delay

    async def Handshake(self, request: pb.Hello, context: grpc.aio.ServicerContext) -> pb.Welcome:
        await asyncio.sleep(self.delay)
        return await super().Handshake(request, context)


def test_the_backoff_counts_from_the_refusal(synthetic_jsonl: Path) -> None:
    """A node that takes 0.5 s to refuse: its next dial is due BACKOFF_FIRST s after
    the refusal arrived, not after the dial began (before, a node slow to refuse, up
    to DIAL_TIMEOUT, took that much off each wait)."""
    delay = 0.5
    network, a, _b, address = two_nodes(synthetic_jsonl, "permission")
    network.serve(address, SlowRefusing(delay))

    async def go() -> tuple[float, float]:
        began = time.monotonic()
        await a.handshaker.connect_known()  # the clock runs
        return began, time.monotonic()

    began, ended = asyncio.run(go())
    assert handshakes(network, address) == 1
    due = a.handshaker.backoff.next_dial(address)
    assert due is not None
    assert began + delay + BACKOFF_FIRST <= due <= ended + BACKOFF_FIRST

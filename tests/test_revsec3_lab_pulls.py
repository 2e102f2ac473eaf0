"""The nodes of one lab (127.0.0.1) or LAN (one /24) share a network (`limits.host_key`),
and `first_message.FirstMessage.streams` held each network to 4 streamed answers in
flight: 3 of 7 neighbours that pulled a node's state at once were refused
RESOURCE_EXHAUSTED "4 streamed answers to 127.0.0.1 are not yet read by their
callers" (they were reading), and a refused Pull is a failed catch-up (its source's
claim dropped, the next one waits twice as long). Now a live neighbour's IP keeps
`STREAMS_PER_NEIGHBOUR` places per live neighbour there beyond its network's share
(revsec3; real gRPC on 127.0.0.1, handlers that hold every Pull until all came)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from test_daemon_parts import pair

from declora.node.daemon.first_message import (
    STREAMS_PER_NEIGHBOUR,
    STREAMS_PER_NETWORK,
    FirstMessage,
)
from declora.node.limits import address_key
from declora.proto import pb, pb_grpc

NEIGHBOURS = 7  # a lab of 8: every other node pulls this one's state at once


class Held(pb_grpc.SwarmServicer):
    """A Pull that answers once `release` is set (a state being encoded)."""

    def __init__(self) -> None:
        self.entered = 0
        self.release = asyncio.Event()

    async def Pull(self, request: pb.PullRequest, context: Any) -> None:
        self.entered += 1
        await self.release.wait()
        await context.write(pb.Chunk(data=b"state"))


async def until(what: str, check: Callable[[], bool], seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def pulls(neighbours: Callable[[str], int], callers: int) -> tuple[list[str], FirstMessage]:
    """How `callers` Pulls from 127.0.0.1 at once end ('OK' or the code), with
    `neighbours` live neighbours at an IP."""
    interceptor = FirstMessage()
    interceptor.neighbours = neighbours
    servicer = Held()
    ends: list[str] = []  # the refused calls' codes, as they end

    async def one(address: str) -> str:
        async with grpc.aio.insecure_channel(address) as channel:
            call = pb_grpc.SwarmStub(channel).Pull(pb.PullRequest(), timeout=30)
            try:
                assert [c.data async for c in call] == [b"state"]
                return "OK"
            except grpc.aio.AioRpcError as exc:
                ends.append(exc.code().name)
                return exc.code().name

    async def go() -> list[str]:
        server = grpc.aio.server(maximum_concurrent_rpcs=100, interceptors=[interceptor])
        pb_grpc.add_SwarmServicer_to_server(servicer, server)
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        try:
            calls = [asyncio.create_task(one(address)) for _ in range(callers)]
            # every Pull is in its handler or refused: none has its answer yet
            await until("every Pull", lambda: servicer.entered + len(ends) == callers)
            servicer.release.set()
            return sorted(await asyncio.gather(*calls))
        finally:
            await server.stop(None)

    return asyncio.run(go()), interceptor


def test_a_labs_neighbours_pull_one_state_at_once() -> None:
    ends, interceptor = pulls(lambda ip: NEIGHBOURS if ip == "127.0.0.1" else 0, NEIGHBOURS)
    assert ends == ["OK"] * NEIGHBOURS  # before: 3 RESOURCE_EXHAUSTED
    assert (interceptor.streams.total, interceptor.streams.by_network) == (0, {})


def test_past_its_kept_places_an_ip_has_its_networks_share() -> None:
    """A guard: one live neighbour's IP holds its kept places and its network's share,
    no more; a stranger's IP (no live neighbour) its network's share only."""
    share = STREAMS_PER_NEIGHBOUR + STREAMS_PER_NETWORK
    ends, interceptor = pulls(lambda ip: 1 if ip == "127.0.0.1" else 0, share + 2)
    assert ends == ["OK"] * share + ["RESOURCE_EXHAUSTED"] * 2
    ends, interceptor = pulls(lambda ip: 0, share)
    assert ends == ["OK"] * STREAMS_PER_NETWORK + ["RESOURCE_EXHAUSTED"] * STREAMS_PER_NEIGHBOUR
    assert (interceptor.streams.total, interceptor.streams.by_network) == (0, {})


def test_the_service_tells_the_transport_its_live_neighbours(synthetic_jsonl: Path) -> None:
    """The daemon's interceptor counts the live neighbours the Swarm service sees."""
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        await a.handshaker.dial(b.settings.advertise)

    asyncio.run(go())
    (peer,) = b.peers.live
    ip = address_key(peer.host) if peer.host else None
    assert ip and b.handshaker.transport.neighbours(ip) == 1  # before: always 0
    assert b.handshaker.transport.neighbours("192.0.2.1") == 0

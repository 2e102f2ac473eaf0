"""A live neighbour's IP keeps `first_message.ANSWERS_PER_NEIGHBOUR` unread answers per
live neighbour there beyond its network's share (revsec3; real gRPC on 127.0.0.1, a
raw HTTP/2 caller that announces a stream window of 0 bytes, `revsec2_h2.Stalled`,
standing for answers a busy lab's nodes have not taken yet). The nodes of one lab
(127.0.0.1) or LAN (one /24) share a network: before, its 9th answer not yet taken
was refused, whoever's it was."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from revsec2_h2 import Stalled
from test_secleft_streams import poll, served

from declora.node.daemon.first_message import (
    ANSWERS_PER_NEIGHBOUR,
    UNREAD_PER_NETWORK,
    FirstMessage,
)
from declora.proto import pb

STATUS = "/declora.v1.Swarm/Status"
NEIGHBOURS = 1  # live neighbours at 127.0.0.1 (the test server's cap: 16 calls)


def held(neighbours: Callable[[str], int], calls: int, refused: int) -> tuple[int, int]:
    """Status calls from 127.0.0.1 whose answers are never read: (answers counted,
    calls ended) once `refused` of them ended."""
    interceptor = FirstMessage()
    interceptor.neighbours = neighbours
    seen: dict[str, int] = {}

    async def test(address: str) -> None:
        stalled = await asyncio.to_thread(Stalled, address, "127.0.0.1")
        try:
            for _ in range(calls):
                stalled.call(STATUS, pb.StatusRequest().SerializeToString())
            counted = calls - refused
            await asyncio.to_thread(
                poll,
                f"{counted} answers counted, {refused} refused",
                lambda: interceptor.unread.total == counted and len(stalled.ended()) == refused,
            )
            seen["counted"], seen["ended"] = interceptor.unread.total, len(stalled.ended())
        finally:
            await asyncio.to_thread(stalled.close)
        await asyncio.to_thread(poll, "no answer left", lambda: not interceptor.unread.total)

    asyncio.run(served(interceptor, test))
    assert interceptor.unread.by_network == {}
    return seen["counted"], seen["ended"]


def test_a_live_neighbours_ip_keeps_its_answers() -> None:
    kept = ANSWERS_PER_NEIGHBOUR * NEIGHBOURS + UNREAD_PER_NETWORK
    # before: 8 counted, the rest refused
    assert held(lambda ip: NEIGHBOURS if ip == "127.0.0.1" else 0, kept, 0) == (kept, 0)


def test_past_its_kept_places_an_ip_has_its_networks_share() -> None:
    """A guard: past its kept places an IP has its network's share, no more."""
    kept = ANSWERS_PER_NEIGHBOUR * NEIGHBOURS + UNREAD_PER_NETWORK
    assert held(lambda ip: NEIGHBOURS if ip == "127.0.0.1" else 0, kept + 2, 2) == (kept, 2)
    assert held(lambda ip: 0, UNREAD_PER_NETWORK + 2, 2) == (UNREAD_PER_NETWORK, 2)

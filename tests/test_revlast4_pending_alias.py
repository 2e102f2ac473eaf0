"""A configured peer given by another name for a joined neighbour's address
(`--peers localhost:7401` for the neighbour at 127.0.0.1:7401) is not listed as not
joined: the node never dials it (`Handshaker.connect_known`: it would be refused as
live at another address), so it stood at "dialling" for as long as the neighbour
stayed (it fails on the old code)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from memory_transport import MemoryNetwork, MemoryTransport
from test_daemon_parts import settings

from declora.node.daemon.daemon import Daemon
from declora.node.daemon.service import SwarmService
from declora.node.daemon.startup import DialLog


def test_another_name_for_a_joined_neighbour_is_not_pending(synthetic_jsonl: Path) -> None:
    network = MemoryNetwork()
    sa = settings("a", synthetic_jsonl, 0, ["localhost:7401", "localhost:7409"])
    a = Daemon(sa, MemoryTransport(network, sa, None)).build()
    network.serve(sa.advertise, SwarmService(a))
    sb = settings("b", synthetic_jsonl, 1, [sa.advertise])
    b = Daemon(sb, MemoryTransport(network, sb, None)).build()
    network.serve(sb.advertise, SwarmService(b))
    a.handshaker.transport.dial_log = DialLog()
    assert sb.advertise == "127.0.0.1:7401"

    async def go() -> list[tuple[str, str]]:
        assert await b.handshaker.dial(sa.advertise) is not None  # b joined a
        for name in ("localhost:7401", "localhost:7409"):  # as `connect_known` notes them
            a.handshaker.admission.note_resolved(name, {"127.0.0.1"})
        return [(p.address, p.reach) for p in (await a.status()).pending]

    pending = asyncio.run(go())
    assert [n.node_id for n in b.peers.live] == ["a"]
    assert pending == [("localhost:7409", "dialling")]  # before: localhost:7401 too

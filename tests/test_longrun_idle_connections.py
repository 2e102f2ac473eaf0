"""A node's gRPC server closes a connection that makes no call for
`IDLE_CONNECTION_MS` (audit "longrun": keepalive pings kept 50 connected channels
that never called open, 100 descriptors, for as long as their clients liked)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from daemon_helpers import HOST, free_ports

from declora.node.daemon import transport
from declora.node.daemon.transport import Transport
from declora.node.settings import NodeSettings
from declora.proto import pb_grpc

CHANNELS = 5
DEADLINE = 30.0  # seconds the test polls for the server to close them


def test_connections_without_calls_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "IDLE_CONNECTION_MS", 1000, raising=False)
    (port,) = free_ports(1)
    settings = NodeSettings(
        node_id="b", swarm_id="s", listen=f"{HOST}:{port}", model="tiny-bert", solo=True
    )
    server = Transport(settings, None)

    async def go() -> int:
        await server.start(pb_grpc.SwarmServicer(), max_rpcs=8)
        local = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            grpc.aio.insecure_channel(settings.listen, options=local) for _ in range(CHANNELS)
        ]
        try:
            await asyncio.gather(*(c.channel_ready() for c in channels))
            end = time.monotonic() + DEADLINE
            idle = grpc.ChannelConnectivity.IDLE
            while time.monotonic() < end:
                if all(c.get_state() == idle for c in channels):
                    break
                await asyncio.sleep(0.1)
            return sum(c.get_state() == idle for c in channels)
        finally:
            for c in channels:
                await c.close()
            await server.stop(0)

    closed = asyncio.run(go())
    print(f"{CHANNELS} connected channels that never called: {closed} closed by the server")
    assert closed == CHANNELS

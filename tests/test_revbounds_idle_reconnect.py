"""Guard: a neighbour's channel whose connection the server closed as idle
(`transport.IDLE_CONNECTION_MS`: a long isolation wait, a slow round) makes its next
call as if nothing happened: gRPC reconnects, the call does not fail once."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from daemon_helpers import HOST, free_ports
from grpc_health.v1 import health_pb2, health_pb2_grpc

from declora.node.daemon import transport
from declora.node.daemon.transport import Transport, grpc_options
from declora.node.settings import NodeSettings
from declora.proto import pb_grpc

CALLS = 5
DEADLINE = 30.0  # seconds to wait for the server to close the idle connection


def test_a_call_after_the_idle_close_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "IDLE_CONNECTION_MS", 300)
    (port,) = free_ports(1)
    settings = NodeSettings(
        node_id="b", swarm_id="s", listen=f"{HOST}:{port}", model="tiny-bert", solo=True
    )
    server = Transport(settings, None)

    async def go() -> list[str]:
        await server.start(pb_grpc.SwarmServicer(), max_rpcs=8)
        channel = grpc.aio.insecure_channel(settings.listen, options=grpc_options(settings))
        stub = health_pb2_grpc.HealthStub(channel)
        outcomes = []
        try:
            for _ in range(CALLS):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                end = time.monotonic() + DEADLINE  # until the server closed it as idle
                while channel.get_state() != grpc.ChannelConnectivity.IDLE:
                    assert time.monotonic() < end, "the server never closed the connection"
                    await asyncio.sleep(0.05)
                try:
                    await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    outcomes.append("ok")
                except grpc.aio.AioRpcError as exc:
                    outcomes.append(exc.code().name)
            return outcomes
        finally:
            await channel.close()
            await server.stop(0)

    outcomes = asyncio.run(go())
    print(f"calls right after an idle close: {outcomes}")
    assert outcomes == ["ok"] * CALLS

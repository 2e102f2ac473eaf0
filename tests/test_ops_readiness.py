"""grpc.health.v1 readiness: the service `declora.ready` is SERVING while the node
serves and has a live neighbour (or is --solo), NOT_SERVING otherwise, by Check and by
Watch as neighbours come and go; "" and the Swarm service stay liveness (SERVING once
it serves). A revoked caller is refused it as every other health call. Real gRPC on
127.0.0.1 around a `Transport`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from daemon_helpers import free_ports
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_revocation_grpc import load

from declora.cli.certs import mint, revoke
from declora.node.daemon.transport import READY_SERVICE, SERVICE_NAME, Transport
from declora.node.security import TlsFiles
from declora.node.settings import NodeSettings, load_settings
from declora.proto import pb_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _settings(**options: object) -> NodeSettings:
    (port,) = free_ports(1)
    return load_settings({"listen": f"127.0.0.1:{port}", "node_id": "a", **options})


async def _check(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return (await stub.Check(request, timeout=10)).status


def test_ready_follows_the_live_neighbours_and_liveness_does_not() -> None:
    live = [0]

    async def go() -> None:
        transport = Transport(_settings(peers="127.0.0.1:9"), None)
        port = await transport.start(pb_grpc.SwarmServicer(), 8)
        transport.ready_when(lambda: live[0])
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                assert await _check(stub, READY_SERVICE) == NOT_SERVING  # loading
                transport.set_serving(True)
                assert await _check(stub, "") == SERVING
                assert await _check(stub, SERVICE_NAME) == SERVING
                assert await _check(stub, READY_SERVICE) == NOT_SERVING  # no neighbour
                live[0] = 2
                assert await _check(stub, READY_SERVICE) == SERVING
                watch = stub.Watch(health_pb2.HealthCheckRequest(service=READY_SERVICE))
                seen = aiter(watch)
                assert (await anext(seen)).status == SERVING
                live[0] = 0  # the last neighbour went: seen without any other event
                assert (await asyncio.wait_for(anext(seen), 30)).status == NOT_SERVING
                live[0] = 1
                assert (await asyncio.wait_for(anext(seen), 30)).status == SERVING
                transport.set_serving(False)  # stopping: neither live nor ready
                assert (await asyncio.wait_for(anext(seen), 30)).status == NOT_SERVING
                assert await _check(stub, "") == NOT_SERVING
                watch.cancel()
        finally:
            await transport.stop(grace=0)

    asyncio.run(go())


def test_a_solo_node_is_ready_once_it_serves() -> None:
    async def go() -> None:
        transport = Transport(_settings(solo=True), None)
        port = await transport.start(pb_grpc.SwarmServicer(), 8)
        transport.ready_when(lambda: 0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                assert await _check(stub, READY_SERVICE) == NOT_SERVING
                transport.set_serving(True)
                assert await _check(stub, READY_SERVICE) == SERVING
        finally:
            await transport.stop(grace=0)

    asyncio.run(go())


def test_a_revoked_caller_is_refused_readiness(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    mint(pki, ["a", "b", "c"], ["127.0.0.1"], 30, False)
    crl = revoke(pki, [pki / "c.pem"], [], None).crl

    async def ask(port: int, tls: TlsFiles) -> grpc.StatusCode:
        creds = tls.channel_credentials()
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            try:
                await _check(health_pb2_grpc.HealthStub(channel), READY_SERVICE)
            except grpc.aio.AioRpcError as exc:
                assert "(c) is revoked by --tls-crl" in (exc.details() or "")
                return exc.code()
        return grpc.StatusCode.OK

    async def go() -> None:
        transport = Transport(_settings(solo=True), load(pki, "a", crl))
        port = await transport.start(pb_grpc.SwarmServicer(), 8)
        transport.ready_when(lambda: 0)
        transport.set_serving(True)
        try:
            assert await ask(port, load(pki, "b")) == grpc.StatusCode.OK  # the control
            assert await ask(port, load(pki, "c")) == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await transport.stop(grace=0)

    asyncio.run(go())


@pytest.mark.parametrize("service", ["declora.other", "declora.ready.x"])
def test_another_service_is_still_unknown(service: str) -> None:
    async def go() -> None:
        transport = Transport(_settings(solo=True), None)
        port = await transport.start(pb_grpc.SwarmServicer(), 8)
        transport.set_serving(True)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await _check(health_pb2_grpc.HealthStub(channel), service)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await transport.stop(grace=0)

    asyncio.run(go())

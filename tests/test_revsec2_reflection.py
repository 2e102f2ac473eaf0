"""Reflection streams a stranger holds open keep no one else out (revsec2; real gRPC on
127.0.0.1, the daemon's `Reflection`, the stranger on 127.0.0.2 through a relay).
Before, 8 streams that sent no request took every place for as long as their caller
liked, and grpcurl was refused '8 reflection streams already open on this node'."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from test_attacks import HostAlias

from declora.node.daemon import health
from declora.node.daemon.first_message import FirstMessage
from declora.node.daemon.health import REFLECTIONS, Reflection

METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


async def served(test: Callable[[str, Reflection], Awaitable[None]]) -> None:
    server = grpc.aio.server(interceptors=[FirstMessage()])
    servicer = Reflection(("declora.v1.Swarm", reflection.SERVICE_NAME))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await test(f"127.0.0.1:{port}", servicer)
    finally:
        await server.stop(None)


def stream(channel: grpc.aio.Channel) -> Any:
    return channel.stream_stream(
        METHOD,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )()


async def list_services(address: str) -> str:
    """What grpcurl's `list` gets: the service names, or the refusal's code."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = stream(channel)
        try:
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            await call.done_writing()
            reply = await asyncio.wait_for(call.read(), 10)
            return ",".join(s.name for s in reply.list_services_response.service)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name


async def until(what: str, check: Callable[[], bool]) -> None:
    try:
        async with asyncio.timeout(30):
            while not check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_a_strangers_idle_streams_keep_no_one_else_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "REFLECTION_SECONDS", 2.0)
    seen: dict[str, Any] = {}

    async def test(address: str, servicer: Reflection) -> None:
        relay = HostAlias(address)  # the stranger: 127.0.0.2
        try:
            async with grpc.aio.insecure_channel(relay.address) as channel:
                held = [stream(channel) for _ in range(REFLECTIONS)]  # no request, ever
                await until(
                    "the stranger's streams at the server",
                    lambda: servicer.streams + sum(c.done() for c in held) == REFLECTIONS,
                )
                seen["listed"] = await list_services(address)  # before: RESOURCE_EXHAUSTED
                await until("the stranger's streams to end", lambda: all(c.done() for c in held))
                ends = [(await c.code()).name for c in held]
                seen["stranger"] = sorted(set(ends))
        finally:
            relay.close()
        await until("no stream left", lambda: servicer.streams == 0 and not servicer.by_network)

    asyncio.run(served(test))
    assert seen["listed"] == f"declora.v1.Swarm,{reflection.SERVICE_NAME}"
    # beyond its network's 2: refused; its 2: ended when their time was up
    assert seen["stranger"] == ["DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"]

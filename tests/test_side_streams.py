"""Streams of the services beside Swarm (grpc.health.v1 Watch, server reflection), held
open by anyone: each Watch held a thread of the default executor (where training and
payload checks run: `min(32, cpus + 4)` Watches stalled them all), and idle streams of
either filled gRPC's cap on calls in flight, so every Swarm call was refused ("Concurrent
RPC limit exceeded"). Now both run on the event loop, a few streams each, with room of
their own in the cap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from test_daemon_parts import settings

from declora.node.daemon import health as side
from declora.node.daemon.first_message import STREAMS_PER_NETWORK
from declora.node.daemon.service import pool_total
from declora.node.daemon.transport import Transport
from declora.proto import pb, pb_grpc

WATCHES, REFLECTIONS = 40, 140  # more than the executor's threads; more than the cap (136)


async def asks_once(stop: asyncio.Event) -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
    """A reflection stream: one request, then nothing until `stop`."""
    yield reflection_pb2.ServerReflectionRequest(list_services="")
    await stop.wait()


async def first(call: grpc.aio.Call) -> grpc.StatusCode:
    """OK once `call` answered once (it stays open), else how it was refused."""
    try:
        await call.read()  # type: ignore[attr-defined]
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


def test_held_health_and_reflection_streams_leave_the_node_its_threads_and_calls(
    synthetic_jsonl: Path,
) -> None:
    async def go() -> tuple[list[grpc.StatusCode], object, grpc.StatusCode, int]:
        s = settings("a", synthetic_jsonl, 0, []).model_copy(update={"listen": "127.0.0.1:0"})
        transport = Transport(s, None)
        port = await transport.start(pb_grpc.SwarmServicer(), pool_total(s.max_concurrent_streams))
        transport.set_serving(True)
        # 4 connections: each holds at most transport.STREAMS_PER_CONNECTION calls
        own = [("grpc.use_local_subchannel_pool", 1)]  # a connection each
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", own) for _ in range(4)]
        channel = channels[0]
        stop = asyncio.Event()
        health = health_pb2_grpc.HealthStub(channel)
        ask = health_pb2.HealthCheckRequest(service="")
        healths = [health_pb2_grpc.HealthStub(c) for c in channels]
        reflects = [reflection_pb2_grpc.ServerReflectionStub(c) for c in channels]
        calls = [healths[i % 4].Watch(ask) for i in range(WATCHES)]
        calls += [reflects[i % 4].ServerReflectionInfo(asks_once(stop)) for i in range(REFLECTIONS)]
        try:
            held = await asyncio.wait_for(asyncio.gather(*map(first, calls)), 10)
            threads = await asyncio.wait_for(asyncio.to_thread(sum, [1, 2]), 5)
            check = await health.Check(ask, timeout=5)
            try:
                await pb_grpc.SwarmStub(channel).Status(pb.StatusRequest(), timeout=5)
                swarm = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                swarm = exc.code()
            return held, (threads, check.status), swarm, len(calls)
        finally:
            stop.set()
            for call in calls:
                call.cancel()
            for c in channels:
                await c.close()
            await transport.stop(grace=0)

    loop = asyncio.new_event_loop()  # closed without waiting for its executor's threads
    try:
        held, (threads, status), swarm, n = loop.run_until_complete(go())
    finally:
        loop.close()
    assert threads == 3  # the default executor was free
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert swarm == grpc.StatusCode.UNIMPLEMENTED  # the Swarm call reached its servicer
    opened = held.count(grpc.StatusCode.OK)
    # one network (this test's caller): its Watches, and reflection streams as its share
    # of streamed answers leaves room (`first_message.STREAMS_PER_NETWORK`)
    assert side.WATCHES_PER_NETWORK <= opened <= STREAMS_PER_NETWORK
    assert held.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == n - opened, held

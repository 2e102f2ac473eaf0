"""Streamed answers a caller never reads keep no other caller out (secleft; real gRPC
on 127.0.0.1, a raw HTTP/2 caller that announces a stream window of 0 bytes,
`revsec2_h2.Stalled`, from 127.0.0.2).

A Pull's answer to such a caller is never sent; the handler gives up (`write_within`)
and frees its pool's place, but gRPC holds the call's place in its cap until the
caller took the answer, for ever: before `first_message.FirstMessage.streams`, every
Pull that stalled so was a place lost (16 every 30 s on a node, Pulls and
Revocations), until every call was refused `Concurrent RPC limit exceeded!`. And one
network held every Watch stream (`health.WATCHES`) for as long as it liked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from revsec2_h2 import Stalled
from test_attacks import HostAlias

from declora.node.daemon import health
from declora.node.daemon.first_message import STREAMS, STREAMS_PER_NETWORK, FirstMessage
from declora.node.daemon.health import REFLECTIONS, SERVING, WATCHES, WATCHES_PER_NETWORK, Health
from declora.node.daemon.service import POOLS, write_within
from declora.proto import pb, pb_grpc

CAP = 16  # the test server's maximum_concurrent_rpcs
STALLED = 24  # the stranger's Pulls whose answers it never reads
STRANGER = "127.0.0.2"  # another network (`limits.host_key`: each loopback address is one)
PULL = "/declora.v1.Swarm/Pull"


class Served(pb_grpc.SwarmServicer):
    """Status, Revocations that stay open, and a Pull whose answer (one chunk larger
    than a window) must be read within a short time, as the daemon's is
    (`service.write_within`)."""

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusReply:
        return pb.StatusReply(node_id="ok")

    async def Revocations(self, request: pb.RevocationsRequest, context: Any) -> None:
        await asyncio.Event().wait()  # a stream that stays open

    async def Pull(self, request: pb.PullRequest, context: Any) -> None:
        try:
            await write_within(context, [pb.Chunk(data=b"x" * 100_000)], 0.2, "the state")
        except Exception as exc:  # as the daemon's `_refuse`
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))


def poll(what: str, check: Callable[[], bool], seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


async def served(
    interceptor: FirstMessage | None, test: Callable[[str], Awaitable[None]], servicer: Any = None
) -> None:
    server = grpc.aio.server(
        maximum_concurrent_rpcs=CAP, interceptors=[interceptor] if interceptor else []
    )
    pb_grpc.add_SwarmServicer_to_server(Served(), server)
    if servicer is not None:
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await test(f"127.0.0.1:{port}")
    finally:
        await server.stop(None)


async def honest(address: str) -> tuple[str, str]:
    """How an honest Status and an honest Pull from 127.0.0.1 end: 'ok' or the code."""
    ends = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.SwarmStub(channel)
        for call in (
            lambda: stub.Status(pb.StatusRequest(), timeout=10),
            lambda: _read_all(stub.Pull(pb.PullRequest(), timeout=10)),
        ):
            try:
                await call()
                ends.append("ok")
            except grpc.aio.AioRpcError as exc:
                ends.append(exc.code().name)
    return ends[0], ends[1]


async def _read_all(call: Any) -> list[Any]:
    return [reply async for reply in call]


def test_pulls_never_read_hold_their_networks_share_only() -> None:
    interceptor = FirstMessage()
    seen: dict[str, Any] = {}

    async def test(address: str) -> None:
        stalled = await asyncio.to_thread(Stalled, address, STRANGER)
        try:
            for _ in range(STALLED):
                stalled.call(PULL)
            # before: only the calls past the cap (CAP) ended; the rest held every place
            await asyncio.to_thread(
                poll,
                "the calls past the stranger's share to end",
                lambda: len(stalled.ended()) >= STALLED - STREAMS_PER_NETWORK,
            )
            seen["honest"] = await honest(address)
            seen["held"] = STALLED - len(stalled.ended())
        finally:
            await asyncio.to_thread(stalled.close)
        # the stranger gone, its places are free
        await asyncio.to_thread(poll, "no stream left", lambda: not interceptor.streams.total)

    asyncio.run(served(interceptor, test))
    assert seen == {"honest": ("ok", "ok"), "held": STREAMS_PER_NETWORK}


def test_streams_cancelled_midway_leave_nothing_behind() -> None:
    """A guard: a caller that gives up on its streams frees their places."""
    interceptor = FirstMessage()

    async def test(address: str) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.SwarmStub(channel)
            calls = [stub.Revocations(pb.RevocationsRequest()) for _ in range(STREAMS_PER_NETWORK)]
            await asyncio.to_thread(
                poll, "the streams", lambda: interceptor.streams.total == STREAMS_PER_NETWORK
            )
            for call in calls:
                call.cancel()
            await asyncio.to_thread(poll, "no stream left", lambda: not interceptor.streams.total)
            assert await honest(address) == ("ok", "ok")

    asyncio.run(served(interceptor, test))


def test_one_network_holds_its_share_of_watches_each_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "WATCH_SECONDS", 1.0, raising=False)
    servicer = Health()
    servicer.set("", SERVING)
    seen: dict[str, Any] = {}
    ask = health_pb2.HealthCheckRequest(service="")

    async def first(call: Any) -> str:
        try:
            await call.read()
            return "open"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    async def test(address: str) -> None:
        relay = HostAlias(address, STRANGER)
        try:
            async with grpc.aio.insecure_channel(relay.address) as channel:
                watches = [health_pb2_grpc.HealthStub(channel).Watch(ask) for _ in range(WATCHES)]
                seen["stranger"] = sorted(await asyncio.gather(*map(first, watches)))
                async with grpc.aio.insecure_channel(address) as own:
                    mine = health_pb2_grpc.HealthStub(own).Watch(ask)
                    seen["honest"] = await first(mine)  # before: RESOURCE_EXHAUSTED
                    mine.cancel()
                # before: the stranger's streams stayed open for as long as it liked
                ends = await asyncio.wait_for(asyncio.gather(*(c.code() for c in watches)), 20)
                seen["ended"] = sorted({code.name for code in ends})
        finally:
            relay.close()

    asyncio.run(served(None, test, servicer))
    share = WATCHES_PER_NETWORK
    assert seen == {
        "stranger": ["RESOURCE_EXHAUSTED"] * (WATCHES - share) + ["open"] * share,
        "honest": "open",
        "ended": ["DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"],
    }
    assert (servicer.watches.streams, servicer.watches.by_network) == (0, {})


def test_the_cap_has_room_for_every_streamed_answer() -> None:
    """A guard: `transport.start`'s cap counts the streams' places in these pools."""
    assert POOLS["Pull"] + POOLS["Revocations"] + WATCHES + REFLECTIONS >= STREAMS
    assert POOLS["Pull"] > STREAMS_PER_NETWORK  # one network cannot fill the Pull pool

"""`first_message.FirstMessage` counts a call its caller ended without a request message
(`no_request`; before, counted nowhere), and a request that does not parse under a
reason of its own (`malformed_request`; before, `malformed`, the counter of a push's
bad messages too, so an operator could not tell a stranger's garbage from a member's)
(secleft2; a real grpc.aio server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import time

import grpc
from test_opsvis_refusals import counted, served

from declora.node.daemon.first_message import REFUSALS, FirstMessage

CALLS = 200  # calls ended without a request message, one after the other


def test_a_call_ended_without_a_request_is_counted() -> None:
    interceptor = FirstMessage()
    reasons = counted(interceptor)
    codes: list[str] = []
    took: list[float] = []

    async def test(channel: grpc.aio.Channel) -> None:
        start = time.perf_counter()
        for method in ("Status", "Pull", "Handshake", "Leave") * (CALLS // 4):
            call = channel.stream_stream(f"/declora.v1.Swarm/{method}")(iter(()))
            codes.append((await call.code()).name)
        took.append(time.perf_counter() - start)

    asyncio.run(served(interceptor, test))
    print(f"\n{CALLS} calls ended without a request message: {took[0]:.2f}s, all answered")
    assert codes == ["INVALID_ARGUMENT"] * CALLS
    assert reasons == ["no_request"] * CALLS  # before: []
    assert not interceptor.room.calls and "no_request" in REFUSALS


def test_a_request_that_does_not_parse_is_not_a_pushs_malformed_message() -> None:
    interceptor = FirstMessage()
    reasons = counted(interceptor)

    async def test(channel: grpc.aio.Channel) -> None:
        call = channel.unary_unary("/declora.v1.Swarm/Status")(b"\xff\xff\xff", timeout=10)
        assert (await call.code()) == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(served(interceptor, test))
    # a push's bad messages stay `malformed` (`wire`); before, both were counted there
    assert reasons == ["malformed_request"] and "malformed" not in REFUSALS

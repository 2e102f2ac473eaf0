"""`first_message.FirstMessage` on a real grpc.aio server on 127.0.0.1 (redteam2): a
call's request must come in time and a few such calls wait at once, so calls that
never send their message keep no caller out of the server's cap (a real daemon under
that attack: `test_redteam2_halfopen.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from declora.node.daemon.first_message import FirstMessage, Room, Waiting
from declora.proto import pb, pb_grpc

CAP = 6  # the test server's maximum_concurrent_rpcs


class Arrivals(grpc.aio.ServerInterceptor):
    """Counts the calls that reached the server (with or without their message)."""

    def __init__(self) -> None:
        self.count = 0

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.count += 1
        return await continuation(details)


class Answers(pb_grpc.SwarmServicer):
    """Status, Pull (written with `context.write`) and Revocations (an async generator)."""

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusReply:
        return pb.StatusReply(node_id="ok", round=7 if request.include_digest else 1)

    async def Pull(self, request: pb.PullRequest, context: Any) -> None:
        for i in range(3):
            await context.write(pb.Chunk(data=bytes([i])))

    async def Revocations(
        self, request: pb.RevocationsRequest, context: Any
    ) -> AsyncIterator[pb.Chunk]:  # type: ignore[override]
        for i in range(request.crl_number):
            yield pb.Chunk(data=bytes([i]))


async def served(
    interceptor: FirstMessage | None,
    test: Callable[[grpc.aio.Channel], Awaitable[None]],
    arrivals: Arrivals | None = None,
) -> None:
    first = [arrivals] if arrivals else []
    server = grpc.aio.server(
        maximum_concurrent_rpcs=CAP, interceptors=first + ([interceptor] if interceptor else [])
    )
    pb_grpc.add_SwarmServicer_to_server(Answers(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await test(channel)
    finally:
        await server.stop(None)


def half_open(channel: grpc.aio.Channel, n: int) -> list[Any]:
    """`n` Status calls that send their headers and no request message."""
    return [channel.stream_unary("/declora.v1.Swarm/Status")() for _ in range(n)]


def test_every_kind_of_answer_still_comes() -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        stub = pb_grpc.SwarmStub(channel)
        reply = await stub.Status(pb.StatusRequest(include_digest=True), timeout=10)
        assert (reply.node_id, reply.round) == ("ok", 7)
        pulled = [c.data async for c in stub.Pull(pb.PullRequest(), timeout=10)]
        assert pulled == [b"\x00", b"\x01", b"\x02"]
        listed = [c.data async for c in stub.Revocations(pb.RevocationsRequest(crl_number=2))]
        assert listed == [b"\x00", b"\x01"]

    asyncio.run(served(FirstMessage(), test))


@pytest.mark.parametrize("guarded", [False, True])
def test_calls_without_their_message_keep_no_caller_out(guarded: bool) -> None:
    codes: list[str] = []
    arrivals = Arrivals()

    async def test(channel: grpc.aio.Channel) -> None:
        held = half_open(channel, 3 * CAP)
        async with asyncio.timeout(30):  # until they all reached the server
            while arrivals.count < 3 * CAP:
                await asyncio.sleep(0.01)
        try:
            reply = await pb_grpc.SwarmStub(channel).Status(pb.StatusRequest(), timeout=10)
            codes.append(reply.node_id)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code().name)
        ended = [(await c.code()).name for c in held if c.done()]
        codes.extend(sorted(set(ended)))
        for c in held:
            c.cancel()

    asyncio.run(served(FirstMessage(room=CAP - 2) if guarded else None, test, arrivals))
    # unguarded, as gRPC serves: the half-open calls fill the cap and the call is refused
    # (the calls past the cap are refused as well); guarded: the oldest are cut instead
    assert codes == (["ok", "RESOURCE_EXHAUSTED"] if guarded else ["RESOURCE_EXHAUSTED"] * 2)


def test_a_message_that_does_not_come_ends_the_call() -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        [late] = half_open(channel, 1)
        assert await late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        empty = channel.stream_unary("/declora.v1.Swarm/Status")()
        await empty.done_writing()  # the caller is done, and sent nothing
        assert await empty.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(served(FirstMessage(wait_seconds=0.5), test))


def test_a_request_that_does_not_parse_is_invalid_argument() -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        for call in (channel.unary_unary, channel.unary_stream):  # Status, Pull
            method = "Status" if call == channel.unary_unary else "Pull"
            answer = call(f"/declora.v1.Swarm/{method}")(b"\xff\xff\xff", timeout=10)
            assert await answer.code() == grpc.StatusCode.INVALID_ARGUMENT  # was UNKNOWN

    asyncio.run(served(FirstMessage(), test))


def test_a_full_room_cuts_the_oldest_of_the_busiest_network() -> None:
    async def go() -> list[str]:
        room = Room(3)
        calls = []
        async with asyncio.timeout(60) as timer:
            for network in ("a", "b", "a", "c", "b", "b", "b"):
                call = Waiting(network, timer)
                calls.append(call)
                room.enter(call)
                timer.reschedule(asyncio.get_running_loop().time() + 60)  # a cut fires it
        assert [c.network for c in room.calls] == ["a", "c", "b"]  # oldest first
        return ["cut" if c.cut else "in" if c in room.calls else "?" for c in calls]

    # c comes to [a b a]: a, the busiest, loses its oldest; then b to [b a c]: every
    # network waits one, b's own as many as any: its own oldest goes, and so on for b
    assert asyncio.run(go()) == ["cut", "cut", "in", "in", "cut", "cut", "in"]

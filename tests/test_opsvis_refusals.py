"""`first_message.FirstMessage`'s refusals are counted by reason (opsvis): a call whose
request message never came, one cut from a full waiting room, one past a network's
share of unread or streamed answers, a request that does not parse. Before, none was
counted anywhere: `declora-node status` of a node under such an attack showed nothing.
On a real grpc.aio server on 127.0.0.1 (a real node's `status`:
test_opsvis_status_node.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from declora.node.daemon.first_message import (
    MALFORMED,
    REFUSALS,
    REQUEST_TIMEOUT,
    STREAM_SHARE,
    UNREAD_SHARE,
    WAITING_ROOM_CUT,
    FirstMessage,
    Unread,
)
from declora.node.limits import RATE_LIMITED
from declora.proto import pb, pb_grpc


class Answers(pb_grpc.SwarmServicer):
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusReply:
        return pb.StatusReply(node_id="ok")

    async def Pull(self, request: pb.PullRequest, context: Any) -> None:
        await context.write(pb.Chunk(data=b"x"))


async def served(
    interceptor: FirstMessage, test: Callable[[grpc.aio.Channel], Awaitable[None]]
) -> None:
    server = grpc.aio.server(interceptors=[interceptor])
    pb_grpc.add_SwarmServicer_to_server(Answers(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await test(channel)
    finally:
        await server.stop(None)


def counted(interceptor: FirstMessage) -> list[str]:
    """The reasons `interceptor` reports its refusals under, in order."""
    reasons: list[str] = []
    interceptor.refused = reasons.append
    return reasons


def test_each_refusal_is_counted_by_its_reason() -> None:
    # no room for a waiting call but one, no share of unread or streamed answers
    interceptor = FirstMessage(
        wait_seconds=5.0,  # room for the second call to come while the first waits
        room=1,
        unread=Unread(4, 0),
        streams=Unread(4, 0, "streamed answers", "done", STREAM_SHARE),
    )
    reasons = counted(interceptor)
    codes: list[str] = []

    async def test(channel: grpc.aio.Channel) -> None:
        # the newer cuts the older; the newer waits in vain (which came first: either)
        waiting = [channel.stream_stream("/declora.v1.Swarm/Pull")() for _ in range(2)]
        codes.extend(sorted([(await call.code()).name for call in waiting], reverse=True))
        answered = [  # each in turn: one refused before its handler, for its share
            (channel.unary_unary, "Status", pb.StatusRequest().SerializeToString()),
            (channel.unary_stream, "Pull", pb.PullRequest().SerializeToString()),
            (channel.unary_stream, "Pull", b"\xff\xff\xff"),  # does not parse
        ]
        for call, method, request in answered:
            answer = call(f"/declora.v1.Swarm/{method}")(request, timeout=10)
            codes.append((await answer.code()).name)

    asyncio.run(served(interceptor, test))
    refused = ["RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"] + ["RESOURCE_EXHAUSTED"] * 2
    assert codes == [*refused, "INVALID_ARGUMENT"]
    assert reasons == [WAITING_ROOM_CUT, REQUEST_TIMEOUT, UNREAD_SHARE, STREAM_SHARE, MALFORMED]
    assert len(set(REFUSALS)) == len(REFUSALS) and RATE_LIMITED not in REFUSALS

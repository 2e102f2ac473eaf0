"""Calls waiting for their request message: bounded in time and in number.

gRPC counts a call towards the server's cap on calls in flight
(`maximum_concurrent_rpcs`) from its headers on, but hands a unary or
server-streaming call to its handler only once its request message came, and waits
for that message for ever: a caller that opened 160 calls and sent no message (a
stranger, no credentials needed) had every other call refused `Concurrent RPC limit
exceeded!`, the node's neighbours' pushes and Hellos included, for as long as it kept
its connections open.

`FirstMessage`, a server interceptor, hands every such method (Swarm's, health's) to
its handler at once, as a streaming one that reads the one request itself: it must
come within `WAIT_SECONDS` (else DEADLINE_EXCEEDED), and at most `WAITING` calls
wait at once: a newcomer to a full room cuts (RESOURCE_EXHAUSTED) the oldest waiting
call of the network (`limits.host_key`) with the most calls waiting, its own when
that is the newcomer's. A caller that sends its message at once (every honest one)
waits for a round trip, so it is not cut unless `WAITING` newer calls come within
it. The server's cap needs `WAITING` places beyond its pools (`transport.start`).
A request message after the first is ignored; one that does not parse is
INVALID_ARGUMENT (gRPC answered UNKNOWN, naming its DecodeError). These refusals are
not counted in `status` (the interceptor sees no node's counters).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from declora.node.limits import host_key, peer_host

WAIT_SECONDS = 10.0  # a call's request message must come within this
WAITING = 64  # calls waiting for their request message at once


@dataclass(eq=False)
class Waiting:
    """One call waiting for its request: its network, and its timer while it waits."""

    network: str
    timer: asyncio.Timeout
    cut: bool = False


class Room:
    """The calls waiting for their request message, oldest first (`FirstMessage`)."""

    def __init__(self, size: int = WAITING) -> None:
        self.size = size
        self.calls: list[Waiting] = []

    def enter(self, call: Waiting) -> None:
        """Take `call` in, cutting one (its timer fires now) when the room is full."""
        if len(self.calls) >= self.size:
            counts: dict[str, int] = {}
            for c in self.calls:
                counts[c.network] = counts.get(c.network, 0) + 1
            busiest = max(counts.values())
            if counts.get(call.network, 0) == busiest:
                victim = next(c for c in self.calls if c.network == call.network)
            else:
                victim = next(c for c in self.calls if counts[c.network] == busiest)
            self.leave(victim)
            victim.cut = True
            victim.timer.reschedule(asyncio.get_running_loop().time())
        self.calls.append(call)

    def leave(self, call: Waiting) -> None:
        if call in self.calls:
            self.calls.remove(call)


class FirstMessage(grpc.aio.ServerInterceptor):
    """Serves each unary-request method as a streaming one whose request is awaited
    in `Room` (this module's docstring); streaming-request methods as they are."""

    def __init__(self, wait_seconds: float = WAIT_SECONDS, room: int = WAITING) -> None:
        self.wait_seconds = wait_seconds
        self.room = Room(room)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.response_streaming:
            stream = handler.unary_stream

            async def streamed(requests: Any, context: grpc.aio.ServicerContext) -> None:
                result = stream(await self.request(context), context)
                if inspect.isasyncgen(result):
                    async for reply in result:
                        await context.write(reply)
                elif inspect.isawaitable(result):
                    await result

            return grpc.stream_stream_rpc_method_handler(streamed, **serializers)
        unary = handler.unary_unary

        async def answered(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            return await unary(await self.request(context), context)

        return grpc.stream_unary_rpc_method_handler(answered, **serializers)

    async def request(self, context: grpc.aio.ServicerContext) -> Any:
        """The call's one request message, read within the room's rules; the call is
        aborted when it does not come (a cut, the wait over, the caller done)."""
        network = host_key(peer_host(context.peer()))
        message: Any = grpc.aio.EOF
        waiting: Waiting | None = None
        malformed = False
        try:
            async with asyncio.timeout(self.wait_seconds) as timer:
                waiting = Waiting(network, timer)
                self.room.enter(waiting)
                message = await context.read()
        except TimeoutError:
            pass
        except DecodeError:  # gRPC answered UNKNOWN, naming the exception
            malformed = True
        finally:
            if waiting is not None:
                self.room.leave(waiting)
        if message is not grpc.aio.EOF:
            return message
        if malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed request message")
        if waiting is not None and waiting.cut:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.room.size} calls already wait for their request message",
            )
        if waiting is not None and waiting.timer.expired():
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no request message within {self.wait_seconds:g}s",
            )
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request message")

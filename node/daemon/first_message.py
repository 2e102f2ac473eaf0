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
INVALID_ARGUMENT (gRPC answered UNKNOWN, naming its DecodeError).

A unary answer keeps its call's place in gRPC's cap until the caller took it: a caller
that announces a window of 0 bytes (HTTP/2 SETTINGS) or never reads gets no byte of
it, and gRPC waits for ever and cannot be told to give up (an answer that was not
read held its place when the handler aborted or was cancelled too). 224 Check calls
on one such connection held every place of a node, no credentials needed. So
`Unread` counts the answers handed to gRPC whose calls are not done: at most
`UNREAD_PER_NETWORK` of one network (its calls are refused before their handler runs
while it has so many, its answer refused after it when it reached so many) and
`UNREAD` in all (an answer past them is refused). A refusal carries no message, so
it is taken whatever the caller's window. Answers written by a streaming handler
(Pull, Revocations, Watch) wait within their handler, under its own bounds.
These refusals are not counted in `status` (the interceptor sees no node's counters).
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
UNREAD = 32  # unary answers not yet taken by their callers, at once (`Unread`)
UNREAD_PER_NETWORK = 8  # ...from one network (`limits.host_key`)


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


class Unread:
    """Unary answers handed to gRPC and not yet taken, by network (`FirstMessage`)."""

    def __init__(self, size: int = UNREAD, per_network: int = UNREAD_PER_NETWORK) -> None:
        self.size = size
        self.per_network = per_network
        self.total = 0
        self.by_network: dict[str, int] = {}

    def refusal(self, network: str, answering: bool) -> str | None:
        """Why a call of `network` may not go on (None: it may): before its handler
        runs (`answering` False) while its network has `per_network` answers unread;
        with its answer (`answering`) also while `size` answers in all are."""
        if self.by_network.get(network, 0) >= self.per_network:
            return f"{self.per_network} answers to {network} are not yet read by their callers"
        if answering and self.total >= self.size:
            return f"{self.size} answers are not yet read by their callers"
        return None

    def take(self, network: str) -> None:
        self.total += 1
        self.by_network[network] = self.by_network.get(network, 0) + 1

    def taken(self, network: str) -> None:
        """One answer to `network` was taken (its call is done)."""
        self.total -= 1
        left = self.by_network[network] - 1
        if left:
            self.by_network[network] = left
        else:
            del self.by_network[network]


class FirstMessage(grpc.aio.ServerInterceptor):
    """Serves each unary-request method as a streaming one whose request is awaited
    in `Room`, its unary answer counted in `Unread` (this module's docstring);
    streaming-request methods as they are."""

    def __init__(
        self, wait_seconds: float = WAIT_SECONDS, room: int = WAITING, unread: Unread | None = None
    ) -> None:
        self.wait_seconds = wait_seconds
        self.room = Room(room)
        self.unread = unread or Unread()

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
                network = host_key(peer_host(context.peer()))
                result = stream(await self.request(context, network), context)
                if inspect.isasyncgen(result):
                    async for reply in result:
                        await context.write(reply)
                elif inspect.isawaitable(result):
                    await result

            return grpc.stream_stream_rpc_method_handler(streamed, **serializers)
        unary = handler.unary_unary

        async def answered(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            network = host_key(peer_host(context.peer()))
            await self.admit(context, network, answering=False)
            reply = await unary(await self.request(context, network), context)
            await self.admit(context, network, answering=True)
            self.unread.take(network)
            context.add_done_callback(lambda _: self.unread.taken(network))
            return reply

        return grpc.stream_unary_rpc_method_handler(answered, **serializers)

    async def admit(self, context: grpc.aio.ServicerContext, network: str, answering: bool) -> None:
        """Abort the call (RESOURCE_EXHAUSTED) when `Unread.refusal` says so."""
        refusal = self.unread.refusal(network, answering)
        if refusal is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)

    async def request(self, context: grpc.aio.ServicerContext, network: str) -> Any:
        """The call's one request message, read within the room's rules (`network`:
        the caller's); the call is aborted when it does not come (a cut, the wait
        over, the caller done)."""
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

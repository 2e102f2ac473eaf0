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
call of the network (`limits.group_key`: an IPv6 /48, else `limits.host_key`) with
the most calls waiting, its own when that is the newcomer's (keyed by /64, one /48's
calls from 64 /64s each counted one, as many as an honest network's: the oldest
waiting call of any was cut, an honest one among them). A caller that sends its
message at once (every honest one) waits for a round trip, so it is not cut unless
`WAITING` newer calls come within it. The server's cap needs `WAITING` places beyond
its pools (`transport.start`). A request message after the first is ignored; one
that does not parse is INVALID_ARGUMENT (gRPC answered UNKNOWN, naming its
DecodeError), and so is any message of a streamed request (`Parsed`: a push's or a
reflection stream's, each of which logged an ERROR traceback, no credentials needed).
A method the node does not serve but a generated servicer declares (grpc.health.v1's
List) reads its request as any other, then answers UNIMPLEMENTED (its placeholder
raised NotImplementedError, and gRPC logged a traceback for each call).

A unary answer keeps its call's place in gRPC's cap until the caller took it: a caller
that announces a window of 0 bytes (HTTP/2 SETTINGS) or never reads gets no byte of
it, and gRPC waits for ever and cannot be told to give up (an answer that was not
read held its place when the handler aborted or was cancelled too). 224 Check calls
on one such connection held every place of a node, no credentials needed. So
`Unread` counts the answers handed to gRPC whose calls are not done: at most
`UNREAD_PER_NETWORK` of one network (its calls are refused before their handler runs
while it has so many, its answer refused after it when it reached so many) and
`UNREAD` in all (an answer past them is refused); an IPv6 site (`limits.site_key`,
a /48) holds at most `SITE_SHARE` networks' shares (4 /64s of one site took all 32).
A push's acknowledgement (Push: a streamed request, a unary answer) is counted so
too: a member that read none of its acks held a place for each push the node took
(--max-pushes-per-round for every round it would read, each round), after its
handler had freed the Push pool's. An answer refused past the bounds was handled (a
push taken, a Hello answered) all the same. The IP of a live neighbour (`neighbours`,
told by `service.SwarmService`) holds `ANSWERS_PER_NEIGHBOUR` kept places per live
neighbour there before its network's share, outside `UNREAD` (and a streamed
answer's, below, outside `STREAMS`): the unread answers of other networks, however
many, cannot take them; an IP whose neighbours left takes no more, and what it
holds counts until its calls are done: no IP takes a kept place while such IPs hold
`UNREAD` (`FirstMessage.kept`). A refusal carries no message, so it is taken
whatever the caller's window.

A streamed answer (Pull, Revocations, health's Watch, reflection) to such a caller
holds its place the same way, after its handler gave up on it too (`service`'s
`write_within`): 24 such Pulls held every place of a server whose cap was 16, and a
member's 12 Pulls held a node's Pull pool. So `streams` (an `Unread`) counts the
calls with a streamed answer from their request on until they are done: at most
`STREAMS_PER_NETWORK` of one network (its site: `SITE_SHARE` times that), `STREAMS`
in all (then RESOURCE_EXHAUSTED before the handler runs), so a network's unread
answers hold a few places while its connection lasts, and no other network's. A live
neighbour's IP holds `STREAMS_PER_NEIGHBOUR` kept places per live neighbour there
before its network's share: the nodes of one lab (127.0.0.1) or LAN (one /24) share a
network, and 3 of 7 neighbours that pulled a state at once were refused (a failed
catch-up: it backs off).

Each refusal is counted by reason (`REFUSALS`, a bounded set) through `refused`, which
the transport points at the node's counters, so `status` shows them (`Status.rejected`,
`declora_rejected_total`); none is logged: the caller needs no credentials. A
request that does not parse is `malformed_request`, apart from a push's `malformed`
messages (a member's), and a call its caller ended without a request message is
`no_request` (it cost the node one handler's start: counted so that a flood shows).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from declora.node.limits import address_key, group_key, host_key, peer_host, site_key

WAIT_SECONDS = 10.0  # a call's request message must come within this
WAITING = 64  # calls waiting for their request message at once
UNREAD = 32  # unary answers not yet taken by their callers, at once (`Unread`)
UNREAD_PER_NETWORK = 8  # ...from one network (`limits.host_key`)
SITE_SHARE = 2  # an IPv6 site (`limits.site_key`) holds this many networks' shares
# calls with a streamed answer at once, from their request on until done: the room the
# cap has for them (the pools of Pull and Revocations, 8 each; health.WATCHES and
# REFLECTIONS, 8 each), however long their callers leave them unread
STREAMS = 32
STREAMS_PER_NETWORK = 4  # ...of one network: less than the Pull pool
# ...kept for a live neighbour's IP, beyond its network's share, per live neighbour
# there (its Pull and its Revocations): the nodes of one LAN or lab share a network
STREAMS_PER_NEIGHBOUR = 2
# unread answers kept for a live neighbour's IP per live neighbour there: its Hello,
# Leave and push acknowledgements (`inbox.STREAMS_PER_PEER` pushes at once)
ANSWERS_PER_NEIGHBOUR = 4
KEPT = "kept:"  # `Unread`'s key prefix of a live neighbour's IP's kept places
# the counters of this interceptor's refusals (`FirstMessage.refused`)
REQUEST_TIMEOUT = "request_timeout"  # no request message within `WAIT_SECONDS`
WAITING_ROOM_CUT = "waiting_room_cut"  # cut as the oldest of the busiest network
UNREAD_SHARE = "unread_share"  # past `Unread`'s bounds of unary answers
STREAM_SHARE = "stream_share"  # past `streams`' bounds
# a request message that does not parse (`malformed`: a push's bad message, `wire`)
MALFORMED = "malformed_request"
NO_REQUEST = "no_request"  # a call its caller ended without a request message
REFUSALS = (
    REQUEST_TIMEOUT,
    WAITING_ROOM_CUT,
    UNREAD_SHARE,
    STREAM_SHARE,
    MALFORMED,
    NO_REQUEST,
)


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
    """Answers handed to gRPC and not yet taken, by network (`limits.host_key`) and, for
    IPv6, by site (`limits.site_key`: its /64s together hold at most `SITE_SHARE`
    networks' shares, so one site cannot take `size` by 4 of its /64s) (`FirstMessage`)."""

    def __init__(
        self,
        size: int = UNREAD,
        per_network: int = UNREAD_PER_NETWORK,
        what: str = "answers",
        done: str = "read by their callers",
        counter: str = UNREAD_SHARE,
    ) -> None:
        self.size = size
        self.per_network = per_network
        self.what = what
        self.done = done  # what a refusal says the counted calls are not yet
        self.counter = counter  # its refusals' reason (`REFUSALS`)
        self.total = 0  # answers not yet taken...
        self.shared = 0  # ...of which in no kept place (at most `size`)
        self.by_network: dict[str, int] = {}  # by network and by site

    def _keys(self, host: str, kept: bool = False) -> list[tuple[str, int]]:
        """The keys `host` counts towards, each with its bound (`kept`: a live
        neighbour's IP's own places, which `FirstMessage.stream` bounds)."""
        if kept:
            return [(KEPT + address_key(host), self.size)]
        keys = [(host_key(host), self.per_network)]
        site = site_key(host)
        if site is not None:
            keys.append((site, SITE_SHARE * self.per_network))
        return keys

    def refusal(self, host: str, answering: bool, kept: bool = False) -> str | None:
        """Why a call from remote `host` (`limits.peer_host`) may not go on (None: it
        may): before its handler runs (`answering` False) while its network or site
        has its share unread (not for a `kept` place); with its answer (`answering`)
        also while `size` are in other places than kept ones (`shared`), but for a
        `kept` place: networks that are no neighbour's, however many, cannot take a
        live neighbour's places."""
        for key, most in self._keys(host, kept):
            if self.by_network.get(key, 0) >= most:
                return f"{most} {self.what} to {key} are not yet {self.done}"
        if answering and not kept and self.shared >= self.size:
            return f"{self.size} {self.what} are not yet {self.done}"
        return None

    def take(self, host: str, kept: bool = False) -> None:
        self.total += 1
        if not kept:
            self.shared += 1
        for key, _ in self._keys(host, kept):
            self.by_network[key] = self.by_network.get(key, 0) + 1

    def taken(self, host: str, kept: bool = False) -> None:
        """One answer to `host` was taken (its call is done); `kept` as it was taken."""
        self.total -= 1
        if not kept:
            self.shared -= 1
        for key, _ in self._keys(host, kept):
            left = self.by_network[key] - 1
            if left:
                self.by_network[key] = left
            else:
                del self.by_network[key]


class FirstMessage(grpc.aio.ServerInterceptor):
    """Serves each method as a streaming one: a unary request is awaited in `Room`; a
    unary answer (a push's acknowledgement too) is counted in `unread`, a streamed
    one (reflection's too) in `streams` (this module's docstring)."""

    def __init__(
        self,
        wait_seconds: float = WAIT_SECONDS,
        room: int = WAITING,
        unread: Unread | None = None,
        streams: Unread | None = None,
    ) -> None:
        self.wait_seconds = wait_seconds
        self.room = Room(room)
        self.unread = unread or Unread()
        self.streams = streams or Unread(
            STREAMS, STREAMS_PER_NETWORK, "streamed answers", "done", STREAM_SHARE
        )
        # live neighbours at a remote IP (`limits.address_key`): none until the Swarm
        # service says (`service.SwarmService`)
        self.neighbours: Callable[[str], int] = lambda ip: 0
        # counts one refusal by reason (`REFUSALS`): none until the transport says
        self.refused: Callable[[str], None] = lambda reason: None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if _generated_default(handler):
            handler = _refusing(handler)
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and not handler.response_streaming:
            pushed = handler.stream_unary

            async def acknowledged(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                parsed = Parsed(requests, context, self.refused)
                return await self.answer(context, lambda: pushed(parsed, context))

            return grpc.stream_unary_rpc_method_handler(acknowledged, **serializers)
        if handler.request_streaming:
            both = handler.stream_stream

            async def relayed(requests: Any, context: grpc.aio.ServicerContext) -> None:
                parsed = Parsed(requests, context, self.refused)
                await self.stream(context, peer_host(context.peer()), lambda: both(parsed, context))

            return grpc.stream_stream_rpc_method_handler(relayed, **serializers)
        if handler.response_streaming:
            stream = handler.unary_stream

            async def streamed(requests: Any, context: grpc.aio.ServicerContext) -> None:
                host = peer_host(context.peer())
                request = await self.request(context, host)
                await self.stream(context, host, lambda: stream(request, context))

            return grpc.stream_stream_rpc_method_handler(streamed, **serializers)
        unary = handler.unary_unary

        async def answered(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            async def handle() -> Any:
                host = peer_host(context.peer())
                return await unary(await self.request(context, host), context)

            return await self.answer(context, handle)

        return grpc.stream_unary_rpc_method_handler(answered, **serializers)

    async def answer(self, context: grpc.aio.ServicerContext, handle: Callable[[], Any]) -> Any:
        """The unary answer `await handle()` (its handler) makes, counted in `unread`
        until its call is done (else RESOURCE_EXHAUSTED, before the handler runs or
        instead of the answer): in a kept place while its IP holds fewer than
        `ANSWERS_PER_NEIGHBOUR` for each live neighbour there, else in its network's
        share."""
        host = peer_host(context.peer())
        kept = self.kept(self.unread, host, ANSWERS_PER_NEIGHBOUR)
        await self.admit(context, self.unread, host, answering=False, kept=kept)
        reply = await handle()
        kept = self.kept(self.unread, host, ANSWERS_PER_NEIGHBOUR)
        await self.admit(context, self.unread, host, answering=True, kept=kept)
        self.unread.take(host, kept)
        context.add_done_callback(lambda _: self.unread.taken(host, kept))
        return reply

    def kept(self, unread: Unread, host: str, per_neighbour: int) -> bool:
        """Whether remote `host`'s IP has a kept place free in `unread`: fewer than
        `per_neighbour` for each live neighbour there (`neighbours`), while the kept
        places of IPs whose neighbours all left number fewer than `unread.size`. Such
        an IP keeps what it holds until those calls are done (gRPC waits for ever for
        an unread answer): a member cycling ids through IPs (live, 4 unread Checks,
        Leave, the next IP) held 4 more at each, without bound, until gRPC's cap
        refused every call; now its cycles stop there, and live neighbours keep their
        places until then."""
        ip = address_key(host)
        if unread.by_network.get(KEPT + ip, 0) >= per_neighbour * self.neighbours(ip):
            return False
        held = ((k[len(KEPT) :], n) for k, n in unread.by_network.items() if k.startswith(KEPT))
        left = sum(n for i, n in held if not self.neighbours(i))
        return left < unread.size

    async def stream(
        self, context: grpc.aio.ServicerContext, host: str, handle: Callable[[], Any]
    ) -> None:
        """Write the streamed answer to `host` that `handle()` (its handler) makes,
        counted in `streams` until its call is done (else RESOURCE_EXHAUSTED, before
        the handler runs): in a kept place while its IP holds fewer than
        `STREAMS_PER_NEIGHBOUR` for each live neighbour there, else in its network's
        share."""
        kept = self.kept(self.streams, host, STREAMS_PER_NEIGHBOUR)
        await self.admit(context, self.streams, host, answering=True, kept=kept)
        self.streams.take(host, kept)
        context.add_done_callback(lambda _: self.streams.taken(host, kept))
        await _written(handle(), context)

    async def admit(
        self,
        context: grpc.aio.ServicerContext,
        unread: Unread,
        host: str,
        answering: bool,
        kept: bool = False,
    ) -> None:
        """Abort the call (RESOURCE_EXHAUSTED) when `unread.refusal` says so."""
        refusal = unread.refusal(host, answering, kept)
        if refusal is not None:
            self.refused(unread.counter)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)

    async def request(self, context: grpc.aio.ServicerContext, host: str) -> Any:
        """The call's one request message, read within the room's rules (`host`: the
        caller's, counted by `limits.group_key`); the call is aborted when it does not
        come (a cut, the wait over, the caller done)."""
        message: Any = grpc.aio.EOF
        waiting: Waiting | None = None
        malformed = False
        try:
            async with asyncio.timeout(self.wait_seconds) as timer:
                waiting = Waiting(group_key(host), timer)
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
            self.refused(MALFORMED)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed request message")
        if waiting is not None and waiting.cut:
            self.refused(WAITING_ROOM_CUT)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.room.size} calls already wait for their request message",
            )
        if waiting is not None and waiting.timer.expired():
            self.refused(REQUEST_TIMEOUT)
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no request message within {self.wait_seconds:g}s",
            )
        self.refused(NO_REQUEST)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request message")


class Parsed:
    """A streamed request's messages: one that does not parse aborts the call
    INVALID_ARGUMENT, counted `MALFORMED` (gRPC raised its DecodeError into the
    handler: UNKNOWN, and an ERROR traceback in the node's log for each such call)."""

    def __init__(
        self, requests: Any, context: grpc.aio.ServicerContext, refused: Callable[[str], None]
    ) -> None:
        self.it = aiter(requests)
        self.context = context
        self.refused = refused

    def __aiter__(self) -> Parsed:
        return self

    async def __anext__(self) -> Any:
        try:
            return await anext(self.it)
        except DecodeError:
            self.refused(MALFORMED)
            await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed request message")
            raise  # unreachable: abort raises


def _generated_default(handler: grpc.RpcMethodHandler) -> bool:
    """Whether `handler` is a generated servicer's placeholder (a `*_pb2_grpc` module's
    method, which raises NotImplementedError: gRPC logged an ERROR traceback for each
    call, such as grpc.health.v1's List, which the node does not serve)."""
    behaviours = (
        handler.unary_unary,
        handler.unary_stream,
        handler.stream_unary,
        handler.stream_stream,
    )
    behaviour = next(b for b in behaviours if b is not None)
    return str(getattr(behaviour, "__module__", "")).endswith("_pb2_grpc")


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` (of its kind and serializers) answering UNIMPLEMENTED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this node does not serve it")

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


async def _written(result: Any, context: grpc.aio.ServicerContext) -> None:
    """Write what a streaming handler's `result` yields (a coroutine writes its own)."""
    if inspect.isasyncgen(result):
        async for reply in result:
            await context.write(reply)
    elif inspect.isawaitable(result):
        await result

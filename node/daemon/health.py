"""grpc.health.v1 and server reflection of a daemon, on the event loop.

- health and reflection refuse, under mTLS, a caller the Swarm service refuses for its
  certificate (no common name, revoked by --tls-crl: `auth.caller_refusal`), with
  PERMISSION_DENIED; they run on the event loop, `WATCHES` and `REFLECTIONS` streams
  of each at most (then RESOURCE_EXHAUSTED): streams held open by anyone never take a
  thread of the default executor (training and payload checks run there);
- health answers liveness for "" and the Swarm service (SERVING once the node serves)
  and readiness for `READY_SERVICE` ("declora.ready": SERVING while it also has a live
  neighbour, or is --solo), for Kubernetes probes and load balancers;
- a reflection stream lasts at most `REFLECTION_SECONDS` and a Watch `WATCH_SECONDS`
  (then DEADLINE_EXCEEDED), and one network (`limits.host_key`) holds at most
  `REFLECTIONS_PER_NETWORK` and `WATCHES_PER_NETWORK` of them: a stranger's 8
  streams (reflection's without a request, Watches) held every place for as long as
  it liked;
- Check is rate-limited per remote address (and IPv6 /64) as Status is:
  `CHECKS_PER_MINUTE`, then RESOURCE_EXHAUSTED (a flood of Checks from one address,
  1,500 a second, halved a node's training steps; a probe asks once in seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from declora.node.limits import STATUS_PER_MINUTE, AddressBuckets, host_key, peer_host
from declora.node.security import TlsFiles

SERVICE_NAME = "declora.v1.Swarm"
# grpc.health.v1's readiness: SERVING while the node serves and trains with at least one
# live neighbour (or is --solo); "" and SERVICE_NAME are liveness (serving at all)
READY_SERVICE = "declora.ready"
READY_POLL = 1.0  # seconds between looks at the live neighbours for a Watch of it
WATCHES = 8  # grpc.health.v1 Watch streams open at once (probes use Check)
WATCH_SECONDS = 300.0  # a Watch's life (a watcher opens the next one)
REFLECTIONS = 8  # server reflection streams open at once (grpcurl)
REFLECTIONS_PER_NETWORK = 2  # ...from one network (grpcurl opens one a command)
REFLECTION_SECONDS = 30.0  # a reflection stream's life (grpcurl's lasts milliseconds)
WATCHES_PER_NETWORK = 2  # Watch streams from one network
CHECKS_PER_MINUTE = STATUS_PER_MINUTE  # Check calls a minute from one remote address


class StreamShare:
    """Streams of one kind open at once: at most `most`, `per_network` of one network
    (`limits.host_key`)."""

    def __init__(self, what: str, most: int, per_network: int) -> None:
        self.what = what
        self.most = most
        self.per_network = per_network
        self.streams = 0
        self.by_network: dict[str, int] = {}

    async def enter(self, context: grpc.aio.ServicerContext) -> str:
        """Count the caller's stream (its network returned, for `leave`), or abort it
        (RESOURCE_EXHAUSTED) past the bounds."""
        network = host_key(peer_host(context.peer()))
        too_many = f"{self.most} {self.what} streams already open on this node"
        if self.streams >= self.most:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, too_many)
        if self.by_network.get(network, 0) >= self.per_network:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.per_network} {self.what} streams already open on this node from {network}",
            )
        self.streams += 1
        self.by_network[network] = self.by_network.get(network, 0) + 1
        return network

    def leave(self, network: str) -> None:
        self.streams -= 1
        left = self.by_network[network] - 1
        if left:
            self.by_network[network] = left
        else:
            del self.by_network[network]


async def _certificate(context: grpc.aio.ServicerContext, tls: TlsFiles | None) -> None:
    """Abort (PERMISSION_DENIED) a caller whose certificate may call nothing under mTLS."""
    from declora.node.daemon.auth import caller_refusal  # auth -> status -> peers -> here

    bad = caller_refusal(context, tls)
    if bad is not None:
        await context.abort(bad.code, bad.reason)


Status: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus
SERVING, NOT_SERVING = (
    health_pb2.HealthCheckResponse.SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING,
)


class Health(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 on the event loop: Check (`CHECKS_PER_MINUTE` from one address),
    and Watch for at most `WATCHES` callers at once, `WATCHES_PER_NETWORK` of one
    network (then RESOURCE_EXHAUSTED), each for `WATCH_SECONDS`; under
    mTLS (`tls`) not to a caller refused for its certificate (a Watch looks again each
    time it wakes, at least every `READY_POLL` s under --tls-crl, and ends
    PERMISSION_DENIED once the list revokes its caller). `set` is synchronous.
    `READY_SERVICE` is SERVING while "" is and `ready()` is true (looked at on each
    Check, every `READY_POLL` s for a Watch)."""

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.tls = tls
        self.status: dict[str, Status] = {}
        self.changed = asyncio.Event()
        self.watches = StreamShare("Watch", WATCHES, WATCHES_PER_NETWORK)
        self.ready: Callable[[], bool] = lambda: False
        self.checks = AddressBuckets(CHECKS_PER_MINUTE)

    def set(self, service: str, status: Status) -> None:
        self.status[service] = status
        self.changed.set()  # wakes the watchers of the status before
        self.changed = asyncio.Event()

    def status_of(self, service: str) -> Status | None:
        """What Check answers for `service`; None: no such service."""
        if service == READY_SERVICE and "" in self.status:
            return SERVING if self.status[""] == SERVING and self.ready() else NOT_SERVING
        return self.status.get(service)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        await _certificate(context, self.tls)
        if refused := self.checks.refusal(peer_host(context.peer())):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"more than {refused.per_minute} Check requests a minute from {refused.who()}",
            )
        status = self.status_of(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        await _certificate(context, self.tls)
        network = await self.watches.enter(context)
        try:
            async with asyncio.timeout(WATCH_SECONDS):
                await self._watch(request.service, context)
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"a Watch lasts at most {WATCH_SECONDS:g}s: watch again",
            )
        finally:
            self.watches.leave(network)

    async def _watch(self, service: str, context: grpc.aio.ServicerContext) -> None:
        """Write `service`'s status each time it changes, for ever."""
        last = None
        # neighbours come and go unannounced; a --tls-crl may revoke the caller
        polled = service == READY_SERVICE or bool(self.tls and self.tls.crl)
        while True:
            changed = self.changed
            if last is not None:  # its caller revoked since: the stream ends
                await _certificate(context, self.tls)
            status = self.status_of(service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), READY_POLL if polled else None)


class Reflection(reflection.aio.ReflectionServicer, StreamShare):
    """Server reflection, at most `REFLECTIONS` streams at once and
    `REFLECTIONS_PER_NETWORK` from one network (then RESOURCE_EXHAUSTED), each for
    `REFLECTION_SECONDS` at most (then DEADLINE_EXCEEDED); under mTLS (`tls`) not to
    a caller refused for its certificate."""

    def __init__(self, service_names: tuple[str, ...], tls: TlsFiles | None = None) -> None:
        reflection.aio.ReflectionServicer.__init__(self, service_names)
        StreamShare.__init__(self, "reflection", REFLECTIONS, REFLECTIONS_PER_NETWORK)
        self.tls = tls

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        await _certificate(context, self.tls)
        network = await self.enter(context)
        end = asyncio.get_running_loop().time() + REFLECTION_SECONDS
        try:
            requests = _read_until(request_iterator, context, end)
            async for reply in super().ServerReflectionInfo(requests, context):
                yield reply
        finally:
            self.leave(network)


async def _read_until(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext, end: float
) -> AsyncIterator[Any]:
    """`requests`, each read before loop time `end` (else the call is aborted)."""
    it = aiter(requests)
    while True:
        try:
            async with asyncio.timeout_at(end):
                request = await anext(it)
        except StopAsyncIteration:
            return
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"a reflection stream lasts at most {REFLECTION_SECONDS:g}s",
            )
        yield request

"""gRPC plumbing of a daemon: options, channels, the server and its health service.

- every server and channel uses `grpc_options` (message limits, keepalive, a local
  subchannel pool so a peer that is back is dialled at once);
- with TLS files every connection, both ways, is mutual TLS;
- `close_later` closes a channel with a grace period, so calls still in flight end by
  their own deadline instead of being cancelled (a cancelled grpc.aio call raises
  CancelledError into the caller);
- `start` returns the port actually bound (`:0` picks a free one); `reserve` binds a
  plain socket first, at once (a port in use fails before anything heavy loads), and
  `start` swaps it for the gRPC server; the server never shares its port
  (`grpc.so_reuseport` off: a second node on a port in use is an error, not a twin);
- with a `DialLog` every channel records how its handshakes end;
- health and reflection refuse, under mTLS, a caller the Swarm service refuses for its
  certificate (no common name, revoked by --tls-crl: `auth.caller_refusal`), with
  PERMISSION_DENIED; they run on the event loop, `WATCHES` and `REFLECTIONS` streams
  of each at most, with room of their own in gRPC's cap on calls in flight: streams
  held open by anyone never take a thread of the default executor (training and
  payload checks run there) nor the room of the Swarm service's calls;
- health answers liveness for "" and the Swarm service (SERVING once the node serves)
  and readiness for `READY_SERVICE` ("declora.ready": SERVING while it also has a live
  neighbour, or is --solo; `ready_when`), for Kubernetes probes and load balancers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from declora.node.address import split_address
from declora.node.daemon.startup import CONFIG, DialLog, UserError
from declora.node.security import TlsFiles
from declora.node.settings import NodeSettings
from declora.proto import pb_grpc

SERVICE_NAME = "declora.v1.Swarm"
# grpc.health.v1's readiness: SERVING while the node serves and trains with at least one
# live neighbour (or is --solo); "" and SERVICE_NAME are liveness (serving at all)
READY_SERVICE = "declora.ready"
READY_POLL = 1.0  # seconds between looks at the live neighbours for a Watch of it
WATCHES = 8  # grpc.health.v1 Watch streams open at once (probes use Check)
REFLECTIONS = 8  # server reflection streams open at once (grpcurl)
# A connection with no call for this long is closed by the server (GOAWAY; the client
# reconnects at its next call): keepalive pings keep an idle connection open, so a
# client that connects and never calls would hold its socket for as long as it likes.
IDLE_CONNECTION_MS = 300_000


class ServerError(UserError):
    """The server could not bind its address (in use, not local, not permitted)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, CONFIG, hint)


BIND_HINTS = {
    errno.EADDRINUSE: "another process (another node?) holds that port: stop it or pick "
    "another --listen",
    errno.EADDRNOTAVAIL: "--listen must name an address of this machine (0.0.0.0: all)",
    errno.EACCES: "ports below 1024 need privileges: pick a higher --listen port",
}


def reserve_port(listen: str) -> socket.socket | None:
    """Bind and listen on `listen` with a plain socket (ServerError when it cannot);
    None for port 0 (any free port: nothing to reserve)."""
    if listen.endswith(":0"):  # any free port: nothing to reserve
        return None
    host, port = split_address(listen)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ServerError(
            f"cannot listen on {listen}: {exc.strerror}", BIND_HINTS[errno.EADDRNOTAVAIL]
        ) from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
    except OSError as exc:
        sock.close()
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ServerError(
            f"cannot listen on {listen}: {why}", BIND_HINTS.get(exc.errno or 0, "")
        ) from exc
    return sock


def grpc_options(settings: NodeSettings) -> list[tuple[str, int]]:
    """Message size limits and keepalive, the same on servers and clients."""
    limit = settings.chunk_kib * 1024 + 64 * 1024
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        # A new channel to a peer that is back connects at once, instead of sharing a
        # process-wide subchannel that still sits in reconnect backoff (up to 120 s).
        ("grpc.use_local_subchannel_pool", 1),
    ]


def _too_many(what: str, most: int) -> str:
    return f"{most} {what} streams already open on this node"


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
    """grpc.health.v1 on the event loop: Check, and Watch for at most `WATCHES` callers
    at once (then RESOURCE_EXHAUSTED); under mTLS (`tls`) not to a caller refused for
    its certificate (a Watch looks again each time it wakes, at least every
    `READY_POLL` s under --tls-crl, and ends PERMISSION_DENIED once the list revokes
    its caller). `set` is synchronous. `READY_SERVICE` is SERVING while "" is and
    `ready()` is true (looked at on each Check, every `READY_POLL` s for a Watch)."""

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.tls = tls
        self.status: dict[str, Status] = {}
        self.changed = asyncio.Event()
        self.watching = 0
        self.ready: Callable[[], bool] = lambda: False

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
        status = self.status_of(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        await _certificate(context, self.tls)
        if self.watching >= WATCHES:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _too_many("Watch", WATCHES))
        self.watching += 1
        try:
            last = None
            # neighbours come and go unannounced; a --tls-crl may revoke the caller
            polled = request.service == READY_SERVICE or bool(self.tls and self.tls.crl)
            while True:
                changed = self.changed
                if last is not None:  # its caller revoked since: the stream ends
                    await _certificate(context, self.tls)
                status = self.status_of(request.service)
                if status is None:
                    status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                if status != last:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    last = status
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), READY_POLL if polled else None)
        finally:
            self.watching -= 1


class Reflection(reflection.aio.ReflectionServicer):
    """Server reflection, at most `REFLECTIONS` streams at once (then RESOURCE_EXHAUSTED);
    under mTLS (`tls`) not to a caller refused for its certificate."""

    def __init__(self, service_names: tuple[str, ...], tls: TlsFiles | None = None) -> None:
        super().__init__(service_names)
        self.tls = tls
        self.streams = 0

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        await _certificate(context, self.tls)
        if self.streams >= REFLECTIONS:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, _too_many("reflection", REFLECTIONS)
            )
        self.streams += 1
        try:
            async for reply in super().ServerReflectionInfo(request_iterator, context):
                yield reply
        finally:
            self.streams -= 1


class Transport:
    """Channels to peers and this node's server."""

    def __init__(self, settings: NodeSettings, tls: TlsFiles | None) -> None:
        self.settings = settings
        self.tls = tls
        self.health = Health(tls)
        self.server: grpc.aio.Server | None = None
        self.dial_log: DialLog | None = None
        self.reserved: socket.socket | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._before_stop: list[Callable[[], None]] = []

    def reserve(self) -> None:
        """Hold the listen port now (ServerError when it is taken); `start` binds it."""
        self.reserved = reserve_port(self.settings.listen)

    def channel(self, address: str) -> grpc.aio.Channel:
        """A channel to `address`: mTLS when configured, else plaintext."""
        options = grpc_options(self.settings)
        watch = [self.dial_log.interceptor(address)] if self.dial_log is not None else None
        if self.tls is None:
            return grpc.aio.insecure_channel(address, options=options, interceptors=watch)
        credentials = self.tls.channel_credentials()
        return grpc.aio.secure_channel(address, credentials, options=options, interceptors=watch)

    def close_later(self, channel: grpc.aio.Channel, grace: float) -> None:
        """Close `channel` once its calls in flight are done (at most `grace` seconds)."""
        task = asyncio.get_running_loop().create_task(channel.close(grace=grace))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def start(self, servicer: pb_grpc.SwarmServicer, max_rpcs: int) -> int:
        """Serve `servicer`, health and reflection on the listen address (at most
        `max_rpcs` Swarm calls at once, and the streams of health and reflection, in
        gRPC's own cap on calls in flight); the bound port."""
        s = self.settings
        options = [
            *grpc_options(s),
            ("grpc.so_reuseport", 0),
            ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
        ]
        cap = max_rpcs + WATCHES + REFLECTIONS
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=cap)
        pb_grpc.add_SwarmServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            Reflection(names, self.tls), server
        )
        if self.reserved is not None:  # hand the reserved port over to gRPC
            self.reserved.close()
            self.reserved = None
        try:
            if self.tls is None:
                port = server.add_insecure_port(s.listen)
            else:
                port = server.add_secure_port(s.listen, self.tls.server_credentials())
        except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
            raise ServerError(f"cannot listen on {s.listen}: {exc}") from exc
        if port == 0:
            raise ServerError(f"cannot listen on {s.listen}")
        await server.start()
        self.server = server
        self.set_serving(False)
        return port

    def set_serving(self, serving: bool) -> None:
        """What grpc.health.v1 answers, for the server and the Swarm service (liveness);
        `READY_SERVICE` also needs `ready_when`'s test."""
        status = SERVING if serving else NOT_SERVING
        self.health.set("", status)
        self.health.set(SERVICE_NAME, status)

    def ready_when(self, live_neighbours: Callable[[], int]) -> None:
        """`READY_SERVICE` is SERVING while serving with `live_neighbours()` above 0, or
        always while serving under --solo (it trains with no one to wait for)."""
        solo = self.settings.solo
        self.health.ready = lambda: solo or live_neighbours() > 0

    def on_stop(self, end_calls: Callable[[], None]) -> None:
        """Call `end_calls` when the server stops, before its grace: a part whose calls
        may outlast the grace (a push still arriving) ends them, so gRPC cancels none
        under its handler (a CancelledError traceback at exit)."""
        self._before_stop.append(end_calls)

    async def stop(self, grace: float = 1.0) -> None:
        for end_calls in self._before_stop:
            end_calls()
        if self.reserved is not None:
            self.reserved.close()
            self.reserved = None
        if self.server is not None:
            await self.server.stop(grace=grace)

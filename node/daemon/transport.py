"""gRPC plumbing of a daemon: options, channels and the server.

- every server and channel uses `grpc_options` (message limits, keepalive, a local
  subchannel pool so a peer that is back is dialled at once);
- with TLS files every connection, both ways, is mutual TLS;
- `close_later` closes a channel with a grace period, so calls still in flight end by
  their own deadline instead of being cancelled (a cancelled grpc.aio call raises
  CancelledError into the caller);
- `start` returns the port actually bound (`:0` picks a free one); `reserve` holds the
  port first (`listen.reserve_port`), and `start` swaps it for the gRPC server; the
  server never shares its port (`grpc.so_reuseport` off: a second node on a port in
  use is an error, not a twin);
- with a `DialLog` every channel records how its handshakes end;
- the server serves health and reflection (`health`), with room of their own in gRPC's
  cap on calls in flight, so streams held open by anyone never take the room of the
  Swarm service's calls; so do calls waiting for their request message
  (`first_message`: calls that send headers and never a message keep no caller out)
  and unary answers their callers have not read yet (`first_message.Unread`); calls
  with a streamed answer, read or not, are at most `first_message.STREAMS`, within the
  room of the Pull and Revocations pools, the Watches and the reflection streams;
- `stop` first lets the parts end calls that would outlast its grace (`on_stop`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from declora.node.daemon.first_message import UNREAD, WAITING, FirstMessage
from declora.node.daemon.health import (
    NOT_SERVING,
    READY_SERVICE,
    REFLECTIONS,
    SERVICE_NAME,
    SERVING,
    WATCHES,
    Health,
    Reflection,
)
from declora.node.daemon.listen import ServerError, reserve_port
from declora.node.daemon.startup import DialLog
from declora.node.security import TlsFiles
from declora.node.settings import NodeSettings
from declora.proto import pb_grpc

__all__ = ["READY_SERVICE", "SERVICE_NAME", "Transport", "grpc_options"]

# A connection with no call for this long is closed by the server (GOAWAY; the client
# reconnects at its next call): keepalive pings keep an idle connection open, so a
# client that connects and never calls would hold its socket for as long as it likes.
IDLE_CONNECTION_MS = 300_000
HANDSHAKE_MS = 10_000  # a new connection's TLS and HTTP/2 handshake must end within this
# Calls one connection may hold at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS; gRPC
# refuses more with REFUSED_STREAM before the server sees them, and an honest client
# queues them): a stranger opening header-only calls faster than the node cuts them
# (`first_message`) on 8 connections had every honest Status refused 'Concurrent RPC
# limit exceeded!' (0 of 11 in 10 s); at this bound, none (35 of 35).
STREAMS_PER_CONNECTION = 64


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
        # live neighbours at a remote IP, for `first_message.FirstMessage.neighbours`
        # (set by `service.SwarmService`; none before)
        self.neighbours: Callable[[str], int] = lambda ip: 0
        # counts one of `first_message`'s refusals by reason (set by
        # `service.SwarmService`: the node's counters; none before)
        self.refused: Callable[[str], None] = lambda reason: None

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
            # a connection that made no TLS/HTTP/2 handshake holds a file descriptor:
            # closed after 10 s, not gRPC's 120 s (a stranger's silent connections;
            # tests/test_revsec4_handshake_timeout.py: an mTLS Status over 1 Mbit/s and
            # 100 ms each way still gets through)
            ("grpc.server_handshake_timeout_ms", HANDSHAKE_MS),
            ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
        ]
        cap = max_rpcs + WATCHES + REFLECTIONS + WAITING + UNREAD
        first_message = FirstMessage()
        first_message.neighbours = lambda ip: self.neighbours(ip)  # looked up at each call
        first_message.refused = lambda reason: self.refused(reason)
        server = grpc.aio.server(
            options=options, maximum_concurrent_rpcs=cap, interceptors=[first_message]
        )
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

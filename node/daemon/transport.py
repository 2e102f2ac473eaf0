"""gRPC plumbing of a daemon: options, channels, the server and its health service.

- every server and channel uses `grpc_options` (message limits, keepalive, a local
  subchannel pool so a peer that is back is dialled at once);
- with TLS files every connection, both ways, is mutual TLS;
- `close_later` closes a channel with a grace period, so calls still in flight end by
  their own deadline instead of being cancelled (a cancelled grpc.aio call raises
  CancelledError into the caller);
- `start` returns the port actually bound (`:0` picks a free one).
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from declora.node.security import TlsFiles
from declora.node.settings import NodeSettings
from declora.proto import pb_grpc

SERVICE_NAME = "declora.v1.Swarm"


class ServerError(RuntimeError):
    """The server could not bind its address (in use, not local, not permitted)."""


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
        self.health = health.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def channel(self, address: str) -> grpc.aio.Channel:
        """A channel to `address`: mTLS when configured, else plaintext."""
        options = grpc_options(self.settings)
        if self.tls is None:
            return grpc.aio.insecure_channel(address, options=options)
        return grpc.aio.secure_channel(address, self.tls.channel_credentials(), options=options)

    def close_later(self, channel: grpc.aio.Channel, grace: float) -> None:
        """Close `channel` once its calls in flight are done (at most `grace` seconds)."""
        task = asyncio.get_running_loop().create_task(channel.close(grace=grace))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def start(self, servicer: pb_grpc.SwarmServicer) -> int:
        """Serve `servicer`, health and reflection on the listen address; the bound port."""
        s = self.settings
        server = grpc.aio.server(
            options=grpc_options(s), maximum_concurrent_rpcs=s.max_concurrent_streams
        )
        pb_grpc.add_SwarmServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
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
        """What grpc.health.v1 answers, for the server and the Swarm service."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)
        self.health.set(SERVICE_NAME, status)

    async def stop(self, grace: float = 1.0) -> None:
        if self.server is not None:
            await self.server.stop(grace=grace)

"""An in-memory transport for a daemon's parts (like httpx's MockTransport).

`MemoryTransport` replaces a daemon's gRPC channels: a stub call on a channel to
`address` serializes the request, hands it to the `SwarmService` registered for that
address in the shared `MemoryNetwork`, and deserializes the answer, so the parts run
their real code paths with no sockets. A servicer's `context.abort` becomes the same
`grpc.aio.AioRpcError` a client would see; an address with no service answers
UNAVAILABLE, as a refused connection does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc

from declora.node.daemon.transport import Transport
from declora.proto import pb, pb_grpc

REQUESTS: dict[str, Any] = {
    "Handshake": pb.Hello,
    "Push": pb.Chunk,
    "Pull": pb.PullRequest,
    "Leave": pb.LeaveNotice,
    "Status": pb.StatusRequest,
}


async def _serving(request: Any, context: Any) -> Any:
    from grpc_health.v1 import health_pb2

    return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class MemoryContext:
    """What a servicer may use of `grpc.aio.ServicerContext`."""

    def __init__(self, caller: str) -> None:
        self.caller = caller
        self.written: list[Any] = []  # a streaming reply's messages (`write`)

    def peer(self) -> str:
        return self.caller

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Abort(code, details)

    async def write(self, message: Any) -> None:
        self.written.append(message)


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, None, None, details=details)


class MemoryNetwork:
    """Addresses to servicers; `down` addresses refuse every call."""

    def __init__(self) -> None:
        self.services: dict[str, pb_grpc.SwarmServicer] = {}
        self.calls: list[tuple[str, str]] = []  # (address, method)

    def serve(self, address: str, service: pb_grpc.SwarmServicer) -> None:
        self.services[address] = service

    def take_down(self, address: str) -> None:
        self.services.pop(address, None)


class MemoryChannel:
    """Enough of `grpc.aio.Channel` for `SwarmStub`."""

    def __init__(self, network: MemoryNetwork, address: str, caller: str) -> None:
        self.network, self.address, self.caller = network, address, caller

    def _service(self, method: str) -> Callable[..., Any]:
        self.network.calls.append((self.address, method))
        service = self.network.services.get(self.address)
        if service is None:
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, f"connection to {self.address} refused")
        if method not in REQUESTS:  # e.g. grpc.health.v1: served, and answers SERVING
            return _serving
        return getattr(service, method)  # type: ignore[no-any-return]

    def unary_unary(self, path: str, request_serializer: Any, response_deserializer: Any, **_: Any):  # type: ignore[no-untyped-def]
        method = path.rsplit("/", 1)[1]

        async def call(request: Any, timeout: float | None = None) -> Any:
            handler = self._service(method)
            kind = REQUESTS.get(method)
            wire = request if kind is None else kind.FromString(request_serializer(request))
            try:
                reply = await handler(wire, MemoryContext(self.caller))
            except _Abort as exc:
                raise _rpc_error(exc.code, exc.details) from None
            return response_deserializer(reply.SerializeToString())

        return call

    def stream_unary(
        self, path: str, request_serializer: Any, response_deserializer: Any, **_: Any
    ):  # type: ignore[no-untyped-def]
        method = path.rsplit("/", 1)[1]

        async def call(
            requests: Iterable[Any] | AsyncIterator[Any], timeout: float | None = None
        ) -> Any:
            handler = self._service(method)

            async def stream() -> AsyncIterator[Any]:
                if hasattr(requests, "__aiter__"):
                    async for r in requests:  # type: ignore[union-attr]
                        yield REQUESTS[method].FromString(request_serializer(r))
                else:
                    for r in requests:  # type: ignore[union-attr]
                        yield REQUESTS[method].FromString(request_serializer(r))

            try:
                reply = await handler(stream(), MemoryContext(self.caller))
            except _Abort as exc:
                raise _rpc_error(exc.code, exc.details) from None
            return response_deserializer(reply.SerializeToString())

        return call

    def unary_stream(
        self, path: str, request_serializer: Any, response_deserializer: Any, **_: Any
    ):  # type: ignore[no-untyped-def]
        method = path.rsplit("/", 1)[1]

        def call(request: Any, timeout: float | None = None) -> AsyncIterator[Any]:
            async def replies() -> AsyncIterator[Any]:
                handler = self._service(method)
                wire = REQUESTS[method].FromString(request_serializer(request))
                context = MemoryContext(self.caller)
                try:
                    await handler(wire, context)  # it writes its replies (`write`)
                    for reply in context.written:
                        yield response_deserializer(reply.SerializeToString())
                except _Abort as exc:
                    raise _rpc_error(exc.code, exc.details) from None

            return replies()

        return call

    async def close(self, grace: float | None = None) -> None:
        return None


class MemoryTransport(Transport):
    """A daemon's transport whose channels go through a `MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.network = network

    def channel(self, address: str) -> Any:
        return MemoryChannel(self.network, address, caller=f"ipv4:{self.settings.advertise}")

    def close_later(self, channel: Any, grace: float) -> None:
        return None

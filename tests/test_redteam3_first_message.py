"""`first_message.FirstMessage` on a bare gRPC server (no model, fast): a streamed
request's message that does not parse is INVALID_ARGUMENT `malformed_request`, and a
method a generated servicer only declares (grpc.health.v1's List) is UNIMPLEMENTED;
before, each answered from an exception in the handler, which gRPC logged as an ERROR
traceback (UNKNOWN for the first), a log flood open to anyone who reaches the port."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from declora.node.daemon.first_message import MALFORMED, FirstMessage
from declora.proto import pb, pb_grpc


class Pusher(pb_grpc.SwarmServicer):
    """Reads a push to its end."""

    async def Push(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async for _ in request_iterator:
            pass
        return pb.PushAck(accepted=True)


def test_bad_stream_messages_and_placeholder_methods_are_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused: list[str] = []

    async def run() -> dict[str, grpc.StatusCode]:
        interceptor = FirstMessage()
        interceptor.refused = refused.append
        server = grpc.aio.server(interceptors=[interceptor])
        pb_grpc.add_SwarmServicer_to_server(Pusher(), server)
        health_pb2_grpc.add_HealthServicer_to_server(health_pb2_grpc.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        good = pb.Chunk(data=b"x").SerializeToString()
        codes = {}
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                push = channel.stream_unary("/declora.v1.Swarm/Push")
                for name, messages in [("first", [b"\xff\xff"]), ("second", [good, b"\xff\xff"])]:
                    try:
                        await push(iter(messages), timeout=10)
                        codes[name] = grpc.StatusCode.OK
                    except grpc.aio.AioRpcError as exc:
                        codes[name] = exc.code()
                try:
                    await channel.unary_unary("/grpc.health.v1.Health/List")(b"", timeout=10)
                except grpc.aio.AioRpcError as exc:
                    codes["List"] = exc.code()
        finally:
            await server.stop(None)
        return codes

    codes = asyncio.run(run())
    bad = grpc.StatusCode.INVALID_ARGUMENT
    assert codes == {"first": bad, "second": bad, "List": grpc.StatusCode.UNIMPLEMENTED}
    assert refused == [MALFORMED, MALFORMED]
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("grpc")]
    assert not [m for m in logged if "Unexpected" in m], logged

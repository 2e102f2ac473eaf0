"""A health Watch of `declora.ready` or of "" (under --tls-crl both looked at every
`READY_POLL` s) from a caller that --tls-crl revokes while it watches ends
PERMISSION_DENIED; it went on answering it for as long as the stream stayed open (a
Watch of "", woken only by a change of status, held its place for ever). Real gRPC on
127.0.0.1 around a `Transport`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_ops_readiness import SERVING, _settings
from test_revocation_grpc import load

from declora.cli.certs import mint, revoke
from declora.node.daemon.transport import READY_SERVICE, Transport
from declora.proto import pb_grpc


@pytest.mark.parametrize("service", [READY_SERVICE, ""])
def test_a_watch_ends_once_its_caller_is_revoked(tmp_path: Path, service: str) -> None:
    pki = tmp_path / "pki"
    mint(pki, ["a", "b", "c", "d"], ["127.0.0.1"], 30, False)
    crl = revoke(pki, [pki / "d.pem"], [], None).crl  # a list that does not name c yet

    async def go() -> None:
        transport = Transport(_settings(solo=True), load(pki, "a", crl))
        port = await transport.start(pb_grpc.SwarmServicer(), 8)
        transport.ready_when(lambda: 0)
        transport.set_serving(True)
        creds = load(pki, "c").channel_credentials()
        try:
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                seen = aiter(stub.Watch(health_pb2.HealthCheckRequest(service=service)))
                assert (await anext(seen)).status == SERVING  # c may watch: not revoked
                revoke(pki, [pki / "c.pem"], [], crl)
                assert transport.tls is not None and transport.tls.crl is not None
                assert transport.tls.crl.refresh(force=True)  # as the node's reconnect loop
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await asyncio.wait_for(anext(seen), 60)
                assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "(c) is revoked by --tls-crl" in (ended.value.details() or "")
        finally:
            await transport.stop(grace=0)

    asyncio.run(go())

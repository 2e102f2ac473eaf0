"""Health and reflection refuse a revoked certificate as the Swarm service does (rev-tls;
needs /tmp/revtls-health.patch): they answered it (SERVING, and the service schema)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from test_auth_mismatch import serve, served_parts, stop
from test_revocation_grpc import load

from declora.cli.certs import mint, revoke


def test_health_and_reflection_refuse_a_revoked_caller(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    mint(pki, ["a", "b", "c"], ["127.0.0.1"], 30, False)
    crl = revoke(pki, [pki / "c.pem"], [], None).crl
    nodes = served_parts(synthetic_jsonl, [("a", {}, load(pki, "a", crl))])
    [(_da, a)] = nodes

    async def calls(name: str) -> list[grpc.StatusCode]:
        codes = []
        creds = load(pki, name).channel_credentials()
        async with grpc.aio.secure_channel(a.settings.advertise, creds) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            ask = reflection_pb2.ServerReflectionRequest(list_services="")
            for call in (
                lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5),
                lambda: anext(aiter(health.Watch(health_pb2.HealthCheckRequest(), timeout=5))),
                lambda: anext(
                    aiter(
                        reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                            iter([ask]), timeout=5
                        )
                    )
                ),
            ):
                try:
                    await call()
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
                    assert "(c) is revoked by --tls-crl" in (exc.details() or "")
        return codes

    async def go() -> None:
        await serve(nodes)
        try:
            assert await calls("b") == [grpc.StatusCode.OK] * 3  # the control
            assert await calls("c") == [grpc.StatusCode.PERMISSION_DENIED] * 3
        finally:
            await stop(nodes)

    asyncio.run(go())

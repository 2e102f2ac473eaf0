"""A dial under mTLS with --tls-crl reads the server's certificate once (review of
the revoked-server check): the read made before the Hello (is it revoked?) also
answers whose it is after the Welcome. Before, each dial opened a second TLS
connection to read it again. Real gRPC on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_auth_mismatch import serve, served_parts, stop
from test_revocation_grpc import load

from declora.cli.certs import mint, revoke
from declora.node.security import TlsFiles


def test_a_dial_reads_the_servers_certificate_once(
    synthetic_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = tmp_path / "pki"
    mint(pki, ["a", "b"], ["127.0.0.1", "localhost"], 30, False)
    revoke(pki, [], ["0x1234"], None)
    nodes = served_parts(
        synthetic_jsonl, [(n, {}, load(pki, n, pki / "crl.pem")) for n in ("a", "b")]
    )
    (_, a), (_, b) = nodes
    reads: list[tuple[str, int]] = []
    read = TlsFiles.server_name

    async def counted(self: TlsFiles, host: str, port: int, timeout: float) -> str:
        reads.append((host, port))
        return await read(self, host, port, timeout)

    monkeypatch.setattr(TlsFiles, "server_name", counted)

    async def go() -> None:
        await serve(nodes)
        try:
            assert await a.handshaker.dial(b.settings.advertise) is not None
        finally:
            await stop(nodes)

    asyncio.run(go())
    assert len(reads) == 1, reads
    assert {p.node_id for p in a.peers.live} == {"b"}

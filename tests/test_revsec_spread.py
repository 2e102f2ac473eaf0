"""A neighbour that serves its revocation list at a trickle holds up no other
(review of the spread): `Spreader.spread` waits `WAIT_SECONDS` for its calls and the
slow one goes on alone. Before, one look waited for every call (`ASK_TIMEOUT`, 30 s):
a live neighbour claiming a higher CRL number each time, then serving nothing, kept
a newer list from every other neighbour (and this node's announcements) 30 s late a
look. Real gRPC on 127.0.0.1 (fake neighbours: in-test servers)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from pathlib import Path

import grpc
import pytest
from daemon_helpers import free_ports, serve_fake_peer
from test_auth_mismatch import served_parts
from test_revocation_grpc import load

from declora.cli.certs import mint, revoke
from declora.node.daemon.peers import Peer
from declora.node.daemon.revocation_spread import Spreader
from declora.proto import pb, pb_grpc


class Neighbour(pb_grpc.SwarmServicer):
    """Gives `data` to a `Revocations` call once `release` is set (at once: None)."""

    def __init__(self, data: bytes, release: threading.Event | None = None) -> None:
        self.data, self.release = data, release

    def Revocations(self, request: pb.RevocationsRequest, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
        while self.release is not None and not self.release.is_set() and context.is_active():
            self.release.wait(0.05)
        yield pb.Chunk(data=self.data)


def test_a_trickling_neighbour_holds_up_no_newer_list(
    synthetic_jsonl: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = tmp_path / "pki"
    mint(pki, ["a"], ["127.0.0.1", "localhost"], 30, False)
    revoke(pki, [], ["0x1234"], None)  # CRL number 1: a's
    shutil.copy(pki / "crl.pem", pki / "a-crl.pem")
    revoke(pki, [], ["0x99"], None)  # number 2: the good neighbour's
    [(_, a)] = served_parts(synthetic_jsonl, [("a", {}, load(pki, "a", pki / "a-crl.pem"))])
    tls = a.handshaker.transport.tls
    assert tls is not None and tls.crl is not None
    release = threading.Event()
    ports = free_ports(2)
    servers = {
        "slow": (Neighbour(b"", release), f"127.0.0.1:{ports[0]}"),
        "good": (Neighbour((pki / "crl.pem").read_bytes()), f"127.0.0.1:{ports[1]}"),
    }
    started = [serve_fake_peer(s, address) for s, address in servers.values()]

    async def go() -> bool:
        for name, (_, address) in servers.items():
            peer = Peer(name, address, live=True, crl_number=5)  # both say a newer one
            peer.channel = grpc.aio.insecure_channel(address)
            peer.stub = pb_grpc.SwarmStub(peer.channel)
            a.peers.peers[name] = peer
        spreader = Spreader(tls, a.peers)
        try:
            with caplog.at_level(logging.DEBUG, logger="declora.node.daemon.revocation_spread"):
                return await spreader.spread(now=100.0)
        finally:
            assert "DEADLINE_EXCEEDED" not in caplog.text  # the slow call did not end it
            release.set()
            spreader.close()
            for name in servers:
                channel = a.peers.peers[name].channel
                assert channel is not None
                await channel.close()

    try:
        assert asyncio.run(go())
    finally:
        release.set()
        for server in started:
            server.stop(0)
    assert tls.crl.number == 2 and 0x99 in tls.crl.serials

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
from declora.node.daemon.revocation_spread import REFUSED_SECONDS, Spreader
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


def test_a_neighbour_whose_list_was_refused_is_fetched_from_again_only_much_later(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    """A live neighbour that says a higher number on every Hello and serves a list the
    swarm CA did not sign (16 MiB of it: 0.2 s of CPU, 0.14 s of the event loop) is
    fetched from once per `REFUSED_SECONDS`, not once per `ASK_SECONDS` (10 s)."""
    pki = tmp_path / "pki"
    mint(pki, ["a"], ["127.0.0.1", "localhost"], 30, False)
    revoke(pki, [], ["0x1234"], None)
    mint(tmp_path / "other", ["a"], ["127.0.0.1"], 30, False)
    for serial in ("0x1", "0x2"):
        revoke(tmp_path / "other", [], [serial], None)
    fake = Counted((tmp_path / "other" / "crl.pem").read_bytes())
    [(_, a)] = served_parts(synthetic_jsonl, [("a", {}, load(pki, "a", pki / "crl.pem"))])
    tls = a.handshaker.transport.tls
    assert tls is not None
    address = f"127.0.0.1:{free_ports(1)[0]}"
    server = serve_fake_peer(fake, address)

    async def go() -> None:
        peer = Peer("evil", address, live=True)
        peer.channel = grpc.aio.insecure_channel(address)
        peer.stub = pb_grpc.SwarmStub(peer.channel)
        a.peers.peers["evil"] = peer
        spreader = Spreader(tls, a.peers)
        try:
            for t in (100.0, 115.0, 130.0, 145.0):  # it says a higher number each time
                peer.crl_number = 7
                assert not await spreader.spread(now=t)
            assert fake.calls == 1
            peer.crl_number = 7
            await spreader.spread(now=100.0 + REFUSED_SECONDS)
            assert fake.calls == 2
        finally:
            spreader.close()
            await peer.channel.close()

    try:
        asyncio.run(go())
    finally:
        server.stop(0)


class Counted(Neighbour):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls = 0

    def Revocations(self, request: pb.RevocationsRequest, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
        self.calls += 1
        yield from super().Revocations(request, context)

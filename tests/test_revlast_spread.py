"""The revocation spread's state per neighbour (`Spreader.spread`) loses nothing when
a call fails: a fetch from a neighbour that said a higher CRL number, or an
announcement of this node's number, whose call failed (UNAVAILABLE: a neighbour
restarting, a connection cut, a call refused for rate) is made again `ASK_SECONDS`
later; before, the claim was forgotten and the neighbour marked told, so neither was
made again until a new Hello (a line's far end kept the old list). A neighbour that
(re-)joins is told this node's number again (`PeerTable.admit`). Real gRPC on
127.0.0.1 against a fake neighbour; times given to `spread`."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import pytest
from daemon_helpers import free_ports, serve_fake_peer
from test_auth_mismatch import serve, served_parts, stop
from test_revocation_grpc import load

from declora.cli.certs import mint, revoke
from declora.node.daemon.peers import Peer
from declora.node.daemon.revocation_spread import ASK_SECONDS, Spreader
from declora.proto import pb, pb_grpc


class Flaky(pb_grpc.SwarmServicer):
    """A neighbour whose first `Revocations` call fails UNAVAILABLE; later ones give
    `data` (b"": nothing). Counts the calls and the CRL numbers they said."""

    def __init__(self, data: bytes) -> None:
        self.data, self.said = data, []  # type: ignore[var-annotated]

    def Revocations(self, request: pb.RevocationsRequest, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
        self.said.append(request.crl_number)
        if len(self.said) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        if self.data:
            yield pb.Chunk(data=self.data)


class Table:
    """The two things `Spreader` asks of a `PeerTable`."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.live = [peer]

    def stub(self, peer: Peer) -> pb_grpc.SwarmStub:
        assert peer.stub is not None
        return peer.stub


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    mint(tmp_path / "pki", ["a", "b"], ["127.0.0.1"], 30, False)
    revoke(tmp_path / "pki", [], ["0x1234"], None)  # CRL number 1: node a's list
    shutil.copy(tmp_path / "pki" / "crl.pem", tmp_path / "pki" / "a-crl.pem")
    return tmp_path / "pki"


def looks(pki: Path, fake: Flaky, claim: int, times: list[float]) -> list[bool]:
    """`spread` of node a (CRL number 1) at each of `times`, with one neighbour (the
    fake) that said CRL number `claim`."""
    tls = load(pki, "a", pki / "a-crl.pem")
    address = f"127.0.0.1:{free_ports(1)[0]}"
    server = serve_fake_peer(fake, address)

    async def go() -> list[bool]:
        peer = Peer("b", address, live=True, crl_number=claim)
        peer.channel = grpc.aio.insecure_channel(address)
        peer.stub = pb_grpc.SwarmStub(peer.channel)
        spreader = Spreader(tls, Table(peer))  # type: ignore[arg-type]
        try:
            return [await spreader.spread(now=t) for t in times]
        finally:
            spreader.close()
            await peer.channel.close()

    try:
        return asyncio.run(go())
    finally:
        server.stop(0)


def test_a_fetch_that_failed_is_made_again(pki: Path) -> None:
    revoke(pki, [], ["0x99"], None)  # the swarm's newer list: CRL number 2
    fake = Flaky((pki / "crl.pem").read_bytes())
    took = looks(pki, fake, 2, [100.0, 102.0, 100.0 + ASK_SECONDS])
    assert took == [False, False, True]  # failed; not due yet; fetched and taken
    assert fake.said == [1, 1]


def test_an_announcement_that_failed_is_made_again(pki: Path) -> None:
    fake = Flaky(b"")  # a neighbour with the same number: nothing to give
    took = looks(pki, fake, 0, [100.0, 102.0, 100.0 + ASK_SECONDS, 120.0, 140.0])
    assert took == [False] * 5
    assert fake.said == [1, 1]  # failed; not due; told; told once: never again


def test_a_neighbour_that_rejoins_is_told_again(synthetic_jsonl: Path, pki: Path) -> None:
    """A neighbour that left and joined again (a restart: its list may be older now)
    is told this node's CRL number again at a later look (`crl_told` back to -1)."""
    shutil.copy(pki / "a-crl.pem", pki / "b-crl.pem")
    nodes = served_parts(
        synthetic_jsonl, [(n, {}, load(pki, n, pki / f"{n}-crl.pem")) for n in "ab"]
    )
    (_, a), (_, b) = nodes

    async def go() -> int:
        await serve(nodes)
        try:
            assert await a.handshaker.dial(b.settings.advertise) is not None
            peer = a.peers.get("b")
            assert peer is not None
            peer.crl_told = 1  # told, as a spread does
            a.peers.drop(peer, "gone")
            assert await a.handshaker.dial(b.settings.advertise) is not None
            return peer.crl_told
        finally:
            await stop(nodes)

    assert asyncio.run(go()) == -1


def test_one_calls_error_loses_no_other_calls_list(pki: Path) -> None:
    """A call that raised what no call should (a bug, a channel torn down) is logged;
    the list another call of the same look took is still reported taken."""
    revoke(pki, [], ["0x99"], None)  # the swarm's newer list: CRL number 2
    good = Flaky((pki / "crl.pem").read_bytes())
    good.said.append(0)  # its first call already made: it gives the list
    tls = load(pki, "a", pki / "a-crl.pem")
    address = f"127.0.0.1:{free_ports(1)[0]}"
    server = serve_fake_peer(good, address)

    class Broken(Table):
        def stub(self, peer: Peer) -> pb_grpc.SwarmStub:
            if peer.node_id == "x":
                raise RuntimeError("torn down")
            return super().stub(peer)

    async def go() -> bool:
        b = Peer("b", address, live=True, crl_number=2)
        b.channel = grpc.aio.insecure_channel(address)
        b.stub = pb_grpc.SwarmStub(b.channel)
        table = Broken(b)
        table.live = [Peer("x", "127.0.0.1:9", live=True), b]
        spreader = Spreader(tls, table)  # type: ignore[arg-type]
        try:
            return await spreader.spread(now=100.0)
        finally:
            await b.channel.close()

    try:
        assert asyncio.run(go()) is True
    finally:
        server.stop(0)
    assert tls.crl is not None and tls.crl.number == 2

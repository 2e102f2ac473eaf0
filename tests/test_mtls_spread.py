"""Revocation lists spread between neighbours (mTLS with --tls-crl), over real gRPC on
127.0.0.1 (daemon parts of the tiny model in-process, as test_revocation_grpc):

- a list revoked into one node's --tls-crl file reaches the far end of a line
  a-b-c-d, hop by hop, through the nodes' own loops (`auth.watch_revocations`): c
  drops d without anyone copying files; each node keeps the learned list in its
  state folder and no --tls-crl file is written;
- a neighbour that gives a list signed by another CA, an older one, one over 16 MiB
  or garbage is refused, changes nothing, and is fetched from once per claim;
- an older neighbour (no `Revocations` call, no CRL number in its Hello) is left
  alone and nothing breaks;
- a node restarted keeps the list it learned (the newer of its file and that copy).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

import grpc
import pytest
from daemon_helpers import free_ports, serve_fake_peer
from test_auth_mismatch import live, serve, served_parts, stop
from test_revocation_grpc import load

from declora.cli.certs import mint, revoke
from declora.node.daemon.auth import watch_revocations
from declora.node.daemon.handshake import LEARNED_CRL
from declora.node.daemon.peers import Peer
from declora.node.daemon.revocation_spread import Spreader, list_chunks
from declora.node.daemon.service import SwarmService
from declora.node.revocation import MAX_BYTES, Revocations
from declora.proto import pb, pb_grpc

SERVED = "Revocations" in vars(SwarmService)  # the node's servicer answers the call


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    mint(tmp_path / "pki", ["a", "b", "c", "d"], ["127.0.0.1", "localhost"], 30, False)
    revoke(tmp_path / "pki", [], ["0x1234"], None)  # CRL number 1, revokes none of them
    return tmp_path / "pki"


def copy_list(pki: Path, name: str) -> Path:
    """Node `name`'s own copy of the swarm's list, as an operator hands it out."""
    path = pki / f"{name}-crl.pem"
    shutil.copy(pki / "crl.pem", path)
    return path


@pytest.mark.slow  # a 3-node line; test_testspeed3_revocation.py keeps one node in make test
@pytest.mark.skipif(not SERVED, reason="needs service.py's Revocations (/tmp/mtls-service.patch)")
def test_a_revocation_reaches_the_far_end_of_a_line_without_copying_files(
    synthetic_jsonl: Path, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lists = {n: copy_list(pki, n) for n in "abcd"}
    before = {n: p.read_bytes() for n, p in lists.items()}
    nodes = served_parts(synthetic_jsonl, [(n, {}, load(pki, n, lists[n])) for n in "abcd"])
    (_, a), (_, b), (_, c), (_, d) = nodes
    took: list[float] = []

    async def go() -> None:
        await serve(nodes)
        watches = [
            asyncio.create_task(
                watch_revocations(p.handshaker.transport.tls, p.peers, p.counters, dm.progress)
            )
            for dm, p in nodes
        ]
        try:
            for left, right in ((a, b), (b, c), (c, d)):
                assert await left.handshaker.dial(right.settings.advertise) is not None
            assert live(c) == {"b", "d"}
            start = time.monotonic()
            revoke(pki, [pki / "d.pem"], [], lists["a"])  # on a only
            async with asyncio.timeout(120):
                while "d" in live(c):
                    await asyncio.sleep(0.1)
            took.append(time.monotonic() - start)
        finally:
            for w in watches:
                w.cancel()
            await stop(nodes)

    with caplog.at_level(logging.WARNING, logger="declora.node.daemon.peers"):
        asyncio.run(go())
    print(f"\nrevoked on a, dropped by c (2 hops on): {took[0]:.1f} s")
    assert live(c) == {"b"} and live(b) == {"a", "c"}
    # c dropped d for its certificate, once; a call d made after c took the list (d's
    # own spread, racing c's) is refused and counted `revoked` too: at least one
    (dropped,) = [r.getMessage() for r in caplog.records if "neighbour d left" in r.getMessage()]
    assert "revoked" in dropped, dropped
    assert c.counters.rejected.get("revoked", 0) >= 1
    for p in (b, c):  # learned, kept in the state folder
        tls = p.handshaker.transport.tls
        assert tls is not None and tls.crl is not None and tls.crl.number == 2
        assert (p.settings.state_dir / LEARNED_CRL).exists()
    for n in "bcd":  # nothing a user wrote is touched
        assert lists[n].read_bytes() == before[n]


class FakeNeighbour(pb_grpc.SwarmServicer):
    """A neighbour that gives `data` to every `Revocations` call (None: an older node,
    which does not know the call), counting the calls."""

    def __init__(self, data: bytes | None) -> None:
        self.data, self.calls = data, 0

    def Revocations(self, request: pb.RevocationsRequest, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.data is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        for i in range(0, len(self.data), 1 << 20):
            yield pb.Chunk(data=self.data[i : i + (1 << 20)])


def other_ca_list(tmp_path: Path) -> bytes:
    mint(tmp_path / "other", ["a"], ["127.0.0.1"], 30, False)
    for serial in ("0x1", "0x2", "0x3"):  # a higher CRL number than the swarm's
        revoke(tmp_path / "other", [], [serial], None)
    return (tmp_path / "other" / "crl.pem").read_bytes()


@pytest.mark.parametrize("given", ["other CA", "older", "oversize", "garbage", "older node"])
def test_a_neighbours_bad_list_is_refused_and_changes_nothing(
    synthetic_jsonl: Path, pki: Path, tmp_path: Path, given: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = (pki / "crl.pem").read_bytes()  # CRL number 1
    mine = copy_list(pki, "a")
    revoke(pki, [], ["0x99"], mine)  # a's list: CRL number 2
    data = {
        "other CA": other_ca_list(tmp_path),
        "older": old,
        "oversize": b"\0" * (MAX_BYTES + 1),
        "garbage": b"-----BEGIN X509 CRL-----\nnot a list\n",
        "older node": None,
    }[given]
    fake = FakeNeighbour(data)
    [(_, a)] = served_parts(synthetic_jsonl, [("a", {}, load(pki, "a", mine))])
    tls = a.handshaker.transport.tls
    assert tls is not None and tls.crl is not None
    serials, signed = tls.crl.serials, tls.crl.signed
    address = f"127.0.0.1:{free_ports(1)[0]}"
    server = serve_fake_peer(fake, address)

    async def go() -> list[bool]:
        peer = Peer("evil", address, live=True, crl_number=2**64 - 1)  # says a newer one
        peer.channel = grpc.aio.insecure_channel(address)
        peer.stub = pb_grpc.SwarmStub(peer.channel)
        a.peers.peers["evil"] = peer
        spreader = Spreader(tls, a.peers)
        try:
            return [await spreader.spread(now=t) for t in (100.0, 200.0, 300.0)]
        finally:
            await peer.channel.close()

    try:
        with caplog.at_level(logging.WARNING):
            assert asyncio.run(go()) == [False, False, False]
    finally:
        server.stop(0)
    assert (tls.crl.number, tls.crl.serials, tls.crl.signed) == (2, serials, signed)
    assert not (a.settings.state_dir / LEARNED_CRL).exists()
    assert fake.calls == 1  # once per claim, not once a look
    expected = {
        "other CA": "is not signed by the CA of --tls-ca",
        "older": "",
        "oversize": "is over 16 MiB",
        "garbage": "is not a PEM certificate revocation list",
        "older node": "",
    }[given]
    if expected:
        assert f"the revocation list of neighbour evil {expected}" in caplog.text


def test_a_learned_list_outlives_a_restart_and_a_newer_file_wins(pki: Path) -> None:
    mine = copy_list(pki, "a")
    newer = pki / "newer.pem"
    shutil.copy(mine, newer)
    revoke(pki, [pki / "d.pem"], [], newer)  # CRL number 2, what a peer gave
    ca, cas = pki / "ca.pem", load(pki, "a").ca

    def started(kept: Path) -> Revocations:
        from cryptography import x509

        crl = Revocations(mine, ca, x509.load_pem_x509_certificates(cas))
        crl.keep_learned(kept)
        return crl

    kept = pki / "state" / LEARNED_CRL
    first = started(kept)
    assert first.learn(newer.read_bytes(), "neighbour b")
    assert first.learn(newer.read_bytes(), "neighbour c") is False  # the same: nothing new
    assert started(kept).number == 2  # a restart keeps it
    revoke(pki, [], ["0x77", "0x78"], mine)  # the operator's file: CRL number 2 as well
    revoke(pki, [], ["0x79"], mine)  # now 3: newer than the learned copy
    restarted = started(kept)
    assert restarted.number == 3 and 0x79 in restarted.serials


def test_a_node_gives_its_list_only_to_a_live_neighbour_with_an_older_one(
    synthetic_jsonl: Path, pki: Path
) -> None:
    mine = copy_list(pki, "a")
    revoke(pki, [], ["0x99"], mine)  # CRL number 2
    nodes = served_parts(
        synthetic_jsonl, [("a", {}, load(pki, "a", mine)), ("n", {}, load(pki, "b"))]
    )
    (_, a), (_, n) = nodes  # n: a node without --tls-crl
    tls = a.handshaker.transport.tls
    assert tls is not None and tls.crl is not None
    a.peers.peers["b"] = Peer("b", "127.0.0.1:1", live=True)
    a.peers.peers["gone"] = Peer("gone", "127.0.0.1:2", live=False)

    def given(caller: str | None, number: int, now: float) -> bytes:
        return b"".join(c.data for c in list_chunks(tls, a.peers, caller, number, now))

    assert given("b", 1, 100.0) == tls.crl.signed  # older: the whole signed list
    assert given("b", 1, 101.0) == b""  # given it a moment ago
    assert given("b", 1, 106.0) == tls.crl.signed
    assert given("b", 2, 200.0) == b"" and given("gone", 1, 300.0) == b""
    assert given("cli", 1, 400.0) == given(None, 1, 500.0) == b""  # no neighbour
    assert given("b", 7, 600.0) == b"" and a.peers.peers["b"].crl_number == 7  # fetched next
    n.peers.peers["a"] = Peer("a", "127.0.0.1:3", live=True)
    assert list_chunks(n.handshaker.transport.tls, n.peers, "a", 0) == []  # no list: nothing


class OlderService(SwarmService):
    """A node's servicer as a release before spreading: it knows no `Revocations`
    (UNIMPLEMENTED, as gRPC answers for it), counting the calls."""

    calls = 0

    def Revocations(self, request: pb.RevocationsRequest, context: grpc.ServicerContext):  # type: ignore[no-untyped-def, override]
        OlderService.calls += 1
        return pb_grpc.SwarmServicer.Revocations(self, request, context)


def test_an_older_neighbour_stays_joined_and_is_asked_once(
    synthetic_jsonl: Path, pki: Path
) -> None:
    mine = copy_list(pki, "a")
    nodes = served_parts(
        synthetic_jsonl, [("a", {}, load(pki, "a", mine)), ("b", {}, load(pki, "b"))]
    )
    (da, a), (db, b) = nodes  # b: no list, no call; its Hellos say CRL number 0
    tls = a.handshaker.transport.tls
    assert tls is not None and tls.crl is not None

    async def go() -> list[bool]:
        await da.transport.start(SwarmService(a), 64)
        await db.transport.start(OlderService(b), 64)
        for d in (da, db):
            d.transport.set_serving(True)
        try:
            assert await a.handshaker.dial(b.settings.advertise) is not None
            spreader = Spreader(tls, a.peers)
            return [await spreader.spread(now=t) for t in (100.0, 200.0)]
        finally:
            await stop(nodes)

    assert asyncio.run(go()) == [False, False]
    peer = a.peers.get("b")
    assert peer is not None and peer.live and peer.crl_told == tls.crl.number == 1
    assert live(b) == {"a"} and OlderService.calls == 1

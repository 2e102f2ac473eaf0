"""Revocation spreading when a neighbour's list changes twice in quick succession
(mTLS with --tls-crl), as seen with real processes: b took CRL number 2 from a by
announcing its own, a re-read number 3 from its file 2 s later and said so, and b
never took 3 (so never dropped the node 3 revoked). b's announcement of 2 forgot a's
claim, and its fetch came within the 5 s in which a gives b nothing after its last
list. A claim said during an announcement must be fetched when a gives again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from daemon_helpers import free_ports, serve_fake_peer
from test_auth_mismatch import served_parts
from test_mtls_spread import copy_list, pki  # noqa: F401 (a fixture)
from test_revocation_grpc import load

from declora.cli.certs import revoke
from declora.node.daemon.peers import Peer
from declora.node.daemon.revocation_spread import ASK_SECONDS, Spreader
from declora.proto import pb, pb_grpc


class Answers(pb_grpc.SwarmServicer):
    """A neighbour that gives its i-th `Revocations` call `answers[i]` (b"": nothing,
    as `list_chunks` answers within `ASK_SECONDS / 2` of its last list to the caller)."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers, self.calls = answers, 0

    def Revocations(self, request: pb.RevocationsRequest, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
        self.calls += 1
        if data := self.answers[min(self.calls, len(self.answers)) - 1]:
            yield pb.Chunk(data=data)


def test_a_number_said_while_a_node_announces_is_fetched_when_it_is_given_again(
    synthetic_jsonl: Path,
    pki: Path,  # noqa: F811
) -> None:
    mine = copy_list(pki, "b")  # CRL number 1
    second = copy_list(pki, "a")
    revoke(pki, [], ["0x98"], second)  # a's list: number 2, then 3
    two = second.read_bytes()
    revoke(pki, [], ["0x97"], second)
    three = second.read_bytes()
    [(_, b)] = served_parts(synthetic_jsonl, [("b", {}, load(pki, "b", mine))])
    tls = b.handshaker.transport.tls
    assert tls is not None and tls.crl is not None and tls.crl.number == 1
    fake = Answers([two, b"", three])
    address = f"127.0.0.1:{free_ports(1)[0]}"
    server = serve_fake_peer(fake, address)

    async def go() -> list[bool]:
        a = Peer("a", address, live=True, crl_number=1)
        a.channel = grpc.aio.insecure_channel(address)
        a.stub = pb_grpc.SwarmStub(a.channel)
        b.peers.peers["a"] = a
        spreader = Spreader(tls, b.peers)
        try:
            taken = [await spreader.spread(now=100.0)]  # announces 1: given 2
            a.crl_number = 3  # a says 3 (its call to b, as `list_chunks` notes it)
            taken.append(await spreader.spread(now=102.0))  # announces 2: nothing
            taken.append(await spreader.spread(now=102.0 + ASK_SECONDS))  # fetches 3
            return taken
        finally:
            await a.channel.close()

    try:
        assert asyncio.run(go()) == [True, False, True]
    finally:
        server.stop(0)
    assert tls.crl.number == 3 and fake.calls == 3

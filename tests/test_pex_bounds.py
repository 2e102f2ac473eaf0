"""Peer exchange's bounds (`peer_exchange.PeerExchange`), with a fake handshaker and a
real gRPC server answering Status: a member's answer naming 1,000 third-party
addresses makes this node dial at most the bounds, at the backoff's rate; a learnt
candidate is dialled never as configured, so it never takes a live peer's slot."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import grpc
from daemon_helpers import HOST, free_ports, serve_fake_peer

from declora.node.daemon import peer_exchange as px
from declora.node.daemon.peers import Peer
from declora.node.security_secret import SwarmAuth
from declora.proto import pb, pb_grpc

OWN = f"{HOST}:1"


class Flooder(pb_grpc.SwarmServicer):
    """A member whose Status names 1,000 live third-party neighbours, and junk."""

    def __init__(self) -> None:
        self.asked = 0

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        self.asked += 1
        junk = ["0.0.0.0:5", "224.0.0.1:5", "not an address", "h:0", OWN]
        reply = pb.StatusReply(node_id="flooder")
        for a in junk:
            reply.neighbors.add(node_id="j", address=a, live=True)
        reply.neighbors.add(node_id="dead", address=f"{HOST}:2", live=False)
        for i in range(1000):
            reply.neighbors.add(node_id=f"t{i}", address=f"127.0.0.2:{10000 + i}", live=True)
        return reply


@dataclass
class FakePeers:
    max_neighbors: int
    live: list[Peer] = field(default_factory=list)

    def all(self) -> list[Peer]:
        return list(self.live)


class FakeHandshaker:
    """What `PeerExchange` uses of a `Handshaker`; its dials are recorded and fail."""

    def __init__(self, seed: str, max_neighbors: int = 4) -> None:
        self.settings = SimpleNamespace(peers=[seed], advertise=OWN, listen=OWN)
        self.peers = FakePeers(max_neighbors)
        full = "refused the handshake: " + px.FULL
        self.transport = SimpleNamespace(
            channel=grpc.aio.insecure_channel, dial_log=SimpleNamespace(outcomes={seed: full})
        )
        self.auth = SimpleNamespace(sign=lambda m: m)
        self.progress = SimpleNamespace(stop_requested=False)
        self.dials: list[tuple[str, bool]] = []

    def candidates(self) -> list[str]:
        return []

    async def dial(self, address: str, configured: bool = False) -> Any:
        self.dials.append((address, configured))
        return None


def test_a_flood_of_addresses_is_dialled_within_the_bounds_at_the_backoff_rate() -> None:
    (port,) = free_ports(1)
    seed = f"{HOST}:{port}"
    flooder = Flooder()
    server = serve_fake_peer(flooder, seed)
    h = FakeHandshaker(seed)
    pex = px.PeerExchange(h)  # type: ignore[arg-type]
    last: dict[str, float] = {}
    gaps: list[float] = []

    async def run() -> None:
        for now in range(0, 600):
            before = len(h.dials)
            await pex.step(float(now))
            assert len(pex.learnt) <= px.LEARNT
            assert len(h.dials) - before <= 4  # never more than the room
            for a, _ in h.dials[before:]:
                if a in last:
                    gaps.append(now - last[a])
                last[a] = now

    try:
        asyncio.run(run())
    finally:
        server.stop(grace=None)
    per_address = Counter(a for a, _ in h.dials)
    assert h.dials and not any(configured for _, configured in h.dials)
    assert all(a.startswith("127.0.0.2:") for a in per_address)  # no junk, not its own
    assert max(per_address.values()) <= px.FAILS
    assert min(gaps) >= 2.0  # `DialBackoff`'s first wait
    assert flooder.asked <= 600 / px.ASK_FIRST + 1  # once per period at most
    assert len(per_address) <= px.TAKE * flooder.asked


def test_nothing_is_asked_or_dialled_without_room() -> None:
    (port,) = free_ports(1)
    seed = f"{HOST}:{port}"
    flooder = Flooder()
    server = serve_fake_peer(flooder, seed)
    h = FakeHandshaker(seed, max_neighbors=1)
    h.peers.live.append(Peer(node_id="seed", address=seed, live=True, configured=True))
    pex = px.PeerExchange(h)  # type: ignore[arg-type]
    try:
        for now in range(5):
            asyncio.run(pex.step(float(now)))
    finally:
        server.stop(grace=None)
    assert flooder.asked == 0 and h.dials == []


class Verifier(Flooder):
    """A member under a swarm secret: answers only Status requests it can verify."""

    def __init__(self, auth: SwarmAuth) -> None:
        super().__init__()
        self.auth = auth

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        try:
            self.auth.verify(request)
        except Exception as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        return super().Status(request, context)


def test_status_calls_are_signed_under_a_swarm_secret() -> None:
    (port,) = free_ports(1)
    seed = f"{HOST}:{port}"
    member = Verifier(SwarmAuth(b"pex secret of the swarm"))
    server = serve_fake_peer(member, seed)
    h = FakeHandshaker(seed)
    h.auth = SimpleNamespace(sign=SwarmAuth(b"pex secret of the swarm").sign)
    pex = px.PeerExchange(h)  # type: ignore[arg-type]
    try:
        learnt = asyncio.run(pex.ask(seed))
    finally:
        server.stop(grace=None)
    assert member.asked == 1 and len(learnt) == px.TAKE

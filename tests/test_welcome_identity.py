"""A Welcome (the answer to a Hello this node dialled) may not speak for a live
neighbour's id from another address: the rule an inbound Hello gets ("live at another
address", `Admission._identity_refusal`) holds for a dial too.

The attack this guards against (open mode): a third party gets this node to dial its
server (it introduces itself under some id with that server as its listen address,
then leaves), and the server's Welcome claims the id of a live honest neighbour. Were
it admitted, the neighbour's entry would take the server's address and session, and
every re-dial of "the neighbour" would hand the server the token the neighbour must
present. In-process on the in-memory network (`test_daemon_parts.pair`)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import grpc
import pytest
from memory_transport import MemoryNetwork
from test_daemon_parts import hello, pair

from declora.node import PROTOCOL_VERSION, __version__
from declora.node.daemon.daemon import Daemon, Parts
from declora.node.daemon.peers import BACKOFF_FIRST, Peer
from declora.node.discovery import StaticDiscovery
from declora.proto import pb, pb_grpc

EVIL = "127.0.0.2:7460"  # the third party's server, on another host


class Impostor(pb_grpc.SwarmServicer):
    """A server whose Welcome accepts and claims `node_id`, at `listen` (its own
    address, or the real neighbour's); it keeps every Hello it is sent."""

    def __init__(self, fingerprint: str, node_id: str, listen: str) -> None:
        self.fingerprint, self.node_id, self.listen = fingerprint, node_id, listen
        self.hellos: list[pb.Hello] = []
        self.leaves: list[pb.LeaveNotice] = []

    async def Handshake(self, request: pb.Hello, context: grpc.aio.ServicerContext) -> pb.Welcome:
        self.hellos.append(request)
        node = pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            package_version=__version__,
            node_id=self.node_id,
            swarm_id=request.swarm_id,
            fingerprint=self.fingerprint,
            seq=12345,
            live_degree=1,
            listen_address=self.listen,
            receiver=request.node_id,
            session=os.urandom(16),
            recipe=dict(request.recipe),
        )
        return pb.Welcome(accepted=True, node=node)

    async def Leave(
        self, request: pb.LeaveNotice, context: grpc.aio.ServicerContext
    ) -> pb.LeaveAck:
        self.leaves.append(request)
        return pb.LeaveAck()


def victim(data: Path, listen: str) -> tuple[Daemon, Parts, Parts, Impostor]:
    """a (the victim) dialled b: both live; an impostor of b serves at EVIL, its
    Welcome naming `listen` ("mine": EVIL, "same": b's own address)."""
    (da, _), (a, b) = pair(data)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None

    asyncio.run(go())
    network = a.handshaker.transport.network  # type: ignore[attr-defined]
    assert isinstance(network, MemoryNetwork)
    where = EVIL if listen == "mine" else b.settings.advertise
    impostor = Impostor(a.lm.fingerprint, "b", where)
    network.serve(EVIL, impostor)
    return da, a, b, impostor


def entry(peer: Peer) -> tuple[object, ...]:
    return (peer.address, peer.live, peer.token_in, peer.token_prev, peer.token_out)


@pytest.mark.parametrize("listen", ["mine", "same"])
def test_a_welcome_claiming_a_live_id_from_another_address_is_refused(
    synthetic_jsonl: Path, listen: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Dialling EVIL, whose Welcome claims the live b: refused (logged once a dial,
    recorded as the dial's outcome), b's entry keeps its address and tokens, and no
    Hello to EVIL carries a token b's entry accepts, however often EVIL is dialled."""
    da, a, b, impostor = victim(synthetic_jsonl, listen)
    held = a.peers.get("b")
    assert held is not None and held.live
    before = entry(held)

    async def go() -> list[tuple[Peer | None, bool]]:
        return [await a.handshaker._dial(EVIL, configured=True) for _ in range(3)]

    with caplog.at_level(logging.WARNING, logger="declora.node.daemon.handshake"):
        outcomes = asyncio.run(go())
    assert outcomes == [(None, True)] * 3
    assert entry(held) == before
    assert len(impostor.hellos) == 3
    assert not any(held.token_ok(bytes(h.session)) for h in impostor.hellos)
    assert not held.token_ok(a.peers.token_for_dial(EVIL))
    lines = [r.getMessage() for r in caplog.records if "live at another address" in r.getMessage()]
    assert len(lines) == 3 and all(line.startswith(f"not joining {EVIL}") for line in lines)
    outcome = da.dial_log.outcomes[EVIL]
    assert outcome.startswith("not joining") and "is live at another address" in outcome
    # b still knows a under the token a holds: b's pushes to a are not refused
    at_b = b.peers.get("a")
    assert at_b is not None and held.token_ok(at_b.token_out)

    # the real b, at its own address, still renews (its token kept)
    async def renew() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None

    asyncio.run(renew())
    assert entry(held) == before


def test_a_refused_welcome_backs_the_candidate_off(synthetic_jsonl: Path) -> None:
    """EVIL offered as a candidate (discovery): refused, it is not dialled again before
    its backoff (2 s after the refusal) is due, nor while b (the id it claimed) is
    live; b's entry is untouched."""
    _, a, _b, impostor = victim(synthetic_jsonl, "mine")
    held = a.peers.get("b")
    assert held is not None
    before = entry(held)
    a.handshaker.discovery = StaticDiscovery([EVIL], a.settings.advertise)
    t0 = time.monotonic()

    async def go() -> None:
        await a.handshaker.connect_known(now=t0)
        assert len(impostor.hellos) == 1
        assert a.handshaker.backoff.next_dial(EVIL) == pytest.approx(t0 + BACKOFF_FIRST)
        await a.handshaker.connect_known(now=t0 + 1)
        assert len(impostor.hellos) == 1  # not due yet
        await a.handshaker.connect_known(now=t0 + BACKOFF_FIRST)
        assert len(impostor.hellos) == 1  # due, but b is live: EVIL answered as b
        assert entry(held) == before
        assert not any(held.token_ok(bytes(h.session)) for h in impostor.hellos)
        a.peers.drop(held, "test")  # b gone: its id is anyone's to claim (open mode)
        await a.handshaker.connect_known(now=t0 + BACKOFF_FIRST)
        assert len(impostor.hellos) == 2

    asyncio.run(go())


def test_an_outbound_admit_never_moves_or_rekeys_a_live_entry(synthetic_jsonl: Path) -> None:
    """`PeerTable.admit(..., dialled=)` for a live id dialled at another address than
    its entry's (whatever address the Welcome names) changes nothing; at its own
    address (a restart there) it is admitted; once it is not live, it may come back
    at a new address."""
    _, a, b, _ = victim(synthetic_jsonl, "mine")
    table = a.peers
    held = table.get("b")
    assert held is not None
    home = b.settings.advertise
    before = entry(held)
    offered = table.token_for_dial(EVIL)  # a pending token: what EVIL was sent
    fp = a.lm.fingerprint

    def welcome(listen: str, session: bytes) -> pb.Hello:
        return hello(
            node_id="b", swarm_id="parts", fingerprint=fp, listen_address=listen, session=session
        )

    for listen in (EVIL, home, ""):
        assert table.admit(welcome(listen, b"E" * 16), dialled=EVIL) is None
        assert entry(held) == before
    assert not held.token_ok(offered)
    # b's own address, naming another: refused as well
    assert table.admit(welcome(EVIL, b"E" * 16), dialled=home) is None
    assert entry(held) == before
    # a restart of b at its own address (a new session): admitted, the token it was
    # offered (b's own) stays
    restarted = table.admit(welcome(home, b"R" * 16), dialled=home)
    assert restarted is held and held.token_out == b"R" * 16
    assert (held.address, held.token_in) == (home, before[2])
    # not live: anyone may claim the id, at a new address too
    table.drop(held, "test")
    moved = table.admit(welcome(EVIL, b"M" * 16), dialled=EVIL)
    assert moved is held and held.live and held.address == EVIL and held.token_in == offered


def test_another_name_for_a_live_neighbours_address_is_not_redialled(
    synthetic_jsonl: Path,
) -> None:
    """`--peers localhost:7401` for a neighbour that advertises 127.0.0.1:7401: the
    first dial of the alias admits it at its advertised address; while it is live the
    alias is not dialled again (each such dial would be refused as "live at another
    address" and end the link with a Leave); once it is gone, the alias is dialled."""
    _, (a, b) = pair(synthetic_jsonl)
    network = a.handshaker.transport.network  # type: ignore[attr-defined]
    alias = "localhost:" + b.settings.advertise.rsplit(":", 1)[1]
    network.serve(alias, network.services[b.settings.advertise])
    a.handshaker.discovery = StaticDiscovery([alias], a.settings.advertise)

    async def go() -> None:
        for _ in range(4):
            await a.handshaker.connect_known()

    asyncio.run(go())
    assert network.calls.count((alias, "Handshake")) == 1
    peer_b, peer_a = a.peers.get("b"), b.peers.get("a")
    assert peer_b is not None and peer_b.live and peer_b.address == b.settings.advertise
    assert peer_a is not None and peer_a.live  # no Leave ended the link
    a.peers.drop(peer_b, "test")
    asyncio.run(a.handshaker.connect_known())
    assert network.calls.count((alias, "Handshake")) == 2


def test_another_name_for_a_neighbour_already_live_is_never_dialled(
    synthetic_jsonl: Path,
) -> None:
    """b joined first (it dialled a, or a dialled its advertised address); a's
    `--peers localhost:PORT` for b resolves to b's 127.0.0.1:PORT, so it is not dialled
    at all: a dial would be refused as "live at another address" and its Leave would
    make b drop a (found by review: the link then held on a's side only)."""
    _, (a, b) = pair(synthetic_jsonl)
    network = a.handshaker.transport.network  # type: ignore[attr-defined]
    alias = "localhost:" + b.settings.advertise.rsplit(":", 1)[1]
    network.serve(alias, network.services[b.settings.advertise])

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        a.handshaker.discovery = StaticDiscovery([alias], a.settings.advertise)
        for _ in range(3):
            await a.handshaker.connect_known()

    asyncio.run(go())
    assert network.calls.count((alias, "Handshake")) == 0
    peer_b, peer_a = a.peers.get("b"), b.peers.get("a")
    assert peer_b is not None and peer_b.live and peer_a is not None and peer_a.live

"""A learnt candidate (peer exchange) never takes a configured peer's slot: it is
dialled only while there is room and never as configured, so the chosen-newcomer rule
(`peers.displaced`) never favours it; and a newcomer with no neighbour at all splits
a link to a peer this node did not choose (`peers.split`), at most once a period,
never a chosen one's. Real `PeerTable`s, no network."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from test_scale_selection import address, hello, table

from declora.node.daemon import peer_exchange as px
from declora.node.daemon import peers as peers_mod
from declora.node.daemon.peers import Peer, PeerTable
from declora.proto import pb

SEED = 0


class TableHandshaker:
    """What `PeerExchange` uses of a `Handshaker`, its dials admitted by `table`."""

    def __init__(self, t: PeerTable) -> None:
        self.peers = t
        own = address(99)
        self.settings = SimpleNamespace(peers=[address(SEED)], advertise=own, listen=own)
        self.transport = SimpleNamespace(dial_log=None)
        self.dials: list[tuple[str, bool]] = []

    def candidates(self) -> list[str]:
        return []

    async def dial(self, to: str, configured: bool = False) -> Peer | None:
        self.dials.append((to, configured))
        i = int(to.rsplit(":", 1)[1]) - 7000
        return self.peers.admit(hello(i), dialled=to, configured=configured)


def seeded_table(max_neighbors: int) -> PeerTable:
    t = table(max_neighbors)
    t.chosen = lambda: {address(SEED)}
    assert t.admit(hello(SEED), dialled=address(SEED), configured=True) is not None
    return t


def learnt_from(*indices: int) -> pb.StatusReply:
    reply = pb.StatusReply()
    for i in indices:
        reply.neighbors.add(node_id=f"n{i:02d}", address=address(i), live=True)
    return reply


def test_learnt_candidates_are_dialled_as_unconfigured_only_while_there_is_room() -> None:
    t = seeded_table(2)
    h = TableHandshaker(t)
    pex = px.PeerExchange(h)  # type: ignore[arg-type]

    async def nothing_more(source: str) -> list[str]:
        return []

    pex.ask = nothing_more  # type: ignore[method-assign]  # the live seed is asked
    assert sorted(pex.learn(learnt_from(1, 2))) == [address(1), address(2)]
    asyncio.run(pex.step(0.0))
    assert len(h.dials) == 1 and not h.dials[0][1]  # the room: one, never configured
    assert len(t.live) == 2 and not any(p.configured for p in t.live if p.node_id != "n00")
    asyncio.run(pex.step(100.0))
    assert len(h.dials) == 1  # full: the other learnt one is not dialled
    other = 2 if h.dials[0][0] == address(1) else 1
    assert t.admit(hello(other), dialled=address(other), configured=False) is None
    assert {p.node_id for p in t.live} == {"n00", h.dials[0][0].replace("127.0.0.1:70", "n")}


def test_a_newcomer_with_no_neighbour_splits_a_link_never_a_chosen_one() -> None:
    t = seeded_table(2)
    joined = t.admit(hello(1), dialled=address(1))
    assert joined is not None
    seed = t.get("n00")
    assert seed is not None
    seed.degree, joined.degree = 4, 2  # both keep another neighbour
    alone = pb.Hello(node_id="n02", listen_address=address(2), live_degree=0)
    assert t.admit(alone) is not None
    assert {p.node_id for p in t.live} == {"n00", "n02"}  # the seed (chosen) kept
    again = pb.Hello(node_id="n03", listen_address=address(3), live_degree=0)
    got = t.get("n02")
    assert got is not None
    got.degree = 2
    assert t.admit(again) is None  # one split a period
    t.split_at -= peers_mod.SPLIT_SECONDS
    assert t.admit(again) is not None
    assert {p.node_id for p in t.live} == {"n00", "n03"}


def test_no_split_for_a_newcomer_with_a_neighbour_or_where_each_would_be_alone() -> None:
    t = seeded_table(2)
    joined = t.admit(hello(1), dialled=address(1))
    assert joined is not None
    joined.degree = 2
    linked: Any = pb.Hello(node_id="n02", listen_address=address(2), live_degree=1)
    assert t.admit(linked) is None
    joined.degree = 1  # its only link is this node: dropping it would leave it alone
    alone = pb.Hello(node_id="n03", listen_address=address(3), live_degree=0)
    assert t.admit(alone) is None
    assert {p.node_id for p in t.live} == {"n00", "n01"}

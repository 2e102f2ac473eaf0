"""Peer exchange leaves a topology built with `--peers` as it is: a node whose given
peers all have room asks nobody for addresses and dials nothing it was not given (a
ring stays a ring, and the daemon stays bit-identical to the simulator); the first
refusal as full puts it in the exchange."""

from __future__ import annotations

import asyncio

from daemon_helpers import HOST, free_ports, serve_fake_peer
from test_pex_bounds import FakeHandshaker, Flooder

from declora.node.daemon import peer_exchange as px
from declora.node.daemon.peers import Peer


def test_a_node_whose_given_peers_have_room_asks_and_dials_nothing() -> None:
    (port,) = free_ports(1)
    neighbour = f"{HOST}:{port}"
    flooder = Flooder()  # a live ring neighbour whose Status names 1,000 others
    server = serve_fake_peer(flooder, neighbour)
    h = FakeHandshaker(neighbour, max_neighbors=8)
    h.transport.dial_log.outcomes = {neighbour: "joined"}  # nobody refused as full
    h.peers.live.append(Peer(node_id="b", address=neighbour, live=True, configured=True))
    pex = px.PeerExchange(h)  # type: ignore[arg-type]
    try:
        for now in range(0, 120, 5):
            asyncio.run(pex.step(float(now)))
        assert flooder.asked == 0 and h.dials == [] and not pex.learnt
        h.transport.dial_log.outcomes = {neighbour: "refused the handshake: " + px.FULL}
        asyncio.run(pex.step(200.0))  # a refusal as full: the swarm is larger
    finally:
        server.stop(grace=None)
    assert flooder.asked == 1 and pex.learnt

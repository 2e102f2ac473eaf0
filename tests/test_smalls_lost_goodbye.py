"""A neighbour that finished but whose goodbye (Leave) never reached this node: its last
handshake's claim says it is past this node's training (`PeerTable.finished`), so
isolation pacing (node/daemon/rounds.py `Isolation`) no longer waits a deadline per
remaining round for it, and it is not re-dialled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_daemon_parts import hello, pair

from declora.node.daemon.daemon import Daemon, Parts
from declora.node.daemon.peers import Peer


def dropped_after_claiming(data: Path, claim: int) -> tuple[Daemon, Parts, Peer]:
    """a (--rounds 2, wanting a neighbour) whose only neighbour b claimed round `claim`
    in the Welcome to a's dial, then missed a deadline (dropped, no leave notice)."""
    (da, _), (a, b) = pair(data, min_peers=1, round_deadline=3.0, rounds=2, consensus_rounds=0)
    b.progress.round = claim

    async def go() -> Peer:
        peer = await a.handshaker.dial(b.settings.advertise)
        assert peer is not None
        return peer

    peer = asyncio.run(go())
    assert peer.claimed_round == claim and a.peers.finish_round == 2
    a.peers.drop(peer, "missed the deadline")
    assert a.peers.live == [] and peer.left_after is None
    return da, a, peer


@pytest.mark.parametrize("claim", [2, 7])
def test_a_lost_goodbye_of_a_neighbour_past_the_training_does_not_pace_the_node(
    synthetic_jsonl: Path, claim: int
) -> None:
    """b claimed round 2 (a's last training exchange) or later: finished, so a trains
    alone at full speed (no wait) and does not dial b again. Before: a waited one
    deadline per remaining round, re-dialling b."""
    da, a, peer = dropped_after_claiming(synthetic_jsonl, claim)
    assert a.peers.finished(peer) and a.peers.all_finished()
    assert da.rounds is not None and not da.rounds.isolation.needed()
    assert a.peers.due_for_dial(now=peer.next_dial + 1) == []


def test_a_neighbour_that_claimed_less_still_paces_the_node(synthetic_jsonl: Path) -> None:
    """Guard: b claimed round 1 (it may come back for round 2): a waits for it and
    re-dials it, as before."""
    da, a, peer = dropped_after_claiming(synthetic_jsonl, 1)
    assert not a.peers.finished(peer) and not a.peers.all_finished()
    assert da.rounds is not None and da.rounds.isolation.needed()
    assert a.peers.due_for_dial(now=peer.next_dial + 1) == [peer]


def test_what_the_peer_said_last_decides(synthetic_jsonl: Path) -> None:
    """Guard: a leave notice after the claim (it stopped after round 1) and a new Hello
    claiming less (a restart from an older checkpoint) each undo a finished claim."""
    _, a, peer = dropped_after_claiming(synthetic_jsonl, 2)
    a.peers.leave(peer, "it left after round 1", after_mix=False, left_after=1)
    assert not a.peers.finished(peer)
    back = a.peers.admit(hello(node_id=peer.node_id, listen_address=peer.address, round=2))
    assert back is peer and a.peers.finished(peer)  # a new incarnation's claim
    a.peers.admit(hello(node_id=peer.node_id, listen_address=peer.address, round=1))
    assert not a.peers.finished(peer)

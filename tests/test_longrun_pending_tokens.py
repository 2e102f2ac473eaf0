"""The token offered in a dial is the one the peer gets, however many candidates are
dialled at once (audit "longrun": past `max_known` pending offers the table forgot
them all, so a dial answered after that installed another token than the one its peer
holds, and the peer's pushes were refused `bad_session` until it renewed)."""

from __future__ import annotations

from pathlib import Path

from test_daemon_parts import hello, pair

from declora.node.daemon import peers


def test_an_offer_survives_more_dials_than_known_peers(synthetic_jsonl: Path) -> None:
    _, (_, b) = pair(synthetic_jsonl)
    table = b.peers
    offered = table.token_for_dial("10.0.0.1:7070")
    for i in range(2, 2 + table.max_known):  # more candidates than the table knows
        table.token_for_dial(f"10.0.0.{i}:7070")
    welcome = hello(node_id="first", swarm_id="parts", listen_address="10.0.0.1:7070")
    peer = table.admit(welcome, dialled="10.0.0.1:7070", configured=True)
    assert peer is not None and peer.token_in == offered
    for i in range(10_000):  # and the offers stay bounded
        table.token_for_dial(f"10.1.{i // 250}.{i % 250 + 1}:7070")
    print(f"after 10,000 addresses dialled: len(pending_tokens) = {len(table.pending_tokens):,}")
    assert len(table.pending_tokens) == peers.PENDING_TOKENS

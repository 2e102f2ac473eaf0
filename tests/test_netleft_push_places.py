"""The Push pool holds every live neighbour's kept places (`service.push_places`):
kept pushes cut only pushes still waiting for their header, so with more neighbours
than `--max-concurrent-streams` / `STREAMS_PER_PEER` (40 neighbours, 64 streams) the
pool was full of live neighbours' kept pushes and the next neighbour's push was
refused as busy, though its IP had its kept places free; and the server's cap
(`pool_total`) reserves what the pools hold."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from test_daemon_parts import pair

from declora.node.daemon.first_message import ANSWERS_PER_NEIGHBOUR, STREAMS_PER_NEIGHBOUR
from declora.node.daemon.inbox import STREAMS_PER_PEER
from declora.node.daemon.service import SwarmService, pool_total

NEIGHBOURS = 40


def test_every_live_neighbours_kept_pushes_fit_the_pool(synthetic_jsonl: Path) -> None:
    """Before: the 65th of 80 kept pushes (40 neighbours at 40 IPs, 2 each) was refused."""
    _, (a, _) = pair(synthetic_jsonl, max_neighbors=NEIGHBOURS, max_concurrent_streams=64)
    pools = SwarmService(a).pools
    with ExitStack() as held:
        for i in range(NEIGHBOURS):
            ip = f"127.0.1.{i + 1}"
            for _ in range(STREAMS_PER_PEER):
                slot = held.enter_context(pools.push(ip, ip, allowance=STREAMS_PER_PEER))
                assert slot.kept
        assert pools.in_use["Push"] == NEIGHBOURS * STREAMS_PER_PEER
    # the server's cap reserves every pool full and the kept answers beside them
    kept_answers = (ANSWERS_PER_NEIGHBOUR + STREAMS_PER_NEIGHBOUR) * NEIGHBOURS
    assert pool_total(64, NEIGHBOURS) == sum(pools.limits.values()) + kept_answers


def test_a_pool_larger_than_the_kept_places_is_as_configured(synthetic_jsonl: Path) -> None:
    """Guard: 8 neighbours (16 kept places) leave --max-concurrent-streams 64 as it is."""
    _, (a, _) = pair(synthetic_jsonl, max_neighbors=8, max_concurrent_streams=64)
    assert SwarmService(a).pools.limits["Push"] == 64

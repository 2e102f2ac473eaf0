"""A node far behind a neighbour (a replacement starting at round 0 beside a swarm at
round 50) pushes it nothing more once it refused a round as stale, until it has caught
up (audit "revsoak"): every push would be refused, each refusal logged as a warning at
the neighbour and answered by a renewed handshake, one per round; a soak counted ~500
per replacement."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_daemon_parts import pair


def test_a_node_behind_pushes_no_stale_round_to_a_neighbour_ahead(
    synthetic_jsonl: Path,
) -> None:
    """Before: each of the 5 rounds pushed b a round it had completed, refused
    (`stale_round`) and followed by a new handshake; now only the first."""
    _, (a, b) = pair(synthetic_jsonl)
    b.progress.round = 50  # the swarm's round when the replacement a starts

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        for r in range(1, 6):  # a's own rounds, before any catch-up
            await a.exchange.exchange(r)
            a.progress.round = r

        sent = a.node.bytes_sent
        a.progress.round = 50  # caught up: b takes round 51 again
        await a.exchange.exchange(51)
        assert a.node.bytes_sent > sent

    asyncio.run(go())
    assert b.counters.rejected == {"stale_round": 1}  # round 1: a learns it is behind
    assert 51 in b.inbox.queued


def test_neighbours_in_step_still_push_each_other(synthetic_jsonl: Path) -> None:
    """A guard: two neighbours at the same round (claims below it) push and mix as
    before."""
    _, (a, b) = pair(synthetic_jsonl)
    a.progress.round = 3

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        b.progress.round = 3  # an alignment after the handshake: in step at round 4
        await asyncio.gather(a.exchange.exchange(4), b.exchange.exchange(4))

    asyncio.run(go())
    assert a.counters.rejected == b.counters.rejected == {}
    assert set(a.exchange.last_contributors) == {"b"}
    assert set(b.exchange.last_contributors) == {"a"}

"""A catch-up to the planned end of a node's rounds ends them there
(node/daemon/rounds.py): no exchange past the plan."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from test_daemon_parts import pair


def test_a_catch_up_to_the_planned_end_runs_no_more_exchanges(synthetic_jsonl: Path) -> None:
    """b is at the plan's end: a takes its state, and the round that caught up runs no
    exchange (it used to run round end + 1 and wait a deadline for b)."""
    (da, _), (a, b) = pair(synthetic_jsonl, rounds=20, consensus_rounds=5)
    end = 20 * a.settings.exchanges_per_round + 5
    b.node.train(2)
    b.progress.round = end

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await da.run_round(a, train=True)

    asyncio.run(go())
    assert a.progress.round == end
    np.testing.assert_array_equal(a.node.vector(), b.node.vector())
    peer = a.peers.get("b")
    assert peer is not None and peer.live  # no deadline missed: nothing was waited for


def test_a_catch_up_into_the_finish_trains_no_round_past_the_plan(synthetic_jsonl: Path) -> None:
    """b is two rounds into the consensus finish: a takes its state and trains no round
    past its last training round (it used to train round end + 1)."""
    (da, _), (a, b) = pair(synthetic_jsonl, rounds=20, consensus_rounds=5)
    last = 20 * a.settings.exchanges_per_round
    b.node.train(2)
    b.progress.round = last + 2

    async def go() -> bool | None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        return await da.run_round(a, train=True)

    assert asyncio.run(go()) is None
    assert a.progress.round == last + 2
    np.testing.assert_array_equal(a.node.vector(), b.node.vector())


def test_a_round_says_whether_it_trained(synthetic_jsonl: Path) -> None:
    """`Daemon.run_round` gives `RoundLoop.run_round`'s answer (it gave None always, so
    the check of None above could not fail)."""
    (da, _), (a, _) = pair(synthetic_jsonl, rounds=20)

    async def go() -> tuple[bool | None, bool | None]:
        return await da.run_round(a, train=True), await da.run_round(a, train=False)

    assert asyncio.run(go()) == (True, False)

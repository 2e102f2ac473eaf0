"""Robust mixing with fewer than 3 live neighbours (node/daemon/catchup.py): one claim
decides a skip and nothing checks it, so a skip moves at most `LONE_SKIP_PACE` rounds
per deadline since the last one; a member claiming the plan's end cannot end a node's
training early, and an honest node that fell behind still catches up."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
from test_daemon_parts import hello, pair

from declora.node.daemon.catchup import LONE_SKIP_PACE, LONE_SKIP_SPAN
from declora.node.daemon.daemon import Parts
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD
from declora.node.daemon.peers import Peer

DEADLINE = 10.0  # seconds: the exchange's deadline, as `RoundLoop` gives it
ROUNDS = 1000  # the plan: --rounds 1000, no consensus finish


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def robust_node(
    data: Path, claim: int, robust: str = "trim", rounds: int = ROUNDS
) -> tuple[Parts, Peer, Clock]:
    """a (robust mixing, on a fake clock, at round 0, `rounds` planned) with one live
    proven neighbour claiming `claim`."""
    _, (a, _b) = pair(data, robust_mixing=robust, rounds=rounds, consensus_rounds=0)
    clock = Clock()
    a.transfer.clock, a.transfer.skipped_at = clock, clock.now
    a.transfer.round_seconds = lambda: DEADLINE
    peer = a.peers.admit(hello(node_id="m", listen_address="127.0.0.9:1", round=claim))
    assert peer is not None
    peer.proven = True
    return a, peer, clock


def test_one_member_claiming_the_end_cannot_end_a_nodes_training(synthetic_jsonl: Path) -> None:
    """Its only neighbour claims the plan's end at every catch-up: a skip moves the node
    LONE_SKIP_PACE rounds per deadline since the last one (none too soon), and a long
    quiet spell banks no more than LONE_SKIP_SPAN of it. Before: straight to the end."""
    a, member, clock = robust_node(synthetic_jsonl, claim=ROUNDS)
    own = a.node.vector().copy()

    async def go() -> None:
        assert await a.transfer.catch_up() is None  # too soon: nothing moves
        assert a.progress.round == 0
        clock.now += 2 * DEADLINE
        assert await a.transfer.catch_up() is member
        assert a.progress.round == 2 * LONE_SKIP_PACE
        clock.now += 10**6  # a long while later: at most LONE_SKIP_SPAN of it counts
        assert await a.transfer.catch_up() is member
        banked = int(LONE_SKIP_PACE * LONE_SKIP_SPAN / DEADLINE)
        assert a.progress.round == 2 * LONE_SKIP_PACE + banked < ROUNDS

    asyncio.run(go())
    np.testing.assert_array_equal(a.node.vector(), own)  # robust: the adapter is kept


def test_an_honest_node_behind_still_catches_up(synthetic_jsonl: Path) -> None:
    """A swarm 300 rounds ahead, running 5 rounds a deadline, and this node training one
    a deadline (its payloads refused as stale), trying a catch-up every 2 deadlines:
    it comes within MAX_ROUNDS_AHEAD (where validated pushes align it) and never passes
    the swarm's claim."""
    a, swarm, clock = robust_node(synthetic_jsonl, claim=300)
    tries = 0

    async def go() -> None:
        nonlocal tries
        while a.transfer.far_behind():
            tries += 1
            assert tries < 100, (a.progress.round, swarm.claimed_round)
            for _ in range(2):
                clock.now += DEADLINE
                a.progress.round += 1
                swarm.claimed_round += 5
            await a.transfer.catch_up()
            assert a.progress.round <= swarm.claimed_round

    asyncio.run(go())
    assert swarm.claimed_round - a.progress.round <= MAX_ROUNDS_AHEAD


def test_a_claim_within_the_pace_moves_the_node_to_it(synthetic_jsonl: Path) -> None:
    a, member, clock = robust_node(synthetic_jsonl, claim=12)
    clock.now += 2 * DEADLINE
    assert asyncio.run(a.transfer.catch_up()) is member
    assert a.progress.round == 12


def test_the_pace_is_only_for_robust_mixing_with_fewer_than_three(synthetic_jsonl: Path) -> None:
    """Guard: without robust mixing (a state is taken: bounded as before) and with 3 or
    more live neighbours (two proven claims must agree) no pace applies."""
    a, _member, _clock = robust_node(synthetic_jsonl, claim=ROUNDS, robust="none")
    assert a.transfer.lone_skip_limit() is None
    b, _member, _clock = robust_node(synthetic_jsonl, claim=ROUNDS)
    assert b.transfer.lone_skip_limit() == 0
    for i in range(2):
        assert b.peers.admit(hello(node_id=f"h{i}", listen_address=f"127.0.0.9:{2 + i}"))
    assert b.transfer.lone_skip_limit() is None


def test_the_pace_goes_by_the_exchange_deadline(synthetic_jsonl: Path) -> None:
    """A built node's skips go by its exchange's adaptive deadline, not --round-deadline."""
    (da, _), (a, _) = pair(synthetic_jsonl, robust_mixing="trim")
    assert da.rounds is not None
    assert a.transfer.round_seconds == a.exchange.deadline_seconds


def test_a_round_too_soon_for_a_lone_skip_tries_none(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The round loop neither tries nor announces a skip that one claim would decide
    before a round's worth of time has passed: it trains its round. Before: it logged
    "skipping ahead" each round and skipped nothing."""
    (da, _), (a, _) = pair(
        synthetic_jsonl, robust_mixing="trim", rounds=ROUNDS, consensus_rounds=0, round_deadline=1.0
    )
    clock = Clock()
    a.transfer.clock, a.transfer.skipped_at = clock, clock.now
    member = a.peers.admit(hello(node_id="m", listen_address="127.0.0.9:1", round=ROUNDS))
    assert member is not None and da.rounds is not None
    member.proven = True
    assert a.transfer.far_behind() and a.transfer.lone_skip_limit() == 0
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(da.rounds.run_round(train=True)) is True
    assert a.progress.round == 1
    assert "skipping ahead" not in caplog.text


def test_with_rounds_0_a_node_joining_a_swarm_far_ahead_catches_up_at_once(
    synthetic_jsonl: Path,
) -> None:
    """--rounds 0 has no end a claim could bring the node to (a lone claim moves it at
    most CATCH_UP_WINDOW rounds a catch-up): no pace. Before: 8 rounds a deadline, so a
    node joining 5000 rounds behind a swarm running a round a second (training alone a
    little faster) took 3.6 hours of catch-ups to reach it (audit rev-bounds)."""
    a, swarm, _clock = robust_node(synthetic_jsonl, claim=5000, rounds=0)
    assert a.transfer.lone_skip_limit() is None
    assert asyncio.run(a.transfer.catch_up()) is swarm
    assert a.progress.round == 5000

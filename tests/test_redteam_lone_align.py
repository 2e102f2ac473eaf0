"""A lone member with valid payloads against `Exchange.align_round` (robust mixing,
fewer than 3 live neighbours, a planned end): an alignment spends the same lone-skip
pace as a catch-up (`StateTransfer.lone_skip_limit`, `RoundLoop.align`), so a member
that pushes a valid keyframe for the furthest round a node accepts before each of its
rounds no longer halves the node's training, nor adds alignments to catch-ups."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_daemon_parts import hello, pair

from declora.node.daemon.catchup import LONE_SKIP_PACE
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD

DEADLINE = 10.0  # seconds: the exchange's deadline, as `RoundLoop` gives it
ROUNDS = 40


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trained_under_attack(data: Path, round_seconds: float, robust: str = "trim") -> int:
    """Rounds a `--rounds 40` node trains while its only neighbour, before each of its
    rounds, has delivered a valid payload for the furthest round the node accepts
    (its verified round then: current + MAX_ROUNDS_AHEAD - 1); rounds of
    `round_seconds` on a fake clock, the round loop's own alignment step."""
    (da, _), (a, _) = pair(data, robust_mixing=robust, rounds=ROUNDS, consensus_rounds=0)
    assert da.rounds is not None
    clock = Clock()
    a.transfer.clock, a.transfer.skipped_at = clock, clock.now
    a.transfer.round_seconds = lambda: DEADLINE
    member = a.peers.admit(hello(node_id="m", listen_address="127.0.0.9:1"))
    assert member is not None
    member.proven = True
    trained = 0
    while True:
        member.round = a.progress.round + MAX_ROUNDS_AHEAD - 1
        da.rounds.align()
        if a.progress.round >= ROUNDS:
            return trained
        a.progress.round += 1
        trained += 1
        clock.now += round_seconds


@pytest.mark.parametrize("round_seconds", [0.1, 1.0, 10.0])
def test_a_lone_member_cannot_halve_a_robust_nodes_training(
    synthetic_jsonl: Path, round_seconds: float
) -> None:
    """Before: 19 of 40 rounds trained whatever the round time (7 rounds skipped every 8
    trained, from round 0); now a skip also waits for LONE_SKIP_PACE rounds a deadline
    of time (0.1 s rounds: 38 trained; 10 s rounds, one a deadline: 19, as before)."""
    trained = trained_under_attack(synthetic_jsonl, round_seconds)
    print(f"\nrounds of {round_seconds} s, deadline {DEADLINE} s: trained {trained} of {ROUNDS}")
    most_skipped = LONE_SKIP_PACE * (ROUNDS * round_seconds / DEADLINE) + 1
    assert ROUNDS - trained <= most_skipped


def test_an_alignment_spends_the_catch_up_pace(synthetic_jsonl: Path) -> None:
    """An alignment resets the lone-skip clock: a catch-up right after moves nothing."""
    (da, _), (a, _) = pair(synthetic_jsonl, robust_mixing="trim", rounds=ROUNDS)
    assert da.rounds is not None
    clock = Clock()
    a.transfer.clock, a.transfer.skipped_at = clock, clock.now
    a.transfer.round_seconds = lambda: DEADLINE
    member = a.peers.admit(hello(node_id="m", listen_address="127.0.0.9:1"))
    assert member is not None
    member.proven, member.round = True, 5
    clock.now += DEADLINE
    da.rounds.align()
    assert a.progress.round == 5
    assert a.transfer.lone_skip_limit() == 0


def test_without_the_lone_pace_an_alignment_is_as_before(synthetic_jsonl: Path) -> None:
    """Guard: no robust mixing (no lone pace): a neighbour 6 rounds ahead aligns the node
    at once, however recent its start."""
    (da, _), (a, _) = pair(synthetic_jsonl, rounds=ROUNDS)
    assert da.rounds is not None
    member = a.peers.admit(hello(node_id="m", listen_address="127.0.0.9:1"))
    assert member is not None
    member.round = 6
    da.rounds.align()
    assert a.progress.round == 6

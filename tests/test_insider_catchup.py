"""A swarm member (holding the secret, running modified code) against catch-up
(node/daemon/catchup.py) and resume (node/checkpoint.py): with 3 or more neighbours one
proven neighbour alone cannot move a node; with robust mixing a catch-up moves the round
only and keeps the node's adapter; with --rounds 0 a catch-up moves a node by a bounded
window, never near the Hello bound (MAX_ROUND); a checkpoint past MAX_OWN_ROUND is
refused on resume."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
from test_daemon_parts import hello, pair

from declora.node.checkpoint import CheckpointError, round_problem
from declora.node.daemon.catchup import CATCH_UP_WINDOW, LONE_SKIP_SPAN
from declora.node.daemon.daemon import Parts
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD
from declora.node.daemon.peers import Peer
from declora.node.identity import MAX_OWN_ROUND, MAX_ROUND, MAX_SEQ


def _more_neighbours(a: Parts, n: int, round_: int = 1) -> list[Peer]:
    """`n` more live neighbours of `a`, not proven, claiming `round_`."""
    added = []
    for i in range(n):
        p = a.peers.admit(hello(node_id=f"h{i}", listen_address=f"127.0.0.9:{i + 1}", round=round_))
        assert p is not None
        added.append(p)
    return added


def forged_at_the_end(data: Path, robust: str) -> tuple[Parts, Parts, int, np.ndarray]:
    """a (trained 2 steps, robust mixing `robust`) and b at the plan's end serving a
    forged state (-20x a's adapter); the end, and a's own adapter."""
    (_, _), (a, b) = pair(data, robust_mixing=robust, rounds=20, consensus_rounds=5)
    end = 20 * a.settings.exchanges_per_round + 5
    a.node.train(2)
    own = a.node.vector().copy()
    b.node.trainer.set_vector((-20.0 * own).astype(np.float32))
    b.progress.round = end
    return a, b, end, own


def test_one_proven_neighbour_among_three_cannot_end_a_nodes_training(
    synthetic_jsonl: Path,
) -> None:
    """b delivered before (proven) and claims the plan's end: with two more neighbours
    it moves nothing; a second proven neighbour's claim does (the lower one)."""
    (_, _), (a, b) = pair(synthetic_jsonl, rounds=20, consensus_rounds=5)
    end = 20 * a.settings.exchanges_per_round + 5
    b.progress.round = end

    async def go() -> Peer:
        source = await a.handshaker.dial(b.settings.advertise)
        assert source is not None
        return source

    source = asyncio.run(go())
    source.proven = True
    assert source.claimed_round == end
    a.progress.round = 1  # after a round with b
    h0, _h1 = _more_neighbours(a, 2)
    assert a.transfer.catch_up_target() is None
    assert not a.transfer.far_behind()
    h0.proven, h0.claimed_round = True, 3 * MAX_ROUNDS_AHEAD  # two proven agree this far
    assert a.transfer.catch_up_target() == (h0, 3 * MAX_ROUNDS_AHEAD)


@pytest.mark.parametrize("robust", ["clip", "trim"])
def test_with_robust_mixing_a_catch_up_keeps_the_adapter(
    synthetic_jsonl: Path, robust: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A proven neighbour serving a forged state at the plan's end: the node skips to
    that round (its only neighbour decides the round, at the pace of one unchecked
    claim: here long since the last skip, 1 s deadlines; tests/test_smalls_lone_skip.py)
    but keeps its own adapter; every neighbour gets a keyframe."""
    a, b, end, own = forged_at_the_end(synthetic_jsonl, robust)
    a.transfer.round_seconds = lambda: 1.0
    a.transfer.skipped_at -= LONE_SKIP_SPAN

    async def go() -> None:
        source = await a.handshaker.dial(b.settings.advertise)
        assert source is not None and not source.send_keyframe  # both at the seeded init
        source.proven = True
        seq = a.progress.seq
        with caplog.at_level(logging.WARNING, logger="declora.node.daemon.catchup"):
            assert await a.transfer.catch_up() is source
        assert a.progress.round == end
        assert a.progress.seq == seq + 1 and source.send_keyframe

    asyncio.run(go())
    np.testing.assert_array_equal(a.node.vector(), own)
    assert "keeps its own adapter" in caplog.text


def test_with_robust_mixing_and_three_neighbours_two_proven_decide_the_round(
    synthetic_jsonl: Path,
) -> None:
    """Robust mixing, 3 live: b (proven) claims the plan's end and serves a forged
    state, h0 (proven) claims 10, h1 (never delivered) the end: the node moves to 10,
    the second proven claim, takes no state (h0 serves none) and keeps its adapter;
    every neighbour gets a keyframe."""
    a, b, end, own = forged_at_the_end(synthetic_jsonl, "trim")

    async def go() -> None:
        source = await a.handshaker.dial(b.settings.advertise)
        assert source is not None
        source.proven = True
        h0, _h1 = _more_neighbours(a, 2, round_=end)
        h0.proven, h0.claimed_round = True, 10
        assert await a.transfer.catch_up() is h0
        assert a.progress.round == 10
        assert all(p.send_keyframe for p in a.peers.live)

    asyncio.run(go())
    np.testing.assert_array_equal(a.node.vector(), own)


def test_with_no_planned_end_one_neighbour_moves_a_node_by_the_window(
    synthetic_jsonl: Path,
) -> None:
    """--rounds 0: a proven neighbour claiming and serving MAX_ROUND moves the round by
    the window only, keeping the adapter (a node at its round would run past the
    Hello bound and every neighbour would refuse it); a state within the window is
    taken."""
    (_, _), (a, b) = pair(synthetic_jsonl)
    assert a.settings.rounds == 0
    b.node.train(2)
    b.progress.round = MAX_ROUND
    own = a.node.vector().copy()

    async def go() -> None:
        source = await a.handshaker.dial(b.settings.advertise)
        assert source is not None and source.claimed_round == MAX_ROUND
        source.proven = True
        assert a.transfer.catch_up_target() == (source, CATCH_UP_WINDOW)
        for k in (1, 2):
            assert await a.transfer.catch_up() is source
            assert a.progress.round == k * CATCH_UP_WINDOW
            np.testing.assert_array_equal(a.node.vector(), own)
        source.claimed_round = 2 * CATCH_UP_WINDOW + 2  # claimed again, within reach
        b.progress.round = 2 * CATCH_UP_WINDOW + 4  # a state a little past the claim
        assert await a.transfer.catch_up() is source
        assert a.progress.round == 2 * CATCH_UP_WINDOW + 4

    asyncio.run(go())
    np.testing.assert_array_equal(a.node.vector(), b.node.vector())


def test_with_no_planned_end_an_honest_swarm_past_the_window_is_reached(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--rounds 0, a node restarted without its checkpoint (no proven neighbour), its
    honest neighbour 3 windows ahead: before, every catch-up targeted the window and
    refused the state of the neighbour's real round ("outside"), for ever. Now each
    moves the round by the window (keeping the adapter) and the last takes the state."""
    (_, _), (a, b) = pair(synthetic_jsonl)
    b.node.train(2)
    b.progress.round = 3 * CATCH_UP_WINDOW
    own = a.node.vector().copy()

    async def go() -> list[int]:
        rounds = []
        for _ in range(3):
            source = await a.handshaker.dial(b.settings.advertise)  # its Hello, again
            assert source is not None and not source.proven
            assert await a.transfer.catch_up() is source
            rounds.append(a.progress.round)
            if a.progress.round < 3 * CATCH_UP_WINDOW:
                np.testing.assert_array_equal(a.node.vector(), own)
        return rounds

    with caplog.at_level(logging.WARNING, logger="declora.node.daemon.catchup"):
        got = asyncio.run(go())
    assert got == [CATCH_UP_WINDOW, 2 * CATCH_UP_WINDOW, 3 * CATCH_UP_WINDOW]
    np.testing.assert_array_equal(a.node.vector(), b.node.vector())
    assert f"round {3 * CATCH_UP_WINDOW} is beyond reach" in caplog.text


def test_with_no_planned_end_a_stale_claim_of_a_proven_neighbour_still_catches_up(
    synthetic_jsonl: Path,
) -> None:
    """--rounds 0, a healed partition: the proven neighbour's Hello claims round 20
    (sent as the link came back), and it ran 20 short rounds more before the pull.
    Before, a state past claim + MAX_ROUNDS_AHEAD was refused with --rounds 0 even
    from a proven neighbour that alone decides; now it is taken, within the window."""
    (_, _), (a, b) = pair(synthetic_jsonl)
    b.node.train(2)
    b.progress.round = 20

    async def go() -> None:
        source = await a.handshaker.dial(b.settings.advertise)
        assert source is not None and source.claimed_round == 20
        source.proven = True
        b.progress.round = 40  # on since its Hello
        assert await a.transfer.catch_up() is source
        assert a.progress.round == 40

    asyncio.run(go())
    np.testing.assert_array_equal(a.node.vector(), b.node.vector())


def test_two_unproven_ids_cannot_outvote_a_proven_neighbour(synthetic_jsonl: Path) -> None:
    """3 live: b proven, at a's round; two fresh ids (one insider host's share of
    unlisted slots) claim the plan's end. Before, the target was theirs (the
    second-highest claim of all); now the lower of b's claim and that one: none."""
    (_, _), (a, b) = pair(synthetic_jsonl, rounds=20, consensus_rounds=5)
    end = 20 * a.settings.exchanges_per_round + 5

    async def go() -> Peer:
        source = await a.handshaker.dial(b.settings.advertise)
        assert source is not None
        return source

    source = asyncio.run(go())
    source.proven = True
    a.progress.round = b.progress.round = source.claimed_round = 1
    h0, h1 = _more_neighbours(a, 2, round_=end)
    assert a.transfer.catch_up_target() is None
    assert not a.transfer.far_behind()
    source.claimed_round = 20  # b ahead: the lower claim (b's) decides, b is the source
    assert a.transfer.catch_up_target() == (source, 20)
    h0.claimed_round, h1.claimed_round = 15, 10  # the second-highest is lower: it decides
    assert a.transfer.catch_up_target() == (h0, 15)


def test_with_no_planned_end_two_proven_neighbours_move_a_node_to_the_ceiling(
    synthetic_jsonl: Path,
) -> None:
    """Two proven neighbours agreeing move a node past the window, never past
    MAX_OWN_ROUND."""
    (_, _), (a, _b) = pair(synthetic_jsonl)
    peers = _more_neighbours(a, 3, round_=MAX_ROUND)
    for p in peers[:2]:
        p.proven = True
    target = a.transfer.catch_up_target()
    assert target is not None and target[1] == MAX_OWN_ROUND
    a.progress.round = MAX_OWN_ROUND  # there: no catch-up moves it on, nor back
    assert a.transfer.catch_up_target() is None


def test_a_checkpoint_past_the_highest_own_round_is_refused(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    opts = {"checkpoint_dir": tmp_path / "a"}
    (da, _), (a, _) = pair(synthetic_jsonl, **opts)
    a.progress.round = MAX_ROUND + 1  # what the old catch-up left after one more round
    da.store.save_checkpoint()
    (db, _), (b, _) = pair(synthetic_jsonl, first={"resume": True}, **opts)
    with pytest.raises(CheckpointError, match=rf"round {MAX_ROUND + 1}, seq"):
        db.store.resume(b)
    assert b.progress.round == 0


def test_a_checkpoint_past_the_highest_own_round_gives_way_to_an_older_one(
    synthetic_jsonl: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The newest checkpoint is past MAX_OWN_ROUND, an older one is intact: resume
    takes the older one, and the warning says so (before, it also said "begin afresh
    in another --checkpoint-dir", which was not what happened)."""
    opts = {"checkpoint_dir": tmp_path / "a"}
    (da, _), (a, _) = pair(synthetic_jsonl, **opts)
    a.progress.round = 5
    da.store.save_checkpoint()
    a.progress.round = MAX_OWN_ROUND + 1
    da.store.save_checkpoint()
    (db, _), (b, _) = pair(synthetic_jsonl, first={"resume": True}, **opts)
    with caplog.at_level(logging.WARNING, logger="declora.node.checkpoint"):
        db.store.resume(b)
    assert b.progress.round == 5
    [warning] = [r.getMessage() for r in caplog.records if "intact" in r.getMessage()]
    assert f"round {MAX_OWN_ROUND + 1}, seq" in warning
    assert "resuming from the newest intact checkpoint" in warning
    assert "afresh" not in warning, warning


@pytest.mark.parametrize(
    ("round_", "seq", "ok"),
    [
        (0, 0, True),
        (MAX_OWN_ROUND, MAX_SEQ, True),
        (MAX_OWN_ROUND + 1, 0, False),
        (-1, 0, False),
        (0, MAX_SEQ + 1, False),
        (True, 0, False),
        (0, True, False),
        ("3", 0, False),
        (3.0, 0, False),
    ],
)
def test_checkpoint_rounds_are_bounded(round_: object, seq: object, ok: bool) -> None:
    assert (round_problem(round_, seq) == "") is ok

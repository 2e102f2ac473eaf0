"""Isolation pacing (`rounds.Isolation`): a node that wants neighbours and has none
live waits for one before each training exchange, up to the round's deadline, so a
cut-off node falls behind the swarm instead of racing ahead of it; and the two sides
of a handshake made mid-round (in step, or one round apart) mix instead of dropping
each other at the deadline. In-process, over the in-memory transport."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Awaitable
from pathlib import Path

import pytest
from memory_transport import MemoryContext, MemoryNetwork, MemoryTransport
from test_daemon_parts import pair, settings

from declora.node.daemon import Daemon, rounds
from declora.node.daemon.daemon import Parts
from declora.node.daemon.service import SwarmService
from declora.node.daemon.state import NodeState
from declora.node.identity import MAX_ROUND
from declora.proto import pb

WAITS = "no live neighbour: each round waits"


def alone(
    data: Path, peers: tuple[str, ...] = ("127.0.0.1:7499",), **extra: object
) -> tuple[Daemon, Parts]:
    """One daemon with static `peers` (by default it wants one live), none running."""
    s = settings("a", data, 0, list(peers), **extra)
    d = Daemon(s, MemoryTransport(MemoryNetwork(), s, None))
    return d, d.build()


def timed_train_loop(d: Daemon) -> float:
    assert d.rounds is not None
    t0 = time.monotonic()
    asyncio.run(d.rounds.train_loop())
    return time.monotonic() - t0


class WaitClock:
    """`rounds`' clock and its isolation polls in virtual seconds, so no test depends
    on the machine's speed: a poll that times out moves `now` by its full timeout;
    `polls` records each timeout given.
    `real`: whether a poll also waits that long in real time (for events that come
    in real time), else only yields."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, real: bool) -> None:
        self.now, self.real = 0.0, real
        self.polls: list[float] = []
        clock = types.SimpleNamespace(**vars(time))
        clock.monotonic = lambda: self.now
        monkeypatch.setattr(rounds, "time", clock)
        monkeypatch.setattr(rounds, "asyncio", self)

    def __getattr__(self, name: str) -> object:  # rounds' other asyncio calls
        return getattr(asyncio, name)

    async def wait_for(self, awaitable: Awaitable[object], timeout: float) -> object:
        self.polls.append(timeout)
        try:
            return await asyncio.wait_for(awaitable, timeout if self.real else 0)
        except TimeoutError:
            self.now += timeout
            raise


def test_an_isolated_node_waits_a_deadline_before_each_round(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: 3 rounds alone in a blink (a flap test saw 778 rounds in 10 s)."""
    d, a = alone(synthetic_jsonl, round_deadline=0.5, rounds=3, consensus_rounds=0)
    with caplog.at_level("INFO"):
        took = timed_train_loop(d)
    assert a.progress.round == 3 and took >= 3 * 0.5 - 0.05, took
    warned = [r for r in caplog.records if WAITS in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"  # once, not every round
    assert "--min-peers 0: never wait" in warned[0].getMessage()


@pytest.mark.parametrize(
    "extra",
    [{"min_peers": 0}, {"peers": (), "solo": True}],
    ids=["min-peers-0", "solo"],
)
def test_a_node_that_wants_no_neighbour_never_waits(
    synthetic_jsonl: Path,
    caplog: pytest.LogCaptureFixture,
    extra: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, a = alone(synthetic_jsonl, round_deadline=5.0, rounds=3, consensus_rounds=0, **extra)
    clock = WaitClock(monkeypatch, real=False)
    with caplog.at_level("INFO"):
        timed_train_loop(d)
    assert a.progress.round == 3 and clock.polls == [] and clock.now == 0
    assert not [r for r in caplog.records if WAITS in r.getMessage()]


def test_the_wait_ends_as_soon_as_a_neighbour_is_live(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handshake wakes the wait, which ends there: far short of its deadline."""
    (da, _), (a, b) = pair(synthetic_jsonl, min_peers=1, round_deadline=600.0)
    assert da.rounds is not None
    clock = WaitClock(monkeypatch, real=True)

    async def go() -> None:
        async def join() -> None:
            await asyncio.sleep(0.3)
            assert await a.handshaker.dial(b.settings.advertise) is not None

        await asyncio.gather(da.rounds.isolation.wait(), join())  # type: ignore[union-attr]

    with caplog.at_level("INFO"):
        asyncio.run(go())
    assert a.peers.live and clock.now < a.exchange.deadline_seconds(), clock.now
    assert [r for r in caplog.records if "rounds no longer wait" in r.getMessage()]


@pytest.mark.parametrize(("left_after", "waits"), [(2, False), (10**9, False), (1, True)])
def test_neighbours_that_finished_do_not_hold_a_node_behind_them(
    synthetic_jsonl: Path, left_after: int, waits: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--rounds 2: a neighbour that left after round 2 or later has finished and will
    not come back; one that left after round 1 (stopped mid-run) may: wait for it."""
    (da, _), (a, b) = pair(
        synthetic_jsonl, min_peers=1, round_deadline=3.0, rounds=2, consensus_rounds=0
    )

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        a.exchange.on_leave(a.peers.peers["b"], "test", left_after=left_after)
        assert a.peers.live == []

    asyncio.run(go())
    assert a.peers.finished(a.peers.peers["b"]) is not waits
    clock = WaitClock(monkeypatch, real=False)
    timed_train_loop(da)
    assert a.progress.round == 2
    assert clock.now == (2 * 3.0 if waits else 0), clock.now  # a full deadline each round


def test_a_peer_forgotten_after_its_leave_is_not_pruned_once_finished(
    synthetic_jsonl: Path,
) -> None:
    """A finished neighbour stays known, so `all_finished` does not turn false (and the
    node back to waiting) when the table would forget it."""
    _, (a, b) = pair(synthetic_jsonl, rounds=2)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None

    asyncio.run(go())
    peer = a.peers.peers["b"]
    a.exchange.on_leave(peer, "test", left_after=2)
    a.peers.prune(now=time.monotonic() + 10**6)
    assert a.peers.get("b") is peer and a.peers.all_finished()
    assert a.peers.admit(pb.Hello(node_id="b", listen_address=peer.address)) is peer
    assert peer.left_after is None and not a.peers.all_finished()  # back: not finished


def test_a_leave_notice_round_is_bounded(synthetic_jsonl: Path) -> None:
    _, (a, b) = pair(synthetic_jsonl, rounds=2)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        peer = a.peers.peers["b"]
        notice = pb.LeaveNotice(
            node_id="b",
            swarm_id="parts",
            round=2**64 - 1,
            session=peer.token_in,
            receiver_id="a",
        )
        caller = MemoryContext("ipv4:127.0.0.1:1")
        await SwarmService(a).Leave(notice, caller)  # type: ignore[arg-type]

    asyncio.run(go())
    peer = a.peers.peers["b"]
    assert not peer.live and peer.left_after == MAX_ROUND and a.peers.finished(peer)


@pytest.mark.parametrize("pending", [False, True], ids=["stop", "stop-after-round"])
def test_a_stop_during_the_wait_stops_at_once(
    synthetic_jsonl: Path, pending: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while waiting for a neighbour: no round is in progress, so the node
    stops within a poll, whether the signal found it between rounds (EXCHANGING
    lingers after a mix: a stop after the round) or not. Before: rounds ran alone
    until the stop."""
    d, a = alone(synthetic_jsonl, round_deadline=600.0, rounds=0)
    clock = WaitClock(monkeypatch, real=True)

    async def go() -> float:
        assert d.rounds is not None
        loop = d.rounds.train_loop()
        task = asyncio.create_task(loop)
        await asyncio.sleep(0.5)
        if pending:
            a.progress.state = NodeState.EXCHANGING
        at_stop = clock.now
        d.request_stop()
        await task
        return clock.now - at_stop

    waited = asyncio.run(go())
    assert a.progress.stop_requested and a.progress.round == 0
    assert waited <= rounds.ISOLATION_POLL, waited  # the poll under way, then no more


def test_a_handshake_made_mid_round_mixes_both_sides(synthetic_jsonl: Path) -> None:
    """a and b, each in round 1 and waiting for c (which runs no round), shake hands:
    each now waits for the other, so each must push its round to the other too.
    Before: neither did, and both dropped each other at the deadline (as they did
    again after every re-join)."""
    (da, _), (a, b) = pair(synthetic_jsonl, round_deadline=2.0)
    network = da.transport.network  # type: ignore[attr-defined]
    address = "127.0.0.1:7409"
    s = a.settings.model_copy(update={"node_id": "c", "listen": address, "advertise": address})
    c = Daemon(s, MemoryTransport(network, s, None)).build()
    network.serve(s.advertise, SwarmService(c))

    async def go() -> None:
        assert await a.handshaker.dial(s.advertise) is not None
        assert await b.handshaker.dial(s.advertise) is not None

        async def join() -> None:
            await asyncio.sleep(0.3)
            assert await a.handshaker.dial(b.settings.advertise) is not None

        await asyncio.gather(a.exchange.exchange(1), b.exchange.exchange(1), join())

    asyncio.run(go())
    assert a.exchange.last_contributors == ["b"] and b.exchange.last_contributors == ["a"]
    assert a.peers.peers["b"].live and b.peers.peers["a"].live


def test_a_pair_one_round_apart_after_a_rejoin_mixes(synthetic_jsonl: Path) -> None:
    """a at round 5, b at 4, both live at the round start: b goes on past its round 5
    without a (which sends none), a's round 6 reaches b and b's round 6 reaches a: both
    mix and stay live (a guard on `due` not waiting for a neighbour past the round)."""
    (da, db), (a, b) = pair(synthetic_jsonl, round_deadline=120.0)
    a.progress.round, b.progress.round = 5, 4

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None

        async def b_rounds() -> None:
            await db.run_round(b, train=True)
            await db.run_round(b, train=True)

        await asyncio.gather(da.run_round(a, train=True), b_rounds())

    asyncio.run(go())
    assert a.progress.round == b.progress.round == 6
    assert a.exchange.last_contributors == ["b"] and b.exchange.last_contributors == ["a"]
    assert a.peers.peers["b"].live and b.peers.peers["a"].live  # no deadline dropped either


def test_a_neighbour_past_the_round_is_not_waited_for(synthetic_jsonl: Path) -> None:
    """b (at round 4) shakes hands with a, which has completed round 5 and is busy
    with its next local steps (slow steps: an LLM): a sends no round-5 payload, so b's
    round 5 must not wait for it. Before: b waited until its deadline and dropped a,
    one round apart, after every re-join."""
    (_, db), (a, b) = pair(synthetic_jsonl, round_deadline=120.0)
    a.progress.round, b.progress.round = 5, 4

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await db.run_round(b, train=False)  # a runs no round meanwhile

    asyncio.run(go())
    assert b.progress.round == 5 and b.peers.peers["a"].live  # a deadline would drop a


def test_a_delta_queued_before_a_handshake_out_of_step_is_skipped_not_dropped(
    synthetic_jsonl: Path,
) -> None:
    """a's round-1 delta is checked and queued at b; then a renewed handshake finds the
    two out of step (a's sequence moved on: a push b never took) and b forgets a's
    copy. b's mix skips the delta and keeps a. Before: the mix failed ("no public copy
    of 'a'") and dropped a (the slow-link audit saw it after a re-join)."""
    (da, _), (a, b) = pair(synthetic_jsonl, round_deadline=0.5)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await da.run_round(a, train=True)  # b runs no round: a's delta waits in b's inbox
        assert "a" in b.inbox.arrived(1)
        a.progress.seq += 1  # a payload of a's that b never took
        assert await a.handshaker.dial(b.settings.advertise) is not None
        assert b.peers.peers["a"].expected_seq is None  # out of step: copy forgotten
        b.exchange.mix(1, 1)

    asyncio.run(go())
    assert b.peers.peers["a"].live and b.exchange.last_contributors == []


def test_status_shows_waiting_while_the_node_waits_for_a_neighbour(synthetic_jsonl: Path) -> None:
    """`status` reads `waiting` during an isolation wait (it read `exchanging`)."""
    d, a = alone(synthetic_jsonl, round_deadline=1.0, rounds=1, consensus_rounds=0)
    assert d.rounds is not None
    seen: list[NodeState] = []

    async def go() -> None:
        async def look() -> None:
            await asyncio.sleep(0.3)
            seen.append(a.progress.state)

        await asyncio.gather(d.rounds.isolation.wait(), look())  # type: ignore[union-attr]

    asyncio.run(go())
    assert seen == [NodeState.WAITING]
    assert not a.progress.in_round  # a polite stop need not wait for a round's end


def test_a_stop_while_a_round_starts_after_a_wait_is_polite(synthetic_jsonl: Path) -> None:
    """After an isolation wait the round's start (catch-up, alignment) is part of the
    round: `status` no longer reads `waiting`, and a SIGTERM then lets the round train
    and mix. Before: WAITING lingered, the stop was immediate, and the round trained 0
    steps yet was recorded (and checkpointed) as "train"."""
    d, a = alone(synthetic_jsonl, round_deadline=0.3, rounds=2, consensus_rounds=0)
    assert d.rounds is not None
    seen: list[NodeState] = []
    align = a.exchange.align_round

    def stop_while_aligning() -> None:
        seen.append(a.progress.state)
        d.request_stop()
        align()

    a.exchange.align_round = stop_while_aligning  # type: ignore[method-assign]
    asyncio.run(d.rounds.train_loop())
    assert seen == [NodeState.TRAINING]
    assert a.progress.round == 1 and a.progress.stop_requested
    assert a.report.loss > 0  # its local steps ran (a stopped train gives 0.0)


def test_a_stop_between_rounds_starts_no_new_round(synthetic_jsonl: Path) -> None:
    """SIGTERM while a completed round is recorded or checkpointed (the state still
    reads `exchanging`, so it is a stop after the round): no new round starts. Before:
    a node with a live neighbour, or one that waits for none, ran one more round."""
    d, a = alone(synthetic_jsonl, min_peers=0, rounds=3, consensus_rounds=0, eval_every=0)
    assert d.rounds is not None
    record = d.rounds.store.record

    def stop_while_recording(phase: str, evaluated: bool) -> None:
        record(phase, evaluated)
        if a.progress.round == 1:
            d.request_stop()

    d.rounds.store.record = stop_while_recording  # type: ignore[method-assign]
    asyncio.run(d.rounds.train_loop())
    assert a.progress.round == 1 and a.progress.stop_requested


def test_a_finished_peer_is_not_redialled(synthetic_jsonl: Path) -> None:
    """A neighbour that left after this node's last training round will not come back
    for it: it stays known (`all_finished`) but is dialled no more. Before: it was
    re-dialled every minute for the rest of the run."""
    _, (a, b) = pair(synthetic_jsonl, rounds=2)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None

    asyncio.run(go())
    peer = a.peers.peers["b"]
    later = time.monotonic() + 10**6
    a.exchange.on_leave(peer, "test", left_after=2)
    assert a.peers.due_for_dial(now=later) == [] and a.peers.all_finished()
    a.exchange.on_leave(peer, "test", left_after=1)  # stopped mid-run: it may come back
    assert a.peers.due_for_dial(now=later) == [peer]


def test_a_wait_ends_when_the_last_neighbour_finishes_meanwhile(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b dropped (it may come back): a waits; b's leave notice then says it finished, so
    the wait ends at its next poll. Before: it went on to the deadline."""
    (da, _), (a, b) = pair(
        synthetic_jsonl, min_peers=1, round_deadline=600.0, rounds=2, consensus_rounds=0
    )
    assert da.rounds is not None
    clock = WaitClock(monkeypatch, real=True)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        peer = a.peers.peers["b"]
        a.peers.drop(peer, "test")

        async def finish() -> None:
            await asyncio.sleep(0.3)
            a.exchange.on_leave(peer, "test", left_after=2)

        await asyncio.gather(da.rounds.isolation.wait(), finish())  # type: ignore[union-attr]

    asyncio.run(go())
    assert a.peers.all_finished() and clock.now < a.exchange.deadline_seconds(), clock.now


def test_a_stop_between_finish_rounds_starts_no_new_one(synthetic_jsonl: Path) -> None:
    """As between training rounds: a polite stop asked for while a consensus round is
    recorded ends the finish there. Before: one more finish round ran."""
    (da, db), (a, b) = pair(
        synthetic_jsonl, min_peers=1, round_deadline=1.0, rounds=1, consensus_rounds=4
    )
    assert da.rounds is not None and db.rounds is not None
    last = a.settings.exchanges_per_round
    for parts in (a, b):  # never close enough: only the stop ends a's finish
        parts.node.disagreement = lambda live: 1.0  # type: ignore[method-assign]
    record = da.rounds.store.record

    def stop_while_recording(phase: str, evaluated: bool) -> None:
        record(phase, evaluated)
        if phase == "consensus" and not a.progress.stop_pending:  # once (twice: exit 130)
            da.request_stop()

    da.rounds.store.record = stop_while_recording  # type: ignore[method-assign]

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await asyncio.gather(da.rounds.train_loop(), db.rounds.train_loop())  # type: ignore[union-attr]

    asyncio.run(go())
    assert a.progress.stop_requested and a.progress.round == last + 1


def test_a_catch_up_or_alignment_that_moves_the_round_keeps_a_stop_polite() -> None:
    """A polite stop asked for as a round starts waits for that round's mix even when
    its catch-up or alignment moves the round first (before, moving the round made the
    stop immediate: the round trained 0 steps and was recorded as trained)."""
    from declora.node.daemon.state import Progress

    async def go() -> tuple[bool, bool]:
        p = Progress()
        p.state = NodeState.TRAINING
        p.stop_after_round()
        p.round = 12  # a catch-up or an alignment
        before = p.stop_requested
        p.completed(13)  # the round mixed
        return before, p.stop_requested

    assert asyncio.run(go()) == (False, True)

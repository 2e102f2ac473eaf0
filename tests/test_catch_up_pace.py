"""A pulled state is held to a pace (`catchup.STATE_PACE`), and catch-ups back off
unless quick and from a source not caught up from just before
(`rounds.RoundLoop.catch_up`): a proven neighbour that serves a valid state slowly,
or claims to be far ahead again and again, cannot freeze a node's rounds.

Before: a state trickled in chunks each just inside the stream idle cut was read up
to the pull's timeout (max(--round-deadline, 30 s)) and, being valid, taken; the
success reset the wait to 10 s, so the attacker could repeat it every few seconds
(48 s frozen per catch-up against real daemons). In-process over the in-memory
transport, with the pace and thresholds shortened (the source's stub serves its real,
signed state in slices, `gap` s apart: the in-memory channel delivers a server stream
only once its handler ends, so it cannot trickle)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_daemon_parts import pair

from declora.node.daemon import catchup
from declora.node.daemon.daemon import Parts
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD
from declora.node.daemon.rounds import CATCH_UP_EVERY, CATCH_UP_MAX_WAIT, RoundLoop
from declora.node.wire import Pace, chunks
from declora.proto import pb

FAR = 5 * MAX_ROUNDS_AHEAD


class Call:
    """A streaming reply as a gRPC call is one: iterated, and `cancel`led; `cancelled`
    tells whether it was cancelled before it ended (as `grpc.aio.Call.cancel`, a no-op
    on an ended call)."""

    def __init__(self, replies: AsyncIterator[pb.Chunk]) -> None:
        self.replies, self.ended, self.cancelled = replies, False, False

    def __aiter__(self) -> AsyncIterator[pb.Chunk]:
        return self._read()

    async def _read(self) -> AsyncIterator[pb.Chunk]:
        async for chunk in self.replies:
            if self.cancelled:
                return
            yield chunk
        self.ended = True

    def cancel(self) -> bool:
        if self.ended or self.cancelled:
            return False
        self.cancelled = True
        return True


class FakeClock:
    """A clock that moves only when told (`RoundLoop.clock`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Trickle:
    """The source's stub, except that Pull serves its real state (valid and signed) in
    `pieces` slices `gap` seconds apart (`extra` bytes announced beyond it): slept, or,
    given a `clock`, added to it at once. `timeouts`: each Pull's timeout."""

    def __init__(
        self,
        real: Any,
        source: Parts,
        pieces: int,
        gap: float,
        extra: int = 0,
        clock: FakeClock | None = None,
    ) -> None:
        self.real, self.source = real, source
        self.pieces, self.gap, self.extra, self.clock = pieces, gap, extra, clock
        self.calls: list[Call] = []
        self.timeouts: list[float | None] = []

    @property
    def pulls(self) -> int:
        return len(self.calls)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def Pull(self, request: pb.PullRequest, timeout: float | None = None) -> Call:

        async def replies() -> AsyncIterator[pb.Chunk]:
            served = list(await self.source.transfer.state_chunks())
            header = pb.PayloadHeader()
            header.CopyFrom(served[0].header)
            header.total_bytes += self.extra
            data = b"".join(c.data for c in served[1:])
            size = -(-len(data) // self.pieces)
            first, *rest = chunks(header, data, size)
            yield first
            for chunk in rest:
                if self.clock is None:
                    await asyncio.sleep(self.gap)
                else:
                    self.clock.now += self.gap
                yield chunk

        self.timeouts.append(timeout)
        self.calls.append(Call(replies()))
        return self.calls[-1]


def setup(
    data: Path,
    pieces: int,
    gap: float,
    extra: int = 0,
    clock: FakeClock | None = None,
    **settings: object,
) -> tuple[RoundLoop, Parts, Parts, Trickle]:
    """a, b introduced; b trained and FAR rounds on, serving its state through a
    Trickle (its gaps on `clock`, which a's round loop then reads); a's round loop."""
    (da, _), (a, b) = pair(data, **settings)
    assert da.rounds is not None
    b.node.train(2)
    b.progress.round = FAR

    async def dial() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None

    asyncio.run(dial())
    source = a.peers.get("b")
    assert source is not None and source.claimed_round == FAR
    trickle = Trickle(a.peers.stub(source), b, pieces, gap, extra, clock)
    source.stub = trickle  # type: ignore[assignment]
    if clock is not None:
        da.rounds.clock = clock
    return da.rounds, a, b, trickle


def test_a_trickled_valid_state_is_cut_at_the_pace_and_the_node_goes_on(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid state in 6 slices 0.3 s apart (under the 0.5 s idle cut) would take
    1.8 s: it is cut at the pace (0.6 s), DEADLINE_EXCEEDED `slow_stream`, counted; a
    keeps its own state and round, backs off, and its next round runs."""
    monkeypatch.setattr(catchup, "STATE_PACE", Pace(min_seconds=0.6, bytes_per_second=1e9))
    loop, a, _b, trickle = setup(
        synthetic_jsonl, pieces=6, gap=0.3, stream_idle_seconds=0.5, round_deadline=0.5
    )
    before = a.node.vector().copy()
    t0 = time.monotonic()
    asyncio.run(loop.catch_up())
    took = time.monotonic() - t0
    assert trickle.pulls == 1
    assert took > 0.5, took  # it ran past the idle cut (load only adds to it)
    assert a.counters.rejected.get("slow_stream") == 1, a.counters.rejected  # cut early
    assert trickle.calls[0].cancelled  # ended at the cut, not at the pull's timeout
    assert a.progress.round == 0
    np.testing.assert_array_equal(a.node.vector(), before)
    assert loop.catch_up_wait == 2 * CATCH_UP_EVERY
    source = a.peers.get("b")
    assert source is not None and source.claimed_round == source.round == 0
    # it goes on: the next round runs (b's loop does not: a mixes with nobody)
    asyncio.run(loop.run_round(train=False))
    assert a.progress.round == 1 and trickle.pulls == 1


def test_a_state_announced_at_another_size_is_refused_at_its_header(
    synthetic_jsonl: Path,
) -> None:
    """A state header announcing more bytes than this adapter's state (for more time at
    the pace) is refused before any data is read, `bad_values`."""
    loop, a, _b, trickle = setup(synthetic_jsonl, pieces=2, gap=0.0, extra=4)
    asyncio.run(loop.catch_up())
    assert trickle.pulls == 1
    assert a.counters.rejected.get("bad_values") == 1, a.counters.rejected
    assert a.progress.round == 0 and loop.catch_up_wait == 2 * CATCH_UP_EVERY
    assert trickle.calls[0].cancelled  # refused at its header: ended there


def test_a_taken_state_leaves_its_call_to_end_by_itself(synthetic_jsonl: Path) -> None:
    """A state read to its end is taken; its call has ended, so nothing is cancelled."""
    loop, a, b, trickle = setup(synthetic_jsonl, pieces=2, gap=0.0)
    asyncio.run(loop.catch_up())
    assert a.progress.round == b.progress.round
    assert trickle.calls[0].ended and not trickle.calls[0].cancelled


def test_a_slow_catch_up_backs_off_even_when_its_state_is_taken(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid state served within the pace but slowly (0.45 s, over CATCH_UP_QUICK
    shortened to 0.2 s) is taken, and the wait doubles as after a failure; each slow
    one doubles it again."""
    monkeypatch.setattr(catchup, "CATCH_UP_QUICK", Pace(min_seconds=0.2, bytes_per_second=1e12))
    loop, a, b, trickle = setup(synthetic_jsonl, pieces=3, gap=0.15)
    waits = []
    for _ in range(3):
        asyncio.run(loop.catch_up())
        assert a.progress.round == b.progress.round  # taken
        np.testing.assert_array_equal(a.node.vector(), b.node.vector())
        waits.append(loop.catch_up_wait)
        b.progress.round += FAR  # b is far ahead again
        source = a.peers.get("b")
        assert source is not None
        source.claimed_round = b.progress.round
        loop.caught_up_from.clear()  # only the slowness counts here
    assert trickle.pulls == 3
    assert waits == [20.0, 40.0, 80.0]


@pytest.mark.parametrize(
    ("size_seconds", "wait"), [(3.0, CATCH_UP_EVERY), (0.1, 2 * CATCH_UP_EVERY)]
)
def test_quick_scales_with_the_state_size(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch, size_seconds: float, wait: float
) -> None:
    """A catch-up is quick within max(the floor, the state's size at CATCH_UP_QUICK's
    rate): a state served in 1.5 s (on the loop's clock), over the floor (0.05 s), is
    quick where its size allows 3 s (an honest large state at link speed: the wait
    stays 10 s) and slow where it allows 0.1 s. Before, the flat 5 s threshold made
    every state over 5 s slow, however large (100 MB over 100 Mbit/s: 8 s)."""
    clock = FakeClock()
    loop, a, _b, _trickle = setup(synthetic_jsonl, pieces=3, gap=0.5, clock=clock)
    size = a.transfer.state_bytes()
    rate = size / size_seconds
    monkeypatch.setattr(catchup, "CATCH_UP_QUICK", Pace(min_seconds=0.05, bytes_per_second=rate))
    assert a.transfer.quick_seconds() == pytest.approx(size_seconds)
    t0 = clock.now
    asyncio.run(loop.catch_up())
    assert clock.now - t0 == pytest.approx(1.5)  # three gaps
    assert a.progress.round == FAR  # taken either way
    assert loop.catch_up_wait == wait
    assert loop.next_catch_up == clock.now + wait  # from its end, on the same clock


def test_the_real_quick_threshold_follows_the_size() -> None:
    """5 s for a small state; 100 MB at 1 MiB/s (95 s) covers it over 100 Mbit/s (8 s);
    never longer than the pace allows the pull itself."""
    quick = catchup.CATCH_UP_QUICK
    assert quick.seconds(4 * 2**20) == 5.0
    assert quick.seconds(100 * 10**6) > 100 * 10**6 / (100 * 10**6 / 8)
    for size in (0, 4 * 2**20, 100 * 10**6):
        assert quick.seconds(size) <= catchup.STATE_PACE.seconds(size)


@pytest.mark.parametrize("deadline", [0.5, 60.0, 300.0])
def test_quick_never_outlasts_the_pull_timeout(synthetic_jsonl: Path, deadline: float) -> None:
    """The pull's timeout is max(--round-deadline, 30 s) (`pull_seconds`, what Pull is
    called with); quick is at most half of it, so a large state served slowly but just
    inside the timeout still backs off. Before, a state over 60 MiB at the default
    deadline (1 MiB/s: 60 s) could never be slow: quick outlasted the pull itself. A
    small state keeps its size's threshold (5 s)."""
    loop, a, _b, trickle = setup(synthetic_jsonl, pieces=1, gap=0.0, round_deadline=deadline)
    timeout = max(deadline, 30.0)
    assert a.transfer.pull_seconds() == timeout
    assert a.transfer.quick_seconds() == 5.0  # a tiny adapter: the floor
    asyncio.run(loop.catch_up())
    assert trickle.timeouts == [timeout]
    for mib in (30, 60, 100, 1000):
        a.transfer._state_bytes = mib * 2**20
        assert a.transfer.quick_seconds() == min(mib * 1.0, timeout / 2), mib
        assert a.transfer.quick_seconds() < timeout


def test_a_slow_repeat_logs_both_reasons(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A catch-up both slow and a repeat from the same source says both. Before, only
    the repeat was named."""
    monkeypatch.setattr(catchup, "CATCH_UP_QUICK", Pace(min_seconds=0.2, bytes_per_second=1e12))
    clock = FakeClock()
    loop, a, b, _trickle = setup(synthetic_jsonl, pieces=3, gap=0.5, clock=clock)
    loop.caught_up_from["b"] = clock.now  # as if just caught up from b
    with caplog.at_level(logging.WARNING, logger="declora.node.daemon.rounds"):
        asyncio.run(loop.catch_up())
    assert a.progress.round == b.progress.round  # taken
    warned = [r.getMessage() for r in caplog.records if "took b's state" in r.getMessage()]
    assert warned == [
        "took b's state in 1.5s, over the 0.2s its size allows and within "
        f"{CATCH_UP_MAX_WAIT:g}s of the last one from it: the next catch-up waits longer"
    ]
    assert loop.catch_up_wait == 2 * CATCH_UP_EVERY


def test_back_to_back_catch_ups_from_one_source_back_off(synthetic_jsonl: Path) -> None:
    """Quick catch-ups from one source: the first resets the wait, each further one
    within CATCH_UP_MAX_WAIT of the last one from it doubles it; once that long has
    passed, a quick one from it resets the wait again."""
    loop, a, b, trickle = setup(synthetic_jsonl, pieces=1, gap=0.0)

    def again() -> float:
        b.progress.round += FAR
        source = a.peers.get("b")
        assert source is not None
        source.claimed_round = b.progress.round
        asyncio.run(loop.catch_up())
        assert a.progress.round == b.progress.round
        return loop.catch_up_wait

    waits = [again() for _ in range(6)]
    assert waits == [10.0, 20.0, 40.0, 80.0, 160.0, 160.0]
    assert list(loop.caught_up_from) == ["b"]
    loop.caught_up_from["b"] -= CATCH_UP_MAX_WAIT  # as if that long ago
    assert again() == CATCH_UP_EVERY
    assert trickle.pulls == 7

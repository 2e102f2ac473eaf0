"""A payload still arriving when a round's deadline ends it: the link is slower than
the deadline (found by bench/bench_network.py over shaped links).

With the adaptive deadline (8 x the recent median round, at least 10 s) the rounds of
a link that slowed down, or of a payload that grew, were cut at a deadline learnt on
the faster link, every round, though --round-deadline allowed them: the deadline only
learns from rounds that mixed, and none did. Now such a round makes the next ones wait
up to --round-deadline again (as at the start); at --round-deadline itself the node
says what helps. A neighbour that sent nothing keeps the learnt deadline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from test_daemon_parts import pair

from declora.node.daemon.daemon import Parts
from declora.node.daemon.exchange import ADAPTIVE_FLOOR
from declora.node.daemon.sending import RoundPayload

CAP = 30.0  # --round-deadline


def miss_round_1(a: Parts, b: Parts, recent: list[float], arriving: bool) -> None:
    """`a` and `b` shake hands; `a`'s round 1 then ends at its deadline without `b`'s
    payload, which is mid-stream when `arriving` (its header was taken)."""

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        a.exchange.recent = list(recent)
        if arriving:
            a.inbox.open_streams["b"] = 1
        out = RoundPayload(1, b"", 1, 0, 0, time.monotonic())  # its deadline: now
        await a.exchange.wait_for(1, out.deadline, out, {"b"}, {})

    asyncio.run(go())
    assert not a.peers.peers["b"].live  # left for this round either way


def test_a_payload_arriving_at_the_learnt_deadline_brings_back_the_full_one(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, (a, b) = pair(synthetic_jsonl, round_deadline=CAP)
    fast = [0.1, 0.1, 0.1]  # the link was fast: the deadline is the floor
    a.exchange.recent = list(fast)
    assert a.exchange.deadline_seconds() == ADAPTIVE_FLOOR
    with caplog.at_level("WARNING"):
        miss_round_1(a, b, fast, arriving=True)
    assert a.exchange.deadline_seconds() == CAP
    assert any(
        "b's payload was still arriving at the 10s deadline learnt" in r.getMessage()
        for r in caplog.records
    ), caplog.text


def test_a_payload_arriving_at_the_round_deadline_says_what_helps(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, (a, b) = pair(synthetic_jsonl, round_deadline=CAP)
    with caplog.at_level("WARNING"):
        miss_round_1(a, b, [], arriving=True)
    lines = [r.getMessage() for r in caplog.records if "still arriving" in r.getMessage()]
    assert len(lines) == 1 and "--round-deadline 30s" in lines[0], caplog.text
    assert "longer --round-deadline" in lines[0] and "--codec q4" in lines[0]


def test_a_silent_neighbour_keeps_the_learnt_deadline(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Guard: one that sent nothing (hung, gone) says nothing about the link's pace."""
    _, (a, b) = pair(synthetic_jsonl, round_deadline=CAP)
    with caplog.at_level("WARNING"):
        miss_round_1(a, b, [0.1, 0.1, 0.1], arriving=False)
    assert a.exchange.deadline_seconds() == ADAPTIVE_FLOOR
    assert "still arriving" not in caplog.text

"""A daemon's consensus finish that runs out of rounds with its neighbours still apart
says so (one warning), as the simulator's run.json and run.md do."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from test_daemon_parts import pair


@pytest.mark.parametrize(("rounds", "warned"), [(1, True), (0, False)])
def test_a_finish_out_of_rounds_with_neighbours_apart_warns(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture, rounds: int, warned: bool
) -> None:
    """One finish round (consensus step 0.5 halves the gap) cannot reach 1e-12; with
    no finish asked for, nothing is said."""
    (da, db), (a, b) = pair(
        synthetic_jsonl, rounds=1, consensus_step=0.5, consensus_rounds=rounds,
        consensus_tol=1e-12,
    )  # fmt: skip

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        assert da.rounds is not None and db.rounds is not None
        await asyncio.gather(da.rounds.train_loop(), db.rounds.train_loop())

    with caplog.at_level(logging.WARNING):
        asyncio.run(go())
    said = [r.getMessage() for r in caplog.records if "consensus finish stopped" in r.getMessage()]
    assert len(said) == (2 if warned else 0), said
    if warned:
        assert said[0].startswith("the consensus finish stopped at --consensus-rounds 1 with ")
        assert "above --consensus-tol 1e-12: the nodes do not agree" in said[0]

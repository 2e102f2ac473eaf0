"""A node's exit line counts the consensus finish's rounds apart, as `status` does: a
`--rounds 1` pair whose finish ran one round said "stopped after round 2" (needs
/tmp/revuser-stop-line.patch: daemon.py, startup.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from test_daemon_parts import pair


@pytest.mark.parametrize(("finish", "said"), [
    (1, "stopped after round 2 (1 planned + 1 of the consensus finish)"),
    (0, "stopped after round 1"),
])  # fmt: skip
def test_the_exit_line_names_the_finish_rounds(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture, finish: int, said: str
) -> None:
    """One training round, then a finish of one round (its tolerance out of reach); with
    no finish the line is the plain round (a guard)."""
    (da, db), (a, b) = pair(synthetic_jsonl, rounds=1, consensus_rounds=finish, consensus_tol=1e-12)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        assert da.rounds is not None and db.rounds is not None
        await asyncio.gather(da.rounds.train_loop(), db.rounds.train_loop())
        await da._shutdown(save=False)

    with caplog.at_level(logging.INFO):
        asyncio.run(go())
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopped after")]
    assert line == said

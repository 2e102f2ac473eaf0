"""The handshaker tells discovery how each candidate's dial ended
(`Discovery.dialled`), so mDNS services where nothing joins give way to those that do
(revsec2's eclipse bound needs this report to act)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_daemon_parts import pair


class Recorder:
    """A discovery that finds nothing and records every dial's end."""

    def __init__(self) -> None:
        self.ends: list[tuple[str, bool]] = []

    def peers(self) -> list[object]:
        return []

    def dialled(self, address: str, joined: bool) -> None:
        self.ends.append((address, joined))


def test_each_candidate_dial_is_reported_with_whether_it_joined(synthetic_jsonl: Path) -> None:
    _, (a, b) = pair(synthetic_jsonl)
    seen = Recorder()
    a.handshaker.discovery = seen  # type: ignore[assignment]
    nobody = "127.0.0.1:9"  # the discard port: nothing answers

    async def go() -> None:
        await a.handshaker._dial_candidate(b.settings.advertise, None)
        await a.handshaker._dial_candidate(nobody, None)

    asyncio.run(go())
    assert seen.ends == [(b.settings.advertise, True), (nobody, False)]

"""A neighbour's verified round follows each of its copies, not only the first after
a validated payload (`RoundQueue.verified_round`).

b proved round 13 to a, then its process restarted from an older checkpoint twice
before it delivered again (round 8, then round 2: a crash loop, an operator's
restore). The first restart cut its verified round to its claim (8) and forgot which
copy that was for, so the second was taken for as far on as the first restart (8):
a round b's process no longer had, which a would align to and push by."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_daemon_parts import pair
from test_netleft_holds import push_round

from declora.node.daemon import Daemon
from declora.node.daemon.parts import Parts
from declora.node.daemon.service import SwarmService


def test_a_neighbour_restarted_twice_from_older_checkpoints_is_at_most_its_last_claim(
    synthetic_jsonl: Path,
) -> None:
    (_, db), (a, b) = pair(synthetic_jsonl)
    a.progress.round = 10
    network = db.transport.network  # type: ignore[attr-defined]

    def restart(at: int) -> Parts:
        """b's process restarted from its checkpoint of round `at` (its seq then)."""
        fresh = Daemon(b.settings, type(db.transport)(network, b.settings, None))
        parts = fresh.build()
        network.serve(b.settings.advertise, SwarmService(parts))
        parts.progress.round, parts.progress.seq = at, at
        return parts

    async def go() -> None:
        assert await b.handshaker.dial(a.settings.advertise) is not None
        b.progress.round, b.progress.seq = 13, 12
        await push_round(b, 14)  # accepted by a: b has completed round 13
        peer = a.peers.get("b")
        assert peer is not None and peer.round == 13

        b2 = restart(8)
        assert await b2.handshaker.dial(a.settings.advertise) is not None
        assert a.inbox.verified_round(peer) == 8
        b3 = restart(2)
        assert await b3.handshaker.dial(a.settings.advertise) is not None
        assert a.inbox.verified_round(peer) == 2  # was 8
        assert a.exchange.due(peer, 3)  # b's round-3 payload can still come

    asyncio.run(go())

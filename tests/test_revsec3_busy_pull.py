"""A source too busy to serve its state (its Pull refused RESOURCE_EXHAUSTED: its Pull
pool full, or its callers' network at its share of streamed answers) did not lie about
its round: its claim stands, so the next catch-up (`rounds.CATCH_UP_EVERY` later,
doubling) tries it again. Before, the claim fell back to the round it had proven, as
for a refused or malformed state, and a node just restarted (nothing proven) had no
one to catch up from until that neighbour's next handshake (revsec3; in-memory
transport, the real servicer)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from test_daemon_parts import pair

from declora.node.daemon.peers import Peer
from declora.node.limits import limited
from declora.node.wire import WireError

AHEAD = 30  # the source's round


def refusing(code: str, synthetic_jsonl: Path) -> tuple[Peer, grpc.StatusCode]:
    """a, at round 0, catches up from b at `AHEAD`, whose Pulls are refused (`code`):
    b as a sees it after the failed catch-up, and the code a got."""
    (_, _), (a, b) = pair(synthetic_jsonl)
    b.progress.round = AHEAD

    def check_pull(host: str) -> None:
        if code == "busy":
            raise limited("8 Pull calls already in flight")
        raise WireError(grpc.StatusCode.PERMISSION_DENIED, "needs a handshake first", "x")

    b.limits.check_pull = check_pull  # type: ignore[method-assign]

    async def go() -> tuple[Peer, grpc.StatusCode]:
        source = await a.handshaker.dial(b.settings.advertise)
        assert source is not None and source.claimed_round == AHEAD
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await a.transfer.catch_up()
        return source, refused.value.code()

    return asyncio.run(go())


def test_a_busy_source_keeps_its_claim(synthetic_jsonl: Path) -> None:
    source, code = refusing("busy", synthetic_jsonl)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert source.claimed_round == AHEAD  # before: 0, its proven round


def test_a_source_failing_otherwise_loses_its_claim(synthetic_jsonl: Path) -> None:
    """A guard: any other failure sets the claim back to the round it has proven."""
    source, code = refusing("denied", synthetic_jsonl)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert source.claimed_round == source.round

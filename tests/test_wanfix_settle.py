"""A push still going at a round's learnt deadline to a neighbour whose own payload is
arriving (found by bench/bench_network.py: links 1 Gbit/s, then 0.5 Mbit/s).

The deadline learnt from fast rounds (10 s) cancelled every push of the first slow
round though its neighbour was delivering at link pace: each side cut the other's
payload, and both were dropped. Now such a push goes on until the round's cap (the
`--round-deadline` end); one to a neighbour that sends nothing is still cut at the
deadline and counted as an overrun."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from test_daemon_parts import pair

from declora.node.daemon.daemon import Parts


def settle_one(a: Parts, arriving: bool) -> tuple[bool, int]:
    """`a` settles one push to `b` whose ack comes only after the deadline has passed
    (`until`: now); whether it completed, and the overruns counted."""
    sender = a.exchange.sender
    sender.arriving = lambda node_id, r: arriving and node_id == "b"

    async def go() -> bool:
        acked = asyncio.Event()
        peer = a.peers.peers["b"]

        async def push() -> None:
            await acked.wait()

        task = asyncio.create_task(push())
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, acked.set)  # the ack comes after the deadline (now)
        now = time.monotonic()
        await sender.settle({task: peer}, 1, now, now + 30)
        return not task.cancelled()

    done = asyncio.run(go())
    return done, sender.overruns.get("b", 0)


@pytest.mark.parametrize("arriving", [True, False], ids=["arriving", "silent"])
def test_a_push_to_a_neighbour_delivering_goes_on_past_the_learnt_deadline(
    synthetic_jsonl: Path, arriving: bool
) -> None:
    _, (a, b) = pair(synthetic_jsonl)

    async def shake() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None

    asyncio.run(shake())
    done, overruns = settle_one(a, arriving)
    if arriving:
        assert (done, overruns) == (True, 0)
    else:  # guard: a silent neighbour's push is cut at the deadline, an overrun
        assert (done, overruns) == (False, 1)

"""A Pull place held by an id that left the live set goes to a live neighbour that
needs it (revsec5). The Pull pool has a place for every live neighbour, but a place
stayed held until its Pull ended (up to the Pulls' time limit, 30 s): a member minting
ids (each live for one unread Pull, then leaving) held every place, and a live
neighbour's catch-up was refused. Now the oldest such place is cut
(`service.Pools.pull`) and its writes end RESOURCE_EXHAUSTED (`write_within`)."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

import pytest

from declora.node.daemon.service import Pools, write_within
from declora.node.wire import WireError
from declora.proto import pb


def test_a_live_neighbour_takes_the_place_of_an_id_that_left() -> None:
    async def go() -> None:
        pools = Pools(push_streams=4, per_host=16, pulls=3)
        members = ["m1", "m2", "m3"]
        with ExitStack() as held:
            m1, m2, m3 = (held.enter_context(pools.pull(m, members)) for m in members)
            # all three left the live set (a Leave each), their Pulls unread; n1 joined
            honest = held.enter_context(pools.pull("n1", ["n1"]))  # before: refused
            assert (m1.cut, m2.cut, m3.cut, honest.cut) == (True, False, False, False)
            assert pools.in_use["Pull"] == 3 and pools.pull_ids == {"m2": 1, "m3": 1, "n1": 1}
            with pytest.raises(WireError):  # m2 and m3 live again: nothing to cut
                held.enter_context(pools.pull("n1", ["n1", "m2", "m3"]))
        assert pools.in_use["Pull"] == 0 and not (pools.pull_ids or pools.pull_holds)

    asyncio.run(go())


def test_a_live_ids_place_is_never_cut() -> None:
    async def go() -> None:
        pools = Pools(push_streams=4, per_host=16, pulls=2)
        live = ["m1", "n1"]
        with pools.pull("m1", live) as m1, pools.pull("n1", live) as n1:
            with pytest.raises(WireError, match="2 Pull calls in flight"), pools.pull("m2", live):
                pass
            assert not (m1.cut or n1.cut)

    asyncio.run(go())


class Unread:
    """A caller that reads nothing: each write waits for ever."""

    async def write(self, chunk: pb.Chunk) -> None:
        await asyncio.Event().wait()


def test_a_cut_pull_stops_writing() -> None:
    async def go() -> str:
        pools = Pools(push_streams=4, per_host=16, pulls=1)

        async def stale() -> None:
            with pools.pull("m1", ["m1"]) as hold:
                await write_within(Unread(), [pb.Chunk()], 600.0, "the state", hold)  # type: ignore[arg-type]

        task = asyncio.create_task(stale())
        for _ in range(10):  # it holds its place, writing
            await asyncio.sleep(0)
        assert pools.pull_ids == {"m1": 1}
        with pools.pull("n1", ["n1"]), pytest.raises(WireError) as info:  # m1 left
            await task
        return info.value.counter

    assert asyncio.run(go()) == "rate_limited"
